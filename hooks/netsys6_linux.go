package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/mdlayher/ndp"
	"github.com/nbdroot/nbdroot/dhcpclient"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// The IPv6 half of the real Network: DHCPv6 through insomniacslk/dhcp's nclient6 (from the
// link-local address, once duplicate address detection has passed), router advertisements
// through mdlayher/ndp. The kernel itself makes SLAAC addresses and the routes of router
// advertisements (accept_ra); the hook waits for them and keeps them.

// rtrSolicitationInterval is how often a router solicitation is repeated while none is
// answered (RFC 4861 section 10: RTR_SOLICITATION_INTERVAL).
const rtrSolicitationInterval = 4 * time.Second

// DHCP6 implements Network. DHCPv6 gives an address (a /128) and no route: the routes come
// from the router's advertisement, which the kernel applies (accept_ra). The lease is
// returned once the kernel has them, so that the NBD server beyond the link is reachable
// when the net stage ends — an advertisement answering the kernel's own solicitation can
// come after the DHCPv6 exchange.
func (n linuxNet) DHCP6(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	ifc, err := waitLinkLocal(ctx, name)
	if err != nil {
		return nil, err
	}
	// Listening before the exchange: the advertisement may come during it.
	ra, err := listenRA(ifc)
	if err != nil {
		return nil, err
	}
	defer ra.Close()
	opts := []nclient6.ClientOpt{}
	if req.Timeout > 0 {
		opts = append(opts, nclient6.WithTimeout(req.Timeout))
	}
	if req.Retries > 0 {
		opts = append(opts, nclient6.WithRetry(req.Retries))
	}
	c, err := nclient6.New(name, opts...)
	if err != nil {
		return nil, fmt.Errorf("DHCPv6 client on %s: %w", name, err)
	}
	defer c.Close()
	reply, err := dhcpclient.Obtain6(ctx, c, ifc.HardwareAddr)
	if err != nil {
		return nil, err
	}
	l := lease6From(reply)
	if err := waitRouterRoutes(ctx, ra, ifc); err != nil {
		return nil, fmt.Errorf("DHCPv6 gave %s: %w", l.Address.IP, err)
	}
	return l, nil
}

// listenRA listens for router advertisements on the interface, from the unspecified
// address: the link-local one may still be tentative, and a router solicitation may come
// from :: (RFC 4861 section 4.1).
func listenRA(ifc *net.Interface) (*ndp.Conn, error) {
	c, _, err := ndp.Listen(ifc, ndp.Unspecified)
	if err != nil {
		return nil, fmt.Errorf("listen for router advertisements on %s: %w", ifc.Name, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterAdvertisement)
	if err := c.SetICMPFilter(&f); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// pollRA is one step of waiting for a router advertisement on c: while none came (ra is
// nil), a router solicitation every rtrSolicitationInterval (tracked in *solicited); then up
// to 100 ms for an advertisement on ifc. It returns the newest advertisement seen.
func pollRA(c *ndp.Conn, ifc *net.Interface, ra *ndp.RouterAdvertisement, solicited *time.Time) *ndp.RouterAdvertisement {
	if ra == nil && time.Since(*solicited) >= rtrSolicitationInterval {
		*solicited = time.Now()
		c.WriteTo(&ndp.RouterSolicitation{}, nil, netip.IPv6LinkLocalAllRouters())
	}
	c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	msg, cm, _, err := c.ReadFrom()
	if err == nil {
		if adv, ok := msg.(*ndp.RouterAdvertisement); ok && (cm == nil || cm.IfIndex == ifc.Index) {
			return adv
		}
	}
	return ra
}

// waitRouterRoutes waits for a router advertisement on c, soliciting one while none came,
// and then until the kernel has the routes it gives.
func waitRouterRoutes(ctx context.Context, c *ndp.Conn, ifc *net.Interface) error {
	var ra *ndp.RouterAdvertisement
	var solicited time.Time
	for {
		if ra != nil {
			ok, err := hasRoutesOf(ifc.Index, ra)
			if err != nil || ok {
				return err
			}
		}
		if err := ctx.Err(); err != nil {
			if ra == nil {
				return fmt.Errorf("no router advertisement on %s: the routes come from a router (is one on this network?): %w", ifc.Name, err)
			}
			return fmt.Errorf("the kernel did not take the routes of the router advertisement on %s (%s; is net.ipv6.conf.%s.accept_ra on?): %w",
				ifc.Name, describeRA(ra), ifc.Name, err)
		}
		ra = pollRA(c, ifc, ra, &solicited)
	}
}

// hasRoutesOf reports whether the kernel has the routes of a router advertisement on the
// interface: the default route through the router when it advertises a router lifetime, and
// a route for each on-link prefix (RFC 4861 section 6.3.4).
func hasRoutesOf(index int, ra *ndp.RouterAdvertisement) (bool, error) {
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V6, &netlink.Route{LinkIndex: index}, netlink.RT_FILTER_OIF)
	if err != nil {
		return false, fmt.Errorf("IPv6 routes: %w", err)
	}
	has := func(p netip.Prefix) bool {
		for _, r := range routes {
			ones := 0
			if r.Dst != nil {
				ones, _ = r.Dst.Mask.Size()
			}
			if ones != p.Bits() || (r.Dst != nil && !r.Dst.IP.Equal(net.IP(p.Addr().AsSlice()))) {
				continue
			}
			if p.Bits() > 0 || r.Gw != nil {
				return true
			}
		}
		return false
	}
	if ra.RouterLifetime > 0 && !has(netip.PrefixFrom(netip.IPv6Unspecified(), 0)) {
		return false, nil
	}
	for _, o := range ra.Options {
		if p, ok := o.(*ndp.PrefixInformation); ok && p.OnLink && p.ValidLifetime > 0 {
			if pf, err := p.Prefix.Prefix(int(p.PrefixLength)); err == nil && pf.IsValid() && !p.Prefix.IsLinkLocalUnicast() && !has(pf) {
				return false, nil
			}
		}
	}
	return true, nil
}

// waitLinkLocal waits until the interface has a link-local address that passed duplicate
// address detection: the DHCPv6 client sends from it (RFC 8415 section 13.1), and the kernel
// refuses to bind a tentative address.
func waitLinkLocal(ctx context.Context, name string) (*net.Interface, error) {
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return nil, fmt.Errorf("find %s: %w", name, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			return nil, ipv6Missing(name, err)
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return net.InterfaceByName(name)
			}
		}
		if err := ipv6Disabled(name); err != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%s has no usable IPv6 link-local address: %w", name, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ipv6Disabled says so when IPv6 is off on the interface, or the kernel has none.
func ipv6Disabled(name string) error {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/" + name + "/disable_ipv6")
	switch {
	case errors.Is(err, os.ErrNotExist):
		return errors.New("the kernel has no IPv6 (CONFIG_IPV6, or the ipv6 module in the image)")
	case err == nil && len(b) > 0 && b[0] == '1':
		return fmt.Errorf("IPv6 is disabled on %s (net.ipv6.conf.%s.disable_ipv6=1)", name, name)
	}
	return nil
}

func ipv6Missing(name string, err error) error {
	if e := ipv6Disabled(name); e != nil {
		return e
	}
	return fmt.Errorf("IPv6 addresses of %s: %w", name, err)
}

// Autoconf6 implements Network: it solicits a router advertisement, reads it, and waits for
// the kernel's SLAAC address from one of its prefixes.
func (n linuxNet) Autoconf6(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("find %s: %w", name, err)
	}
	if err := ipv6Disabled(name); err != nil {
		return nil, err
	}
	c, err := listenRA(ifc)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var ra *ndp.RouterAdvertisement
	var solicited time.Time
	for {
		if err := ctx.Err(); err != nil {
			if ra == nil {
				return nil, fmt.Errorf("no router advertisement on %s (is a router on this network? ip=dhcp6 needs one too): %w", name, err)
			}
			return nil, fmt.Errorf("no address from the router's prefixes (%s): %w", describeRA(ra), err)
		}
		ra = pollRA(c, ifc, ra, &solicited)
		if ra == nil {
			continue
		}
		if a, ok, err := slaacAddress(name, ra); err != nil {
			return nil, err
		} else if ok {
			l := leaseFromRA(ra, a)
			if ra.OtherConfiguration || ra.ManagedConfiguration {
				n.inform6(ctx, name, ifc, req, l)
			}
			return l, nil
		}
	}
}

