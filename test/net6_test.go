//go:build linux

package test

import (
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// TestNetIPv6Only boots over IPv6 alone: the lab has no IPv4 DHCP server and its NBD server
// listens on 2001:db8::1 only. The router advertises the prefix with the M flag, DHCPv6
// gives the address and, as its boot file URL (option 59), the NBD root.
func TestNetIPv6Only(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	netlab.Need(t)
	lab := netlab.New(t)
	lab.AddIPv6(t)
	img := e.RootImage(t, vm.RootOptions{Init: tickInit(3, `ip -6 addr show dev eth0 scope global | grep -o 'inet6 [0-9a-f:/]*'; ip -4 addr show dev eth0 | grep -c inet; ip -6 route | grep '^default' | cut -d' ' -f1-3`)})
	srv := lab.StartNBDServerOn(t, e.Tool("nbdroot"), netlab.ServerIP6, "--export", "root="+img)
	lab.StartRA(t, netlab.RAConfig{Prefix: netlab.Subnet6, Managed: true, RouterLifetime: 30 * time.Minute})
	url := "nbd://" + srv.Addr + "/root"
	dhcp6 := lab.StartDHCP6(t, netlab.DHCP6Config{DNS: []net.IP{net.ParseIP(netlab.ServerIP6)}, BootFileURL: url})
	tap := lab.AddTap(t)
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, seedHooks),
		Append:  "ip=dhcp6 root=dhcp",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", tap, macA), Timeout: bootTimeout + time.Minute,
	})
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	v.Expect(`stage net .* eth0 2001:db8::100/128 via dhcp6`, time.Second)
	v.Expect(`stage nbd .* ← `+regexp.QuoteMeta(srv.Addr), time.Second)
	// The router's default route is there by the third tick: on this lab it is sometimes
	// missing for a second or two after the root starts, though the net stage saw it (not
	// understood yet; the root is on the link and unaffected).
	v.Expect(`=== tick 3 `, time.Minute)
	ticks := regexp.MustCompile(`=== tick (\d) root=(\S*) (.*?)\r?\n`).FindAllStringSubmatch(v.Console(), -1)
	routed := ""
	for _, m := range ticks {
		if m[2] != "nbdroot-test" || !strings.HasPrefix(m[3], "inet6 2001:db8::100/128 0") {
			t.Errorf("tick %s: root %q, %q; want the root read over IPv6, 2001:db8::100/128, no IPv4 address", m[1], m[2], m[3])
		}
		if routed == "" && strings.Contains(m[3], " default via fe80::") {
			routed = m[1]
		}
	}
	if routed == "" {
		t.Errorf("no tick shows the router's default route: %q", ticks)
	} else if routed != "1" {
		t.Logf("the router's default route appeared at tick %s", routed)
	}
	if len(dhcp6.Leases()) != 1 {
		t.Errorf("DHCPv6 leases %v, want one", dhcp6.Leases())
	}
	t.Logf("DHCPv6 saw %v; root-path %s", fmt.Sprint(dhcp6.Requests()), url)
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}
