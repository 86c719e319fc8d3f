package hooks

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/nbdroot/nbdroot/dhcpclient"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The network half of the real System: links, addresses and routes through netlink, DHCPv4
// through insomniacslk/dhcp's nclient4 (a raw packet socket, so it works before the interface
// has an address). Nothing here flushes an address or sets a link down: the configuration
// must survive switch_root.

// NICs lists the Ethernet devices in the kernel's probe order (interface index): the
// "first" NIC is the one the kernel found first, not the one whose name sorts first
// (eth10 before eth2).
func (n linuxNet) NICs() ([]NIC, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	sort.Slice(links, func(i, j int) bool { return links[i].Attrs().Index < links[j].Attrs().Index })
	var nics []NIC
	for _, l := range links {
		a := l.Attrs()
		// Physical Ethernet only: bridges, veths, taps and VLANs have a link kind, so their
		// Type is not "device".
		if a.EncapType != "ether" || len(a.HardwareAddr) != 6 || (l.Type() != "device" && !(n.veths && l.Type() == "veth")) {
			continue
		}
		nics = append(nics, NIC{Name: a.Name, MAC: a.HardwareAddr.String(), Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0, Index: a.Index})
	}
	return nics, nil
}

// LinkUp sets the link up and polls for IFF_LOWER_UP (carrier) until ctx ends.
func (linuxNet) LinkUp(ctx context.Context, name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return fmt.Errorf("find %s: %w", name, err)
		}
		if l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s has no carrier: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// DHCP runs one DISCOVER/OFFER/REQUEST/ACK exchange; nclient4 sends each message up to
// req.Retries times, waiting req.Timeout for the first answer and twice as long each time.
func (linuxNet) DHCP(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	opts := []nclient4.ClientOpt{}
	if req.Timeout > 0 {
		opts = append(opts, nclient4.WithTimeout(req.Timeout))
	}
	if req.Retries > 0 {
		opts = append(opts, nclient4.WithRetry(req.Retries))
	}
	c, err := nclient4.New(name, opts...)
	if err != nil {
		return nil, fmt.Errorf("DHCP client on %s: %w", name, err)
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{
		// Option 60 lets a server give nbdroot clients their own root-path.
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(VendorClass)),
		// Servers send classless static routes (121, Microsoft's 249) only when asked
		// (RFC 3442 section 2: a client that does not ask cannot read them).
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionRootPath, dhcpv4.OptionInterfaceMTU,
			dhcpv4.OptionBroadcastAddress, dhcpv4.OptionNetworkInformationServiceDomain, dhcpv4.OptionNTPServers,
			dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionBootfileName, dhcpv4.OptionClasslessStaticRoute,
			dhcpv4.GenericOptionCode(optMSClasslessRoutes)),
	}
	if req.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(req.Hostname)))
	}
	ack, err := dhcpclient.Obtain(ctx, c, mods...)
	if err != nil {
		return nil, err
	}
	return leaseFrom(ack), nil
}

// Configure sets the MTU, adds the address (AddrReplace: an address already there, e.g.
// from a previous attempt, is updated, others are left alone), the static routes and, when c
// has a gateway, the default route.
//
// The address is added without lifetimes (no IFA_CACHEINFO), so the kernel keeps it forever
// ("valid_lft forever"): the kernel never drops the address the root lives behind, whatever
// the lease time. Renewing the lease is the keeper's job (package dhcpclient), not the kernel's.
func (linuxNet) Configure(name string, c *NetConfig) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	// RFC 2132 section 5.1: the minimum legal MTU is 68.
	if c.MTU >= 68 && c.MTU != l.Attrs().MTU {
		if err := netlink.LinkSetMTU(l, c.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", c.MTU, err)
		}
	}
	if c.Method == "auto6" {
		// The kernel made this address from a router advertisement and would give it the
		// prefix's lifetimes again with the next one (RFC 4862 section 5.5.3), then drop
		// it if the router went quiet. With autoconf off on the interface it leaves
		// addresses alone (routes and the default router still come from advertisements),
		// and the address becomes permanent below, as a DHCP one.
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/"+name+"/autoconf", []byte("0"), 0); err != nil {
			return fmt.Errorf("keep the SLAAC address of %s (net.ipv6.conf.%s.autoconf=0): %w", name, name, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: c.Address.IP, Mask: c.Address.Mask}}
	if err := netlink.AddrReplace(l, addr); err != nil {
		return fmt.Errorf("add address %s: %w", c.Address.String(), err)
	}
	if c.Address.IP.To4() == nil {
		if err := waitDAD(l, c.Address.IP); err != nil {
			return err
		}
	}
	idx := l.Attrs().Index
	for _, r := range c.Routes {
		if err := addRoute(idx, c.Address, r); err != nil {
			return err
		}
	}
	gw := c.Gateway
	if gw == nil || gw.IsUnspecified() {
		return nil
	}
	return addRoute(idx, c.Address, Route{Gateway: gw})
}

