package bootparam

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseNetdevs(t *testing.T) {
	const base = "nbd_server=10.0.0.1 root=/dev/nbd0 "
	tests := []struct {
		name    string
		cmdline string
		want    Plan // only the netdev fields are compared
		note    string
	}{
		{name: "vlan, four name styles",
			cmdline: "vlan=vlan0005:eth0 vlan=vlan6:eth0 vlan=eth0.0007:eth0 vlan=eth1.4094:eth1 ip=eth1.4094:dhcp",
			want:    Plan{VLANs: []VLAN{{"vlan0005", "eth0", 5}, {"vlan6", "eth0", 6}, {"eth0.0007", "eth0", 7}, {"eth1.4094", "eth1", 4094}}}},
		{name: "bond with options and MTU",
			cmdline: "bond=bond0:eth0,eth1:mode=1,miimon=100,primary=eth1,arp_ip_target=10.0.0.1;10.0.0.2:9000 ip=bond0:dhcp",
			want: Plan{Bonds: []Bond{{Name: "bond0", Slaves: []string{"eth0", "eth1"}, MTU: 9000, Options: []BondOption{
				{"mode", "active-backup"}, {"miimon", "100"}, {"primary", "eth1"}, {"arp_ip_target", "10.0.0.1;10.0.0.2"}}}}}},
		{name: "bare bond is dracut's default",
			cmdline: "bond ip=bond0:dhcp",
			want:    Plan{Bonds: []Bond{{Name: "bond0", Slaves: []string{"eth0", "eth1"}, Options: []BondOption{{"mode", "balance-rr"}}}}}},
		{name: "bare bridge is dracut's default; a VLAN on a bond, a bridge over the VLAN",
			cmdline: "bridge bond=bond1:eth2,eth3 vlan=bond1.10:bond1 bridge=br1:bond1.10 ip=br1:dhcp",
			want: Plan{Bridges: []Bridge{{"br0", []string{"eth0"}}, {"br1", []string{"bond1.10"}}},
				Bonds: []Bond{{Name: "bond1", Slaves: []string{"eth2", "eth3"}}}, VLANs: []VLAN{{"bond1.10", "bond1", 10}}}},
		{name: "routes",
			cmdline: "rd.route=192.168.200.0/24:192.168.100.222:ens10 rd.route=192.168.201.7/255.255.255.0:192.168.100.222 rd.route=192.168.202.0/24::ens10 rd.route=[2001:DB8:3::/48]:[2001:DB8:2::1]:ens10",
			want: Plan{Routes: []StaticRoute{{"192.168.200.0/24", "192.168.100.222", "ens10"}, {"192.168.201.0/24", "192.168.100.222", ""},
				{"192.168.202.0/24", "", "ens10"}, {"2001:db8:3::/48", "2001:db8:2::1", "ens10"}}}},
		{name: "ifname, a bond over a renamed NIC",
			cmdline: "ifname=bootnet:52:54:00:AB:CD:EF ifname=net1:52-54-00-ab-cd-f0 bond=bond0:bootnet,net1 ip=bond0:dhcp",
			want: Plan{IfNames: []IfName{{"bootnet", "52:54:00:ab:cd:ef"}, {"net1", "52:54:00:ab:cd:f0"}},
				Bonds: []Bond{{Name: "bond0", Slaves: []string{"bootnet", "net1"}}}}},
		{name: "ifname with a kernel name is noted",
			cmdline: "ifname=eth0:52:54:00:ab:cd:ef",
			want:    Plan{IfNames: []IfName{{"eth0", "52:54:00:ab:cd:ef"}}},
			note:    "ifname=eth0:52:54:00:ab:cd:ef uses a name of the kernel's own"},
		{name: "ip= without a device beside a bond is noted",
			cmdline: "bond=bond0:eth0,eth1 ip=dhcp",
			want:    Plan{Bonds: []Bond{{Name: "bond0", Slaves: []string{"eth0", "eth1"}}}},
			note:    "ip=dhcp names no interface: the devices of vlan=, bond= and bridge= are not chosen automatically"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(base + tt.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			got := Plan{IfNames: p.IfNames, Bonds: p.Bonds, VLANs: p.VLANs, Bridges: p.Bridges, Routes: p.Routes}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if tt.note != "" && !strings.Contains(strings.Join(p.Notes, "\n"), tt.note) {
				t.Errorf("notes %q, want one with %q", p.Notes, tt.note)
			}
			for _, k := range []string{"vlan[0]", "bond[0]", "bridge[0]", "route[0]", "ifname[0]"} {
				if _, ok := p.Sources[k]; !ok && strings.Contains(tt.cmdline, strings.TrimSuffix(strings.Replace(k, "route", "rd.route", 1), "[0]")) {
					t.Errorf("no source for %s", k)
				}
			}
		})
	}
}

