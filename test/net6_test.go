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
	img := e.RootImage(t, vm.RootOptions{Init: tickInit(1, `ip -6 addr show dev eth0 scope global | grep -o 'inet6 [0-9a-f:/]*'; ip -4 addr show dev eth0 | grep -c inet; ip -6 route | grep '^default' | cut -d' ' -f1-3`)})
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
	m := v.Expect(`=== tick 1 root=(\S*) (.*?)\r?\n`, time.Minute)
	if m[1] != "nbdroot-test" || !strings.Contains(m[2], "inet6 2001:db8::100/128 0 default via fe80::") {
		t.Errorf("tick: root %q, %q; want the root read over IPv6, 2001:db8::100/128, no IPv4 address, the router's default route", m[1], m[2])
	}
	if len(dhcp6.Leases()) != 1 {
		t.Errorf("DHCPv6 leases %v, want one", dhcp6.Leases())
	}
	t.Logf("DHCPv6 saw %v; root-path %s", fmt.Sprint(dhcp6.Requests()), url)
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}
