package hooks

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/bootparam"
)

// Netdev is a virtual interface the net hook creates (dracut's bond=, vlan=, bridge=).
type Netdev struct {
	// Kind is "bond", "vlan" or "bridge" (the kernel's link kinds).
	Kind string
	Name string
	// Parent is a VLAN's interface, VLANID its id.
	Parent string
	VLANID int
	// Ports are a bond's slaves or a bridge's ports.
	Ports []string
	// BondOptions are the bonding options, in order (sysfs attribute = value).
	BondOptions []bootparam.BondOption
	// MTU, when not zero, is set on the interface.
	MTU int
}

// deps are the interfaces the device is built on.
func (d Netdev) deps() []string {
	if d.Kind == "vlan" {
		return []string{d.Parent}
	}
	return d.Ports
}

func (d Netdev) describe() string {
	switch d.Kind {
	case "vlan":
		return fmt.Sprintf("create VLAN %d %s on %s", d.VLANID, d.Name, d.Parent)
	case "bond":
		return "create bond " + d.Name + " of " + strings.Join(d.Ports, ", ")
	}
	return "create bridge " + d.Name + " with " + strings.Join(d.Ports, ", ")
}

// plannedNetdev is a device with the parameter that asks for it.
type plannedNetdev struct {
	dev   Netdev
	param string
}

// plannedNetdevs lists the Plan's devices in an order that creates each after what it is
// built on (bootparam refused cycles).
func plannedNetdevs(p *bootparam.Plan) []plannedNetdev {
	byName := map[string]plannedNetdev{}
	var names []string
	add := func(d Netdev, key string) {
		byName[d.Name] = plannedNetdev{d, paramOf(p, key, d.Kind+"="+d.Name)}
		names = append(names, d.Name)
	}
	for i, b := range p.Bonds {
		add(Netdev{Kind: "bond", Name: b.Name, Ports: b.Slaves, BondOptions: b.Options, MTU: b.MTU}, "bond["+strconv.Itoa(i)+"]")
	}
	for i, v := range p.VLANs {
		add(Netdev{Kind: "vlan", Name: v.Name, Parent: v.Parent, VLANID: v.ID}, "vlan["+strconv.Itoa(i)+"]")
	}
	for i, b := range p.Bridges {
		add(Netdev{Kind: "bridge", Name: b.Name, Ports: b.Ports}, "bridge["+strconv.Itoa(i)+"]")
	}
	var out []plannedNetdev
	done := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		pd, ok := byName[n]
		if !ok || done[n] {
			return
		}
		done[n] = true
		for _, d := range pd.dev.deps() {
			visit(d)
		}
		out = append(out, pd)
	}
	for _, n := range names {
		visit(n)
	}
	return out
}

// paramOf is the parameter behind the Plan's field key, as written, or def.
func paramOf(p *bootparam.Plan, key, def string) string {
	if src := p.Sources[key]; src != "" && !strings.HasPrefix(src, "default") {
		return src
	}
	return def
}

// netdevs renames the NICs of ifname= and creates the devices of bond=, vlan= and bridge=,
// before any ip= is configured. It returns the devices created, by name, and the NICs they
// took as ports (which are no candidates for an ip= without a device).
func (n Net) netdevs(ctx context.Context, s *State) (created map[string]NIC, ports map[string]string, err error) {
	p := s.Plan
	for i, r := range p.IfNames {
		param := paramOf(p, "ifname["+strconv.Itoa(i)+"]", "ifname="+r.Name+":"+r.MAC)
		nic, nics, err := n.waitNIC(ctx, s, func(nic NIC) bool { return nic.MAC == r.MAC })
		if err != nil {
			return nil, nil, fail("net", param, "find the NIC to name "+r.Name, err)
		}
		if nic == nil {
			return nil, nil, fail("net", param, "find the NIC to name "+r.Name,
				fmt.Errorf("no interface has the MAC address %s after waiting %s (found: %s)", r.MAC, n.WaitNIC, nicList(nics)))
		}
		if nic.Name == r.Name {
			continue
		}
		for _, other := range nics {
			if other.Name == r.Name {
				return nil, nil, fail("net", param, "rename "+nic.Name+" ("+r.MAC+") to "+r.Name,
					fmt.Errorf("%s is the name of another NIC (%s): pick a name the kernel does not give, e.g. bootnet", r.Name, other.MAC))
			}
		}
		if err := s.Sys.Net.RenameLink(nic.Name, r.Name); err != nil {
			return nil, nil, fail("net", param, "rename "+nic.Name+" ("+r.MAC+") to "+r.Name, err)
		}
		s.Log.Printf("net: %s (%s) is now %s (%s)", nic.Name, r.MAC, r.Name, param)
	}
	created = map[string]NIC{}
	ports = map[string]string{}
	for _, pd := range plannedNetdevs(p) {
		d := pd.dev
		for _, dep := range d.deps() {
			if _, ok := created[dep]; ok {
				continue
			}
			nic, nics, err := n.waitNIC(ctx, s, func(nic NIC) bool { return nic.Name == dep })
			if err != nil {
				return nil, nil, fail("net", pd.param, d.describe(), err)
			}
			if nic == nil {
				return nil, nil, fail("net", pd.param, d.describe(),
					fmt.Errorf("no interface %q after waiting %s (found: %s)", dep, n.WaitNIC, nicList(nics)))
			}
		}
		nic, err := s.Sys.Net.CreateLink(d)
		if err != nil {
			return nil, nil, fail("net", pd.param, d.describe(), err)
		}
		created[d.Name] = nic
		for _, port := range d.Ports {
			ports[port] = pd.param
		}
		s.Log.Debugf("net: %s (%s)", strings.TrimPrefix(d.describe(), "create "), pd.param)
	}
	return created, ports, nil
}

// addStaticRoutes adds the routes of rd.route=, once every interface is configured.
func addStaticRoutes(s *State) error {
	for i, r := range s.Plan.Routes {
		param := paramOf(s.Plan, "route["+strconv.Itoa(i)+"]", "rd.route="+r.Destination)
		dst, err := netip.ParsePrefix(r.Destination)
		if err != nil {
			return fail("net", param, "add the route", err)
		}
		route := Route{Dst: net.IPNet{IP: net.IP(dst.Addr().AsSlice()), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}}
		if r.Gateway != "" {
			route.Gateway = net.ParseIP(r.Gateway)
		}
		tried := "add the route to " + r.Destination
		if r.Gateway != "" {
			tried += " via " + r.Gateway
		}
		if r.Device != "" {
			tried += " on " + r.Device
		}
		if err := s.Sys.Net.AddRoute(route, r.Device); err != nil {
			return fail("net", param, tried, err)
		}
	}
	return nil
}
