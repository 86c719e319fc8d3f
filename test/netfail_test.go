//go:build linux

package test

import (
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestNetFailures: network forms that cannot work stop the boot with the parameter and
// what was tried, and the rescue shell opens; nothing panics.
func TestNetFailures(t *testing.T) {
	e := needEnv(t)
	tests := []struct {
		name, append, hooks, stage string
		causes                     []string
	}{
		{name: "VLAN id out of range",
			append: "vlan=eth0.5000:eth0 ip=eth0.5000:dhcp nbd_server=10.0.2.100 root=/dev/nbd0",
			hooks:  netdevHooks, stage: "cmdline",
			causes: []string{`vlan="eth0\.5000:eth0": VLAN id 5000 is out of range: it must be 1-4094`}},
		{name: "bond naming a missing NIC",
			append: "bond=bond0:eth0,eth9:mode=active-backup ip=bond0:dhcp nbd_server=10.0.2.100 root=/dev/nbd0",
			hooks:  netdevHooks, stage: "net",
			causes: []string{`tried: +create bond bond0 of eth0, eth9`, `parameter: bond=bond0:eth0,eth9:mode=active-backup`,
				`no interface "eth9" after waiting 10s \(found: eth0 52:54:00:4e:42:01\)`}},
		{name: "a DHCPv6 server that never answers",
			// QEMU's user network advertises IPv6 routes but answers no DHCPv6 SOLICIT.
			append: "ip=eth0:dhcp6 nbd_server=[fd00::1]:10809 root=/dev/nbd0",
			hooks:  seedHooks, stage: "net",
			causes: []string{`tried: +get a DHCPv6 lease on eth0 \(is a DHCPv6 server on this network\?\)`, `parameter: ip=eth0:dhcp6`,
				`no usable answer within 1m0s`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := vm.Start(t, vm.Options{
				Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, tt.hooks), Append: tt.append,
				MACs: []string{macA}, Timeout: bootTimeout + 2*time.Minute,
			})
			expectRescue(t, v, tt.stage, tt.causes...)
		})
	}
}
