package hooks

import (
	"net"

	"github.com/nbdroot/nbdroot/dhcpclient"
)

// VendorClass is what the init sends as DHCP option 60, so that a server can treat nbdroot
// clients apart (give them their root-path); the keeper's renewals send it too.
const VendorClass = "nbdroot"

// leaseSpec is the DHCPv4 lease the keeper renews after switch_root: the one of the
// interface that carries the root — the interface the kernel routes the first NBD server
// through, or, for a server given by name, the boot's interface (State.Net). Nil when that
// interface has a static address.
func leaseSpec(s *State, servers []string) *dhcpclient.Spec {
	nc := s.Net
	if len(servers) > 0 {
		host, _, err := net.SplitHostPort(servers[0])
		if ip := net.ParseIP(host); err == nil && ip != nil {
			if name, err := s.Sys.Net.RouteTo(ip); err == nil {
				for _, l := range s.Links {
					if l.Interface == name {
						nc = l
					}
				}
			}
		}
	}
	if nc == nil || nc.Lease == nil || nc.Address.IP.To4() == nil || nc.Lease.ServerID == nil {
		return nil
	}
	l := nc.Lease
	root := s.Plan.NBD.Device
	if s.Target != nil {
		root = s.Target.NBD.Device
	}
	return &dhcpclient.Spec{
		Interface: nc.Interface, MAC: nc.MAC, Address: l.Address.String(), Server: l.ServerID.String(),
		Lease: l.LeaseTime, Renewal: l.RenewalTime, Rebinding: l.RebindingTime, Requested: l.Requested,
		Hostname: l.SentHostname, VendorClass: VendorClass, Root: root,
	}
}
