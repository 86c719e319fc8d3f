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

// TestDistroLeaseHandoff boots Debian 12 with systemd-networkd over a lab network with
// 30-second leases: the keeper renews the lease until networkd holds its own, then hands
// it over and stays quiet, while networkd renews and the address and root stay.
func TestDistroLeaseHandoff(t *testing.T) {
	e := needDistro(t)
	t.Parallel()
	netlab.Need(t)
	lab := netlab.New(t)
	server := net.ParseIP(netlab.ServerIP)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{LeaseTime: 30 * time.Second, Router: server, DNS: []net.IP{server}})
	const suite = "bookworm"
	img := e.DebianImage(t, suite, vm.DebianImageOptions{Files: map[string]string{
		"etc/systemd/network/10-boot.network": networkdBoot,
		"etc/systemd/network/10-boot.link":    networkdLink,
		// Enabled the way `systemctl enable` would, without a symlink in the image.
		"etc/systemd/system/multi-user.target.d/networkd.conf": "[Unit]\nWants=systemd-networkd.service\n",
	}})
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img)
	root := vm.DebianRoot(t, suite)
	_, vmlinuz := vm.DebianKernel(t, root)
	v := vm.Start(t, vm.Options{
		Kernel: vmlinuz, Initrd: e.InitramfsFromRoot(t, root, seedHooks),
		Append:  "ip=dhcp nbd_server=" + srv.Addr + " root=/dev/nbd0 rw console=ttyS0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", lab.AddTap(t), macA),
		MemoryMB: 1024, Timeout: distroTimeout + 4*time.Minute,
	})
	v.Expect(`keeper: renews the DHCP lease of eth0 \(10\.77\.0\.100/24, 30s\)`, bootTimeout)
	v.Expect(vm.DebianShellPrompt, distroTimeout)
	m := v.Expect(`nbdroot-keeper\[\d+\]: dhcp: eth0: lease of 10\.77\.0\.100 handed over to systemd-networkd \((/run/systemd/netif/leases/\d+)\)`, 2*time.Minute)
	handed := time.Now()
	// Two lease times later: networkd renewed, the keeper did not.
	time.Sleep(time.Minute)
	out := shell(t, v, "ip -4 addr show dev eth0; grep ^ADDRESS= "+m[1]+"; cat /proc/mounts | grep ' / '; dmesg | grep 'nbdroot-keeper.*dhcp'", time.Minute)
	for _, want := range []string{`inet 10\.77\.0\.100/24`, `(?m)^ADDRESS=10\.77\.0\.100\r?$`, `/dev/nbd0 / ext4 rw`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("the root does not show %q:\n%s", want, out)
		}
	}
	keeper := out[strings.Index(out, "handed over"):]
	if strings.Contains(keeper, "renewed by") {
		t.Errorf("the keeper renewed after the hand-off:\n%s", out)
	}
	renewedByNetworkd := 0
	for _, r := range dhcp.Requests() {
		if r.Type == dhcpv4.MessageTypeRequest && r.At.After(handed.Add(5*time.Second)) {
			renewedByNetworkd++
		}
	}
	if renewedByNetworkd == 0 {
		t.Errorf("nobody renewed the lease after the hand-off; the server saw %v", dhcp.Requests())
	}
	t.Logf("keeper's DHCP log:\n%s", out)
	v.Send("poweroff\n")
	if err := v.Wait(2 * time.Minute); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
}