func TestParseNetdevErrors(t *testing.T) {
	const base = "nbd_server=10.0.0.1 root=/dev/nbd0 "
	tests := []struct {
		cmdline, want string
	}{
		{"vlan=eth0.5000:eth0", `vlan="eth0.5000:eth0": VLAN id 5000 is out of range: it must be 1-4094`},
		{"vlan=vlan0:eth0", `vlan="vlan0:eth0": VLAN id 0 is out of range: it must be 1-4094`},
		{"vlan=eth0.4095:eth0", `VLAN id 4095 is out of range`},
		{"vlan=vlan99999999999:eth0", `VLAN id 99999999999 is out of range`},
		{"vlan=office:eth0", `cannot tell the VLAN id from the name "office"`},
		{"vlan=eth0.x:eth0", `VLAN id "x" is not a number`},
		{"vlan=eth0.5", `needs a VLAN name and its parent interface`},
		{"vlan", `needs a VLAN name and its parent interface`},
		{"vlan=eth0.5:eth0 vlan=eth0.5:eth1", `vlan="eth0.5:eth1": interface eth0.5 is also made by vlan=eth0.5:eth0`},
		{"bond=bond0", `bond="bond0": no slave interfaces`},
		{"bond=bond0:eth0,eth0", `interface eth0 is listed twice`},
		{"bond=bond0:eth0:mode=fast", `mode "fast" is not one of balance-rr, active-backup`},
		{"bond=bond0:eth0:mode=7", `mode "7" is not one of`},
		{"bond=bond0:eth0:speed=10", `unknown bonding option "speed"`},
		{"bond=bond0:eth0:miimon=fast", `option miimon=fast is not a number`},
		{"bond=bond0:eth0:primary=eth9", `primary eth9 is not one of the slaves`},
		{"bond=bond0:eth0:miimon", `option "miimon" is not NAME=VALUE`},
		{"bond=bond0:eth0::20", `MTU must be 68-65535`},
		{"bond=bond0:eth0,eth1 bond=bond1:eth1,eth2", `bond="bond1:eth1,eth2": eth1 is already a port of bond=bond0:eth0,eth1`},
		{"bond=bond0:eth0,eth1 bridge=br0:eth1", `eth1 is already a port of bond=bond0:eth0,eth1`},
		{"vlan=eth0.5:eth0 bond=bond0:eth0.5,eth1", `slave eth0.5 is made by vlan=eth0.5:eth0: a bond's slaves are NICs`},
		{"bridge=br0:br0.5 vlan=br0.5:br0", `interface br0 is built on itself`},
		{"bond=bond0:eth0,eth1 ip=eth0:dhcp", `ip="eth0:dhcp": eth0 is a port of bond=bond0:eth0,eth1: configure the device it belongs to`},
		{"bridge=br0", `bridge="br0": no ports`},
		{"rd.route=10.0.0.0:10.0.0.1", `destination "10.0.0.0" has no /PREFIX`},
		{"rd.route=10.0.0.0/33:10.0.0.1", `prefix "33" is not 0-32`},
		{"rd.route=10.0.0.0/24:[fd00::1]", `the gateway and the destination are not of the same IP version`},
		{"rd.route=10.0.0.0/24", `needs NET/PREFIX and a gateway`},
		{"rd.route=10.0.0.0/24:", `a route without a gateway needs the interface`},
		{"rd.route=[2001:db8::/48:[2001:db8::1]", `unbalanced brackets`},
		{"rd.route=2001:db8::/48:2001:db8::1", `rd.route="2001:db8::/48:2001:db8::1"`},
		{"ifname=bootnet:52:54:00", `"52:54:00" is not an Ethernet MAC address`},
		{"ifname=bootnet:52:54:00:ab:cd:ef ifname=net1:52:54:00:AB:CD:EF", `the NIC 52:54:00:ab:cd:ef is already named bootnet`},
		{"ifname=bootnet:52:54:00:ab:cd:ef bridge=bootnet:eth1", `interface bootnet is also made by ifname=bootnet:52:54:00:ab:cd:ef`},
		{"ifname=a/b:52:54:00:ab:cd:ef", `interface name "a/b" is not valid`},
	}
	for _, tt := range tests {
		t.Run(tt.cmdline, func(t *testing.T) {
			_, err := Parse(base + tt.cmdline)
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse = %v, want a ParamError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}
