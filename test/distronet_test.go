//go:build linux

package test

import (
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// networkdBoot is the .network file of the hand-off to systemd-networkd that
// docs/network.md describes: the boot NIC by its MAC address, DHCP, the configuration
// kept when networkd starts or stops, the client identified by its MAC as the init's
// DHCP client does.
const networkdBoot = `[Match]
MACAddress=` + macA + `

[Network]
DHCP=ipv4
KeepConfiguration=yes

[DHCPv4]
ClientIdentifier=mac
`

// networkdLink keeps the boot NIC's name: udev cannot rename an interface that is up
// ("cannot rename"), and systemd-networkd waits for a link udev is still renaming forever.
const networkdLink = `[Match]
MACAddress=` + macA + `

[Link]
Name=eth0
`

// addrWatch records the IPv4 address changes of the root from before any network manager
// starts, in /run/addrwatch.log.
const addrWatch = `[Unit]
Description=Record IPv4 address changes (nbdroot test)
DefaultDependencies=no
Before=NetworkManager.service systemd-networkd.service network-pre.target

[Service]
ExecStart=/bin/sh -c 'exec ip -4 monitor address >/run/addrwatch.log 2>&1'
`

// TestDistroLeaseHandoff boots Debian 12 roots with each network manager over a lab network
// with 30-second leases until the lease is renewed after the manager started: the address
// and the read-write root stay, the lease is renewed all along, and by whom docs/network.md
// says — the keeper until systemd-networkd or NetworkManager holds its own lease, then the
// manager; with ifupdown, which is not told about the boot NIC (the configuration for a root
// on the network), the keeper for good. Each root powers off cleanly: nothing takes the link
// down under the root at shutdown. NetworkManager (1.42) is given nothing: it assumes the
// connection the init describes in /run/NetworkManager, asks for the same address, and its
// journal, its device list and a record of every address change show it.
//
// `make test-distro` runs all three, side by side.
func TestDistroLeaseHandoff(t *testing.T) {
	e := needDistro(t)
	const suite = "bookworm"
	tests := []struct {
		name     string
		packages []string // installed on the root (vm.DebianRootWith)
		files    map[string]string
		// handover is the manager the keeper hands the lease to; "" for none.
		handover string
		evidence string // a regexp of the hand-off's evidence
		// show is a shell command whose output the root must match with want and must not
		// match with forbid (regexps).
		show         string
		want, forbid []string
		// rebooting: once the init has its lease, every request asks for its address again
		// (RFC 2131 section 3.2 INIT-REBOOT, or a renewal) with the init's vendor class:
		// nothing discovers another.
		rebooting bool
	}{
		{name: "systemd-networkd", handover: "systemd-networkd", evidence: `/run/systemd/netif/leases/\d+`,
			files: map[string]string{
				"etc/systemd/network/10-boot.network": networkdBoot,
				"etc/systemd/network/10-boot.link":    networkdLink,
				// Enabled the way `systemctl enable` would, without a symlink in the image.
				"etc/systemd/system/multi-user.target.d/networkd.conf": "[Unit]\nWants=systemd-networkd.service\n",
			}},
		// Nothing configured: the init's runtime files make NetworkManager assume the boot
		// NIC's connection (docs/network.md). addrwatch records every address change from
		// before NetworkManager starts: the root's address is never deleted.
		{name: "NetworkManager", packages: []string{"network-manager"}, handover: "NetworkManager",
			evidence: `/run/NetworkManager/internal-[0-9a-f-]{36}-eth0\.lease`,
			files: map[string]string{
				"etc/systemd/network/10-boot.link":                      networkdLink,
				"etc/systemd/system/addrwatch.service":                  addrWatch,
				"etc/systemd/system/multi-user.target.d/addrwatch.conf": "[Unit]\nWants=addrwatch.service\n",
			},
			show: "journalctl -b -u NetworkManager --no-pager | grep -E 'assume|dhcp4 \\(eth0\\)'; nmcli --colors no -t -f DEVICE,STATE,CONNECTION device; cat /run/addrwatch.log",
			want: []string{`assume: will attempt to assume matching connection 'nbdroot-eth0' \([0-9a-f-]+\) \(indicated\)`,
				`eth0:connected:nbdroot-eth0`, `dhcp4 \(eth0\): state changed new lease, address=10\.77\.0\.100`},
			forbid:    []string{`(?m)^Deleted.*10\.77\.0\.100`},
			rebooting: true},
		// No stanza for the boot NIC: "iface eth0 inet manual" is not enough, its ifdown
		// at shutdown sets the link down under the root and the poweroff hangs.
		{name: "ifupdown", packages: []string{"ifupdown", "isc-dhcp-client"},
			files: map[string]string{
				"etc/systemd/network/10-boot.link": networkdLink,
				"etc/network/interfaces":           "auto lo\niface lo inet loopback\n",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			netlab.Need(t)
			lab := netlab.New(t)
			server := net.ParseIP(netlab.ServerIP)
			const lease = 30 * time.Second
			dhcp := lab.StartDHCP(t, netlab.DHCPConfig{LeaseTime: lease, Router: server, DNS: []net.IP{server}})
			root := vm.DebianRoot(t, suite)
			if len(tt.packages) > 0 {
				root = vm.DebianRootWith(t, suite, "net-", tt.packages...)
			}
			img := e.DebianImage(t, suite, vm.DebianImageOptions{Root: root, Files: tt.files})
			srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img)
			_, vmlinuz := vm.DebianKernel(t, root)
			v := vm.Start(t, vm.Options{
				Kernel: vmlinuz, Initrd: e.InitramfsFromRoot(t, root, seedHooks),
				Append:  "ip=dhcp nbd_server=" + srv.Addr + " root=/dev/nbd0 rw console=ttyS0",
				Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", lab.AddTap(t), macA),
				MemoryMB: 1024, Timeout: distroTimeout + 5*time.Minute,
			})
			v.Expect(`keeper: renews the DHCP lease of eth0 \(10\.77\.0\.100/24, 30s\)`, bootTimeout)
			leased := time.Now()
			v.Expect(vm.DebianShellPrompt, distroTimeout)
			var handed time.Time
			if tt.handover != "" {
				v.Expect(`nbdroot-keeper\[\d+\]: dhcp: eth0: lease of 10\.77\.0\.100 handed over to `+regexp.QuoteMeta(tt.handover)+` \(`+tt.evidence+`\)`, 2*time.Minute)
				handed = time.Now()
			}
			// Then the lease is renewed again — by the manager after a hand-off — within two
			// lease times; the address and the root are still there.
			since := time.Now()
			renewed := func() (n int) {
				for _, r := range dhcp.Requests() {
					if r.Type == dhcpv4.MessageTypeRequest && r.At.After(since) {
						n++
					}
				}
				return n
			}
			for deadline := since.Add(2 * lease); renewed() == 0 && time.Now().Before(deadline); {
				time.Sleep(time.Second)
			}
			if renewed() == 0 {
				t.Errorf("nobody renewed the lease within two lease times (%v); the server saw %v", 2*lease, dhcp.Requests())
			}
			out := shell(t, v, "ip -4 addr show dev eth0; grep ' / ' /proc/mounts; dmesg | grep 'nbdroot-keeper.*dhcp'", time.Minute)
			for _, want := range []string{`inet 10\.77\.0\.100/24`, `/dev/nbd0 / ext4 rw`} {
				if !regexp.MustCompile(want).MatchString(out) {
					t.Errorf("the root does not show %q:\n%s", want, out)
				}
			}
			renewedAfter := strings.Contains(out[strings.LastIndex(out, "dhcp: eth0:"):], "renewed by")
			switch {
			case tt.handover != "" && strings.Contains(out[strings.Index(out, "handed over"):], "renewed by"):
				t.Errorf("the keeper renewed after the hand-off:\n%s", out)
			case tt.handover == "" && (!renewedAfter || strings.Contains(out, "handed over")):
				t.Errorf("the keeper stopped renewing without a manager to hand over to:\n%s", out)
			}
			t.Logf("hand-off at %v; the keeper's DHCP log:\n%s", handed.Format(time.TimeOnly), out)
			if tt.rebooting {
				for _, r := range dhcp.Requests() {
					if r.At.After(leased) && (r.Type != dhcpv4.MessageTypeRequest || !(r.RequestedIP.Equal(net.IPv4(10, 77, 0, 100)) || r.ClientIP.Equal(net.IPv4(10, 77, 0, 100))) || r.Class != "nbdroot") {
						t.Errorf("after the init's lease, %v; the server saw %v", r, dhcp.Requests())
					}
				}
			}
			if tt.show != "" {
				out := shell(t, v, tt.show, time.Minute)
				for _, want := range tt.want {
					if !regexp.MustCompile(want).MatchString(out) {
						t.Errorf("%s does not show %q:\n%s", tt.show, want, out)
					}
				}
				for _, bad := range tt.forbid {
					if regexp.MustCompile(bad).MatchString(out) {
						t.Errorf("%s shows %q:\n%s", tt.show, bad, out)
					}
				}
				t.Logf("%s:\n%s", tt.show, out)
			}
			v.Send("poweroff\n")
			if err := v.Wait(2 * time.Minute); err != nil {
				t.Errorf("guest did not power off: %v", err)
			}
		})
	}
}
