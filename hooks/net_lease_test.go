package hooks

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/dhcpclient"
	"github.com/nbdroot/nbdroot/nbd"
)

// TestLeaseSpec: the keeper renews the lease of the interface that carries the root.
func TestLeaseSpec(t *testing.T) {
	dhcpLink := func(name, mac, ip string) *NetConfig {
		l := lease(ip, 24, "")
		l.RenewalTime, l.Requested, l.SentHostname = 20*time.Minute, 3*time.Second, "thin7"
		nc := &NetConfig{Interface: name, MAC: mac, Method: "dhcp"}
		fromLease(l, nc)
		return nc
	}
	eth0 := dhcpLink("eth0", mac0, "10.0.2.15")
	eth1 := dhcpLink("eth1", mac1, "10.77.0.100")
	static := &NetConfig{Interface: "eth2", MAC: mac2, Method: "static",
		Address: net.IPNet{IP: net.IPv4(10, 9, 0, 5).To4(), Mask: net.CIDRMask(24, 32)}}
	spec := func(nc *NetConfig) *dhcpclient.Spec {
		return &dhcpclient.Spec{Interface: nc.Interface, MAC: nc.MAC, Address: nc.Address.String(), Server: "10.0.2.2",
			Lease: time.Hour, Renewal: 20 * time.Minute, Requested: 3 * time.Second, Hostname: "thin7",
			VendorClass: "nbdroot", Root: "/dev/nbd0"}
	}
	tests := []struct {
		name    string
		links   []*NetConfig
		primary *NetConfig
		servers []string
		routes  map[string]string
		want    *dhcpclient.Spec
	}{
		{name: "the interface routed to the server", links: []*NetConfig{eth0, eth1}, primary: eth0,
			servers: []string{"10.77.0.1:10809"}, routes: map[string]string{"10.77.0.1": "eth1"}, want: spec(eth1)},
		{name: "a server by name: the boot's interface", links: []*NetConfig{eth0, eth1}, primary: eth0,
			servers: []string{"nbd.lab.test:10809"}, want: spec(eth0)},
		{name: "no route: the boot's interface", links: []*NetConfig{eth0, eth1}, primary: eth1,
			servers: []string{"10.8.0.1:10809"}, want: spec(eth1)},
		{name: "a static root interface has no lease", links: []*NetConfig{eth0, static}, primary: eth0,
			servers: []string{"10.9.0.1:10809"}, routes: map[string]string{"10.9.0.1": "eth2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			sys.net.routes = tt.routes
			s, _, err := newTestState("ip=dhcp nbd_server=10.77.0.1 root=/dev/nbd0", sys)
			if err != nil {
				t.Fatal(err)
			}
			s.Net, s.Links = tt.primary, tt.links
			if diff := cmp.Diff(tt.want, leaseSpec(s, tt.servers)); diff != "" {
				t.Errorf("leaseSpec (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNBDHookLease: the nbd hook hands the root interface's lease to the keeper it launches.
func TestNBDHookLease(t *testing.T) {
	rw := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags}
	sys := newFakes()
	sys.nbd.dial = nbdDialer(t, rw)
	s, _, err := newTestState("ip=dhcp nbd_server=10.0.2.2 root=/dev/nbd0", sys)
	if err != nil {
		t.Fatal(err)
	}
	nc := &NetConfig{Interface: "eth0", MAC: mac0}
	fromLease(lease("10.0.2.15", 24, ""), nc)
	s.Net, s.Links = nc, []*NetConfig{nc}
	if err := (NBD{Budget: time.Second}).Run(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if len(sys.nbd.starts) != 1 || sys.nbd.starts[0].Lease == nil || sys.nbd.starts[0].Lease.Address != "10.0.2.15/24" {
		t.Errorf("keeper started with %+v, want the lease of eth0", sys.nbd.starts)
	}
}
