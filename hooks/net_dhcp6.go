package hooks

import (
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/mdlayher/ndp"
)

// Reading DHCPv6 answers and router advertisements: as for DHCPv4 (net_dhcp4.go), every
// value is taken byte for byte or refused.

// DHCPv6 option numbers the init reads (RFC 8415 section 21, RFC 3646, RFC 5970).
const (
	opt6DNS         = 23
	opt6Search      = 24
	opt6BootFileURL = 59
)

// config6 is what a DHCPv6 REPLY (to a REQUEST or an INFORMATION-REQUEST) says besides the
// address: name servers, search list, and the boot file URL, the NBD root's.
func config6(reply *dhcpv6.Message, l *Lease) {
	r := &optionReader{}
	if raw := raw6(reply, opt6DNS); raw != nil {
		if len(raw) == 0 || len(raw)%net.IPv6len != 0 {
			r.refuse(opt6DNS, "name servers", "%d bytes, not a list of IPv6 addresses", len(raw))
		} else {
			for i := 0; i < len(raw); i += net.IPv6len {
				if ip := net.IP(append([]byte(nil), raw[i:i+net.IPv6len]...)); !ip.IsUnspecified() {
					l.DNS = append(l.DNS, ip)
				}
			}
		}
	}
	if raw := raw6(reply, opt6Search); raw != nil {
		l.Search = append(l.Search, r.searchList(opt6Search, raw)...)
	}
	if raw := raw6(reply, opt6BootFileURL); raw != nil {
		// RFC 5970 section 3.1: a URL, not NUL-terminated; padding is dropped, a NUL
		// inside refused, as for DHCPv4's root-path.
		v := strings.TrimRight(string(raw), "\x00")
		if strings.IndexByte(v, 0) >= 0 {
			r.refused = append(r.refused, Refusal{Option: opt6BootFileURL, Name: "boot file URL", Reason: "a NUL byte inside the value", RootPath: true})
		} else {
			l.RootPath = v
		}
	}
	l.Refused = append(l.Refused, r.refused...)
}

// raw6 returns the bytes of the first option code of m, nil when absent.
func raw6(m *dhcpv6.Message, code dhcpv6.OptionCode) []byte {
	o := m.GetOneOption(code)
	if o == nil {
		return nil
	}
	return o.ToBytes()
}

// lease6From reads the REPLY to a DHCPv6 REQUEST: the first address of its IA_NA, with
// prefix length 128 (RFC 8415 section 21.6: the address carries no prefix), its valid
// lifetime as the lease time and the IA's T1, and config6's.
func lease6From(reply *dhcpv6.Message) *Lease {
	l := &Lease{}
	if ia := reply.Options.OneIANA(); ia != nil {
		if a := ia.Options.OneAddress(); a != nil && a.IPv6Addr.To16() != nil && a.IPv6Addr.To4() == nil {
			l.Address = net.IPNet{IP: a.IPv6Addr.To16(), Mask: net.CIDRMask(128, 128)}
			l.LeaseTime = a.ValidLifetime
		}
		l.RenewalTime, l.RebindingTime = ia.T1, ia.T2
	}
	config6(reply, l)
	return l
}

// minMTU6 is the smallest MTU of an IPv6 link (RFC 8200 section 5).
const minMTU6 = 1280

// autonomousPrefixes are the prefixes of ra a host makes addresses from (the A flag, RFC
// 4862 section 5.5.3: a /64 for Ethernet's 64-bit interface identifiers, a valid lifetime).
// A prefix whose length is not 0-128 comes out of ndp as the zero address, which makes no
// prefix: it is left out.
func autonomousPrefixes(ra *ndp.RouterAdvertisement) []netip.Prefix {
	var out []netip.Prefix
	for _, o := range ra.Options {
		if p, ok := o.(*ndp.PrefixInformation); ok && p.AutonomousAddressConfiguration && p.ValidLifetime > 0 {
			if pf, err := p.Prefix.Prefix(int(p.PrefixLength)); err == nil && pf.IsValid() && !p.Prefix.IsLinkLocalUnicast() {
				out = append(out, pf)
			}
		}
	}
	return out
}

// leaseFromRA is what a router advertisement gave along with the SLAAC address addr: the
// prefix's valid lifetime, the name servers and search list (RFC 8106), the MTU.
func leaseFromRA(ra *ndp.RouterAdvertisement, addr net.IPNet) *Lease {
	l := &Lease{Address: addr}
	r := &optionReader{}
	ip, _ := netip.AddrFromSlice(addr.IP)
	for _, o := range ra.Options {
		switch o := o.(type) {
		case *ndp.PrefixInformation:
			if pf, err := o.Prefix.Prefix(int(o.PrefixLength)); err == nil && pf.Contains(ip) {
				l.LeaseTime = o.ValidLifetime
			}
		case *ndp.RecursiveDNSServer:
			for _, s := range o.Servers {
				if !s.IsUnspecified() && !s.IsMulticast() {
					l.DNS = append(l.DNS, net.IP(s.AsSlice()))
				}
			}
		case *ndp.DNSSearchList:
			for _, d := range o.DomainNames {
				if d = strings.TrimSuffix(d, "."); validDomain(d) {
					l.Search = append(l.Search, d)
				} else {
					r.refuse(31, "DNS search list (router advertisement)", "%q is not a valid domain name", d)
				}
			}
		case *ndp.MTU:
			if o.MTU < minMTU6 || o.MTU > 65535 {
				r.refuse(5, "MTU (router advertisement)", "%d is outside IPv6's %d-65535", o.MTU, minMTU6)
			} else {
				l.MTU = int(o.MTU)
			}
		}
	}
	l.Refused = r.refused
	return l
}

// describeRA says in a few words what a router advertisement offers, for messages.
func describeRA(ra *ndp.RouterAdvertisement) string {
	var prefixes []string
	for _, o := range ra.Options {
		if p, ok := o.(*ndp.PrefixInformation); ok {
			d := p.Prefix.String() + "/" + strconv.Itoa(int(p.PrefixLength))
			if !p.AutonomousAddressConfiguration {
				d += " without the autonomous flag"
			}
			prefixes = append(prefixes, d)
		}
	}
	s := "prefixes: none"
	if len(prefixes) > 0 {
		s = "prefixes: " + strings.Join(prefixes, ", ")
	}
	if ra.ManagedConfiguration {
		s += "; addresses by DHCPv6 (M flag): use ip=dhcp6"
	}
	return s
}
