package hooks

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestNetNetdevs: ifname=, bond=, vlan=, bridge= and rd.route= in the net hook, with the
// scripted Network: what is asked of the kernel, in which order, and which interface each
// ip= configures.
func TestNetNetdevs(t *testing.T) {
	const server = " nbd_server=10.0.0.1 root=/dev/nbd0"
	nics := func() []NIC {
		return []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}, {Name: "eth2", MAC: mac2, Carrier: true}}
	}
	tests := []struct {
		name      string
		cmdline   string
		dhcpOn    string // the interface whose DHCP answers
		wantLinks []string
		wantIf    string // the interface configured
		// On failure: substrings of the error and the parameter it names.
		wantErr   []string
		wantParam string
	}{
		{name: "bond, DHCP on it",
			cmdline: "bond=bond0:eth0,eth1:mode=active-backup,miimon=100 ip=bond0:dhcp", dhcpOn: "bond0",
			wantLinks: []string{"create bond bond0 eth0,eth1 mode=active-backup miimon=100"}, wantIf: "bond0"},
		{name: "VLAN on a bond, created after it; a bridge over the VLAN; routes last",
			cmdline: "vlan=bond0.42:bond0 bridge=br0:bond0.42 bond=bond0:eth1,eth2 rd.route=10.9.0.0/16:10.0.2.1 rd.route=10.10.0.0/16::br0 ip=br0:dhcp", dhcpOn: "br0",
			wantLinks: []string{"create bond bond0 eth1,eth2", "create vlan bond0.42 bond0 id 42", "create bridge br0 bond0.42",
				"route 10.9.0.0/16 via 10.0.2.1", "route 10.10.0.0/16 dev br0"}, wantIf: "br0"},
		{name: "VLAN on a NIC",
			cmdline: "vlan=vlan0007:eth2 ip=vlan0007:dhcp", dhcpOn: "vlan0007",
			wantLinks: []string{"create vlan vlan0007 eth2 id 7"}, wantIf: "vlan0007"},
		{name: "ifname renames before the bond takes the NIC",
			cmdline: "ifname=bootnet:" + mac2 + " bond=bond0:bootnet,eth0 ip=bond0:dhcp", dhcpOn: "bond0",
			wantLinks: []string{"rename eth2 bootnet", "create bond bond0 bootnet,eth0"}, wantIf: "bond0"},
		{name: "ifname of a NIC that has the name already",
			cmdline: "ifname=eth1:" + mac1 + " ip=eth1:dhcp", dhcpOn: "eth1", wantIf: "eth1"},
		{name: "ip= without a device skips the bond's ports",
			cmdline: "bond=bond0:eth0,eth1 ip=dhcp", dhcpOn: "eth2",
			wantLinks: []string{"create bond bond0 eth0,eth1"}, wantIf: "eth2"},
		{name: "a bond naming a missing NIC",
			cmdline:   "bond=bond0:eth0,eth9:mode=active-backup ip=bond0:dhcp",
			wantErr:   []string{"create bond bond0 of eth0, eth9", `no interface "eth9" after waiting`, "found: eth0 " + mac0},
			wantParam: "bond=bond0:eth0,eth9:mode=active-backup"},
		{name: "a VLAN on a missing parent",
			cmdline: "vlan=eth7.5:eth7 ip=eth7.5:dhcp",
			wantErr: []string{"create VLAN 5 eth7.5 on eth7", `no interface "eth7"`}, wantParam: "vlan=eth7.5:eth7"},
		{name: "ifname of a missing MAC",
			cmdline: "ifname=bootnet:52:54:00:99:99:99 ip=bootnet:dhcp",
			wantErr: []string{"find the NIC to name bootnet", "no interface has the MAC address 52:54:00:99:99:99"}, wantParam: "ifname=bootnet:52:54:00:99:99:99"},
		{name: "ifname to a name another NIC has",
			cmdline: "ifname=eth0:" + mac1 + " ip=eth0:dhcp",
			wantErr: []string{"rename eth1 (" + mac1 + ") to eth0", "eth0 is the name of another NIC (" + mac0 + ")"}, wantParam: "ifname=eth0:" + mac1},
		{name: "the kernel refuses the bond",
			cmdline: "bond=bond0:eth0,eth1 ip=bond0:dhcp",
			wantErr: []string{"create bond bond0 of eth0, eth1", "operation not supported"}, wantParam: "bond=bond0:eth0,eth1"},
		{name: "a route the kernel refuses",
			cmdline: "rd.route=10.9.0.0/16:10.0.9.1 ip=eth0:dhcp", dhcpOn: "eth0",
			wantErr: []string{"add the route to 10.9.0.0/16 via 10.0.9.1", "network is unreachable"}, wantParam: "rd.route=10.9.0.0/16:10.0.9.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newNetFake(nics()...)
			f.answers[tt.dhcpOn] = []dhcpAnswer{{lease: lease("10.0.2.15", 24, "10.0.2.2")}}
			f.linkErr = map[string]error{}
			if strings.Contains(tt.name, "kernel refuses the bond") {
				f.linkErr["create bond"] = errors.New("create bond bond0: operation not supported")
			}
			if strings.Contains(tt.name, "route the kernel refuses") {
				f.linkErr["route 10.9.0.0/16"] = errors.New("network is unreachable")
			}
			_, out, err := runNet(t, tt.cmdline+server, f)
			if len(tt.wantErr) > 0 {
				var fl *Failure
				if !errors.As(err, &fl) || fl.Hook != "net" {
					t.Fatalf("err = %v, want a net failure", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				if fl.Param != tt.wantParam {
					t.Errorf("failure names %q, want %q", fl.Param, tt.wantParam)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if diff := cmp.Diff(tt.wantLinks, f.links); diff != "" {
				t.Errorf("links (-want +got):\n%s", diff)
			}
			if _, ok := f.configured[tt.wantIf]; !ok || len(f.configured) != 1 {
				t.Errorf("configured %v, want %s only", f.order, tt.wantIf)
			}
		})
	}
}