// dadWait bounds the wait for IPv6 duplicate address detection: one probe, a second
// (RFC 4862's DupAddrDetectTransmits and RetransTimer defaults), and some slack.
const dadWait = 5 * time.Second

// waitDAD waits until the kernel finished duplicate address detection on ip (RFC 4862
// section 5.4): a tentative address cannot be the source of the NBD connection. A
// duplicate is an error that says so.
func waitDAD(l netlink.Link, ip net.IP) error {
	deadline := time.Now().Add(dadWait)
	for {
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
		}
		for _, a := range addrs {
			if !a.IP.Equal(ip) {
				continue
			}
			switch {
			case a.Flags&unix.IFA_F_DADFAILED != 0:
				return fmt.Errorf("address %s is in use by another machine (duplicate address detection failed)", ip)
			case a.Flags&unix.IFA_F_TENTATIVE == 0:
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("address %s still tentative after %s (duplicate address detection)", ip, dadWait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// addRoute adds (or replaces) one route on the interface idx; a Route without Dst is the
// default route. A gateway outside the interface's subnet gets a link route first, as DHCP
// servers handing out /32 addresses expect (RFC 3442 section 4 describes the same for
// option 121): the kernel refuses a route via a gateway it cannot reach.
func addRoute(idx int, subnet net.IPNet, r Route) error {
	what := "default route"
	var dst *net.IPNet
	if r.Dst.IP != nil {
		dst = &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask}
		what = "route to " + dst.String()
	}
	route := &netlink.Route{LinkIndex: idx, Dst: dst}
	switch gw := r.Gateway; {
	case gw == nil || gw.IsUnspecified():
		route.Scope = netlink.SCOPE_LINK
	default:
		// A link-local gateway (an IPv6 router's usual address) is on the link by definition.
		if !subnet.Contains(gw) && !gw.IsLinkLocalUnicast() {
			link := &netlink.Route{LinkIndex: idx, Dst: &net.IPNet{IP: gw, Mask: net.CIDRMask(len(gw)*8, len(gw)*8)}, Scope: netlink.SCOPE_LINK}
			if err := netlink.RouteReplace(link); err != nil {
				return fmt.Errorf("route to gateway %s: %w", gw, err)
			}
		}
		route.Gw = gw
		what += " via " + gw.String()
	}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// SetHostname sets the kernel's host name (it survives switch_root).
func (linuxNet) SetHostname(name string) error {
	return os.NewSyscallError("sethostname", unix.Sethostname([]byte(name)))
}

// RouteTo asks the kernel which interface it routes dst through (RTM_GETROUTE).
func (linuxNet) RouteTo(dst net.IP) (string, error) {
	routes, err := netlink.RouteGet(dst)
	if err != nil {
		return "", fmt.Errorf("route to %s: %w", dst, err)
	}
	if len(routes) == 0 {
		return "", fmt.Errorf("no route to %s", dst)
	}
	l, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("route to %s: interface %d: %w", dst, routes[0].LinkIndex, err)
	}
	return l.Attrs().Name, nil
}
