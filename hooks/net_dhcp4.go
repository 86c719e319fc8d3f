package hooks

import (
	"encoding/binary"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// Reading a DHCPv4 answer. Every option the init uses is taken byte for byte or refused: a
// value that is malformed (a wrong length, a NUL inside a text, a netmask that is not
// contiguous) is not guessed at, it is left out and recorded in Lease.Refused, which the net
// hook prints. The values end up in the kernel, in /etc/resolv.conf and in shell-sourced
// files of the root: an altered value would be worse than none.

// Option numbers of RFC 2132 (and RFC 3397, RFC 3442) the init reads.
const (
	optSubnetMask      = 1
	optRouter          = 3
	optDNS             = 6
	optHostName        = 12
	optDomainName      = 15
	optRootPath        = 17
	optMTU             = 26
	optBroadcast       = 28
	optNISDomain       = 40
	optLeaseTime       = 51
	optServerID        = 54
	optRenewalTime     = 58
	optRebindingTime   = 59
	optBootFileName    = 67
	optDomainSearch    = 119
	optClasslessRoutes = 121
	// optMSClasslessRoutes is Microsoft's pre-standard number for the same format (MS-DHCPE),
	// still sent by Windows servers.
	optMSClasslessRoutes = 249
)

// minMTU is the smallest MTU an IPv4 host may be given (RFC 791, RFC 2132 section 5.1).
const minMTU = 68

// optionReader reads options of one answer and collects the refused ones.
type optionReader struct {
	o       dhcpv4.Options
	refused []Refusal
}

func (r *optionReader) refuse(code int, name, format string, args ...any) {
	r.refused = append(r.refused, Refusal{Option: code, Name: name, Reason: fmt.Sprintf(format, args...)})
}

// searchList reads a domain search list option (DHCPv4 119, RFC 3397; DHCPv6 24, RFC 3646:
// both RFC 1035 labels with compression): its valid names, each bad one refused by name.
func (r *optionReader) searchList(code int, b []byte) []string {
	labels, err := rfc1035label.FromBytes(b)
	if err != nil {
		r.refuse(code, "domain search list", "not a list of domain names (%v)", err)
		return nil
	}
	var out []string
	for _, d := range labels.Labels {
		switch d = strings.TrimSuffix(d, "."); {
		case d == "":
		case validDomain(d):
			out = append(out, d)
		default:
			r.refuse(code, "domain search list", "%q is not a valid domain name", d)
		}
	}
	return out
}

// raw returns the option's bytes, nil when absent.
func (r *optionReader) raw(code int) []byte { return r.o.Get(dhcpv4.GenericOptionCode(code)) }

// ip reads an option holding one IPv4 address; 0.0.0.0 means "none" (nil).
func (r *optionReader) ip(code int, name string) net.IP {
	b := r.raw(code)
	switch {
	case b == nil:
		return nil
	case len(b) != net.IPv4len:
		r.refuse(code, name, "%d bytes, not an IPv4 address", len(b))
		return nil
	}
	ip := net.IP(append([]byte(nil), b...))
	if ip.IsUnspecified() {
		return nil
	}
	return ip
}

// ips reads an option holding a list of IPv4 addresses, leaving out 0.0.0.0.
func (r *optionReader) ips(code int, name string) []net.IP {
	b := r.raw(code)
	if b == nil {
		return nil
	}
	if len(b) == 0 || len(b)%net.IPv4len != 0 {
		r.refuse(code, name, "%d bytes, not a list of IPv4 addresses", len(b))
		return nil
	}
	var out []net.IP
	for i := 0; i < len(b); i += net.IPv4len {
		if ip := net.IP(append([]byte(nil), b[i:i+net.IPv4len]...)); !ip.IsUnspecified() {
			out = append(out, ip)
		}
	}
	return out
}

// text reads a text option byte for byte. RFC 2132 section 2 says options are not
// NUL-terminated, but some servers pad them with NULs: trailing NULs are dropped. A NUL
// inside the value is refused: a shell variable cannot hold one, and a C reader of the files
// would see the value cut short.
func (r *optionReader) text(code int, name string) string {
	b := r.raw(code)
	s := strings.TrimRight(string(b), "\x00")
	if strings.IndexByte(s, 0) >= 0 {
		r.refuse(code, name, "a NUL byte inside the value")
		return ""
	}
	return s
}

// rootPath reads option 17, marking a refusal as the root's.
func (r *optionReader) rootPath() string {
	n := len(r.refused)
	v := r.text(optRootPath, "root-path")
	for i := n; i < len(r.refused); i++ {
		r.refused[i].RootPath = true
	}
	return v
}

// uint reads an unsigned number of n bytes (network order); ok is false when absent or
// refused.
func (r *optionReader) uint(code int, name string, n int) (v uint32, ok bool) {
	b := r.raw(code)
	switch {
	case b == nil:
		return 0, false
	case len(b) != n:
		r.refuse(code, name, "%d bytes, not a %d-byte number", len(b), n)
		return 0, false
	case n == 2:
		return uint32(binary.BigEndian.Uint16(b)), true
	}
	return binary.BigEndian.Uint32(b), true
}

// seconds reads a 32-bit time in seconds (options 51, 58, 59).
func (r *optionReader) seconds(code int, name string) time.Duration {
	v, ok := r.uint(code, name, 4)
	if !ok {
		return 0
	}
	return time.Duration(v) * time.Second
}

// mask reads the subnet mask (option 1): 4 bytes, ones then zeros, not empty.
func (r *optionReader) mask() net.IPMask {
	b := r.raw(optSubnetMask)
	if b == nil {
		return nil
	}
	m := net.IPMask(append([]byte(nil), b...))
	if ones, bits := m.Size(); bits != 32 || ones == 0 {
		r.refuse(optSubnetMask, "subnet mask", "% x is not a contiguous IPv4 netmask", b)
		return nil
	}
	return m
}

// routes reads the classless static routes (RFC 3442) of option code: the destination's
// host bits are cleared (section 4 asks the client to), a router of 0.0.0.0 means the
// destination is on the link, as systemd-networkd and NetworkManager read it.
func (r *optionReader) routes(code int, name string) (routes []Route, present bool) {
	b := r.raw(code)
	if b == nil {
		return nil, false
	}
	var parsed dhcpv4.Routes
	if err := parsed.FromBytes(b); err != nil || len(parsed) == 0 {
		why := "empty"
		if err != nil {
			why = err.Error()
		}
		r.refuse(code, name, "not a list of routes (%s)", why)
		return nil, false
	}
	for _, p := range parsed {
		gw := p.Router.To4()
		if gw.IsUnspecified() {
			gw = nil
		}
		dst := net.IPNet{IP: p.Dest.IP.To4().Mask(p.Dest.Mask), Mask: p.Dest.Mask}
		routes = append(routes, Route{Dst: dst, Gateway: gw})
	}
	return routes, true
}

// leaseFrom reads the parts of a DHCPACK the boot uses (option numbers above). The BOOTP
// file field is a NUL-terminated string by definition (RFC 951): it is cut at its first NUL.
func leaseFrom(ack *dhcpv4.DHCPv4) *Lease {
	r := &optionReader{o: ack.Options}
	yi := ack.YourIPAddr.To4()
	mask := r.mask()
	if mask == nil && yi != nil {
		mask = yi.DefaultMask()
	}
	l := &Lease{
		Address:       net.IPNet{IP: yi, Mask: mask},
		DNS:           r.ips(optDNS, "name servers"),
		Hostname:      r.text(optHostName, "host name"),
		Domain:        r.text(optDomainName, "domain name"),
		RootPath:      r.rootPath(),
		NISDomain:     r.text(optNISDomain, "NIS domain"),
		ServerID:      r.ip(optServerID, "server identifier"),
		NextServer:    ack.ServerIPAddr.To4(),
		BootFile:      cutNUL(ack.BootFileName),
		LeaseTime:     r.seconds(optLeaseTime, "lease time"),
		RenewalTime:   r.seconds(optRenewalTime, "renewal time"),
		RebindingTime: r.seconds(optRebindingTime, "rebinding time"),
		Broadcast:     r.ip(optBroadcast, "broadcast address"),
	}
	if f := r.text(optBootFileName, "boot file name"); f != "" { // option 67 overrides the file field
		l.BootFile = f
	}
	if mtu, ok := r.uint(optMTU, "interface MTU", 2); ok {
		if mtu < minMTU {
			r.refuse(optMTU, "interface MTU", "%d is below the IPv4 minimum of %d", mtu, minMTU)
		} else {
			l.MTU = int(mtu)
		}
	}
	// RFC 3442 section 2: with classless static routes, the router option is ignored; the
	// default route is the 0.0.0.0/0 entry, if any.
	routes, classless := r.routes(optClasslessRoutes, "classless static routes")
	if !classless {
		routes, classless = r.routes(optMSClasslessRoutes, "classless static routes (Microsoft)")
	}
	if classless {
		for _, rt := range routes {
			if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
				if l.Gateway == nil {
					l.Gateway = rt.Gateway
				}
				continue
			}
			l.Routes = append(l.Routes, rt)
		}
	} else if gws := r.ips(optRouter, "routers"); len(gws) > 0 {
		l.Gateway = gws[0]
	}
	if b := r.raw(optDomainSearch); b != nil {
		l.Search = append(l.Search, r.searchList(optDomainSearch, b)...)
	}
	if l.NextServer != nil && l.NextServer.IsUnspecified() {
		l.NextServer = nil
	}
	l.Refused = r.refused
	return l
}

func cutNUL(s string) string {
	s, _, _ = strings.Cut(s, "\x00")
	return s
}
