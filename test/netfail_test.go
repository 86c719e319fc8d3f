//go:build linux

package test

import (
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestNetFailures: network forms that cannot work stop the boot with the parameter and
// what was tried, and the rescue shell opens; nothing panics. One boot per stage: a VLAN id
// out of range fails in the cmdline stage like any malformed parameter (the path
// TestFailures boots; the message is bootparam's TestParseNetdevErrors), and a DHCPv6 server
// that never answers fails in the net stage like the missing bond slave below (the message
// is hooks' TestNetIPv6): a boot each would cost a minute of CI for no other path.
func TestNetFailures(t *testing.T) {
	e := needEnv(t)
	tests := []struct {
		name, append, hooks, stage string
		causes                     []string
	}{
		{name: "bond naming a missing NIC",
			append: "bond=bond0:eth0,eth9:mode=active-backup ip=bond0:dhcp nbd_server=10.0.2.100 root=/dev/nbd0",
			hooks:  netdevHooks, stage: "net",
			causes: []string{`tried: +create bond bond0 of eth0, eth9`, `parameter: bond=bond0:eth0,eth9:mode=active-backup`,
				`no interface "eth9" after waiting 10s \(found: eth0 52:54:00:4e:42:01\)`}},
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