// slaacAddress returns the interface's global address from an autonomous prefix of ra, once
// duplicate address detection passed; an error when detection failed.
func slaacAddress(name string, ra *ndp.RouterAdvertisement) (net.IPNet, bool, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return net.IPNet{}, false, fmt.Errorf("find %s: %w", name, err)
	}
	addrs, err := netlink.AddrList(l, netlink.FAMILY_V6)
	if err != nil {
		return net.IPNet{}, false, err
	}
	for _, p := range autonomousPrefixes(ra) {
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.IP)
			if !ok || !p.Contains(ip) {
				continue
			}
			switch {
			case a.Flags&unix.IFA_F_DADFAILED != 0:
				return net.IPNet{}, false, fmt.Errorf("address %s on %s is in use by another machine (duplicate address detection failed)", a.IP, name)
			case a.Flags&unix.IFA_F_TENTATIVE == 0:
				return *a.IPNet, true, nil
			}
		}
	}
	return net.IPNet{}, false, nil
}

// inform6 asks DHCPv6 for what the router advertisement leaves to it (stateless, RFC 8415
// section 6.1). A network without DHCPv6 server still has its SLAAC address: a failure is
// only noted in the lease.
func (n linuxNet) inform6(ctx context.Context, name string, ifc *net.Interface, req DHCPRequest, l *Lease) {
	wait := req.Timeout
	if wait <= 0 {
		wait = 2 * time.Second
	}
	ictx, cancel := context.WithTimeout(ctx, 3*wait)
	defer cancel()
	if _, err := waitLinkLocal(ictx, name); err != nil {
		l.Notes = append(l.Notes, "no DHCPv6 information: "+err.Error())
		return
	}
	c, err := nclient6.New(name, nclient6.WithTimeout(wait), nclient6.WithRetry(2))
	if err != nil {
		l.Notes = append(l.Notes, "no DHCPv6 information: "+err.Error())
		return
	}
	defer c.Close()
	reply, err := dhcpclient.Inform6(ictx, c, ifc.HardwareAddr)
	if err != nil {
		l.Notes = append(l.Notes, "the router points to DHCPv6 (its O/M flag), which did not answer: "+err.Error())
		return
	}
	config6(reply, l)
}
