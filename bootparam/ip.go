package bootparam

import (
	"encoding/hex"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// IP modes of IPConfig.Mode.
const (
	ModeDHCP   = "dhcp"
	ModeStatic = "static"
	ModeOff    = "off"
	// ModeDHCP6 is dracut's dhcp6: an address by DHCPv6 (RFC 8415), routes from router
	// advertisements. ModeAuto6 is dracut's auto6: the kernel's stateless autoconfiguration
	// (SLAAC, RFC 4862) from router advertisements.
	ModeDHCP6 = "dhcp6"
	ModeAuto6 = "auto6"
)

// dhcpLike reports whether a mode asks a server on the network (so a root-path can come
// from it).
func dhcpLike(mode string) bool { return mode == ModeDHCP || mode == ModeDHCP6 || mode == ModeAuto6 }

// formIP is the form quoted in ip= errors.
const formIP = "ip=off|none|on|any|dhcp|bootp|both|dhcp6|auto6 | ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0 (IPv6 in brackets) | ip=DEVICE:dhcp|dhcp6|auto6[:MTU]"

// autoconfMode maps an autoconf word to a mode. ok is false for words nobody defines;
// unsupported is a reason for words that are defined but that nbdroot cannot honour.
//
// Kernel words (net/ipv4/ipconfig.c ic_proto_name, nfsroot.rst): off/none disable
// autoconfiguration; on/any use every protocol; dhcp, bootp, rarp, both. dracut adds
// single-dhcp, dhcp6, auto6, either6, link6 and ibft (dracut.cmdline(7)).
func autoconfMode(word string) (mode string, ok bool, unsupported string) {
	switch word {
	case "off", "none":
		return ModeOff, true, ""
	case "on", "any", "dhcp", "bootp", "both", "single-dhcp":
		// DHCP is BOOTP's superset on the wire: a BOOTP server answers our DHCPDISCOVER
		// as a BOOTREQUEST, so "bootp" and the BOOTP half of "both"/"on" are honoured.
		// RARP, which "both"/"on" also allow, is not tried.
		return ModeDHCP, true, ""
	case "rarp":
		return "", true, "RARP is not supported (use dhcp, which BOOTP servers also answer)"
	case "dhcp6":
		return ModeDHCP6, true, ""
	case "auto6":
		return ModeAuto6, true, ""
	case "either6":
		return "", true, "either6 is not supported (use auto6 for SLAAC or dhcp6 for DHCPv6)"
	case "link6":
		return "", true, "link6 configures only a link-local address, which cannot name an NBD server: use auto6 or dhcp6"
	case "ibft":
		return "", true, "iBFT network configuration is not supported (use dhcp or a static address)"
	}
	return "", false, ""
}

// ParseIP parses the value of one ip= parameter, in any of these forms:
//
//   - a lone autoconf word: off, none, on, any, dhcp, bootp, both (nfsroot.rst);
//   - an empty value: no autoconfiguration (ipconfig.c: `*addrs == 0` disables it);
//   - the kernel's colon form CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0,
//     where any field may be empty and trailing fields may be left out; dracut's MTU in
//     place of DNS0 is recognised by being a plain number;
//   - dracut's DEVICE:AUTOCONF[:MTU].
//
// The mode follows the kernel: with no client address the autoconf word decides (empty =
// every protocol = DHCP); with a client address and AUTOCONF empty, off or none, the
// configuration is static. A client address together with a DHCP word is refused: the
// kernel would configure the address statically while dracut would run DHCP, and guessing
// either would surprise half of the users. A missing netmask is the address's classful
// default, as ic_defaults() computes it.
func ParseIP(value string) (IPConfig, error) {
	c, _, err := parseIP(value)
	return c, err
}

// parseIP is ParseIP that also says whether the netmask is the classful default.
func parseIP(value string) (c IPConfig, maskDefaulted bool, err error) {
	c, err = parseIPFields(value)
	if err != nil || c.Mode != ModeStatic || c.Netmask != "" {
		return c, false, err
	}
	err = finishStatic(&c, value)
	return c, err == nil, err
}

func parseIPFields(value string) (IPConfig, error) {
	fail := func(reason string) (IPConfig, error) {
		return IPConfig{}, perr("ip", value, reason, formIP)
	}
	if value == "" {
		return IPConfig{Mode: ModeOff}, nil
	}
	if !strings.Contains(value, ":") {
		mode, ok, unsupported := autoconfMode(value)
		if unsupported != "" {
			return fail(unsupported)
		}
		if ok {
			return IPConfig{Mode: mode, Autoconf: value}, nil
		}
		if _, err := netip.ParseAddr(value); err != nil {
			return fail(strconv.Quote(value) + " is neither an autoconf word nor an IPv4 address")
		}
		// A lone address is the CLIENT field of the colon form.
	}
	// IPv6 addresses are in brackets (dracut): their colons do not separate fields.
	f, r := splitBracketed(value)
	if r != "" {
		return fail(r + " (an IPv6 address goes in brackets: [2001:db8::5])")
	}
	if len(f) >= 2 && len(f) <= 3 && f[0] != "" && !isIPv4(f[0]) && !strings.Contains(f[0], ":") {
		if _, ok, _ := autoconfMode(f[1]); ok {
			return parseDracutIP(value, f)
		}
	}
	if len(f) > 10 && !(len(f) > 7 && allDigits(f[7])) {
		return fail("more than 10 fields")
	}
	field := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	var c IPConfig
	var err error
	addr := func(i int, name string) (string, error) {
		s := field(i)
		if s == "" {
			return "", nil
		}
		a, perr := netip.ParseAddr(s)
		if perr != nil || a.Zone() != "" || (!a.Is4() && !strings.Contains(s, ":")) {
			reason := name + " " + strconv.Quote(s) + " is not an IPv4 address"
			if strings.Contains(s, ":") {
				reason = name + " " + strconv.Quote(s) + " is not an IPv6 address"
			}
			return "", &ParamError{Param: "ip", Value: value, Expected: formIP, Reason: reason}
		}
		// ipconfig.c treats 0.0.0.0 (INADDR_ANY) as "not given"; :: likewise.
		if a.IsUnspecified() {
			return "", nil
		}
		return a.String(), nil
	}
	if c.Address, err = addr(0, "client address"); err != nil {
		return IPConfig{}, err
	}
	if c.Server, err = addr(1, "server address"); err != nil {
		return IPConfig{}, err
	}
	if c.Gateway, err = addr(2, "gateway"); err != nil {
		return IPConfig{}, err
	}
	v6 := strings.Contains(c.Address, ":")
	if nm := field(3); nm != "" {
		if v6 {
			// An IPv6 netmask is a prefix length.
			if _, ok := decimalIn(nm, 1, 128); !ok {
				return fail("IPv6 prefix length " + strconv.Quote(nm) + " is not 1-128")
			}
			c.Netmask = strings.TrimLeft(nm, "0")
		} else {
			mask, reason := parseNetmask(nm)
			if reason != "" {
				return fail(reason)
			}
			c.Netmask = mask
		}
	}
	if h := field(4); h != "" {
		if r := checkHostname(h); r != "" {
			return fail(r)
		}
		c.Hostname = h
	}
	if d := field(5); d != "" {
		if r := checkIfName(d); r != "" {
			return fail(r)
		}
		c.Device = d
	}
	c.Autoconf = field(6)
	if s := field(7); allDigits(s) {
		// dracut: CLIENT:…:AUTOCONF[:MTU[:MACADDR]] — a number here is an MTU, never an
		// address.
		mtu, reason := parseMTU(s)
		if reason != "" {
			return fail(reason)
		}
		c.MTU = mtu
		if len(f) > 8 {
			return fail("a MAC address after the MTU is not supported")
		}
	} else {
		for i, name := range []string{"dns0", "dns1"} {
			a, err := addr(7+i, name)
			if err != nil {
				return IPConfig{}, err
			}
			if a != "" {
				c.DNS = append(c.DNS, a)
			}
		}
		if c.NTP, err = addr(9, "ntp0"); err != nil {
			return IPConfig{}, err
		}
	}

	mode := ModeDHCP // empty autoconf = every protocol (ic_proto_enabled default)
	if c.Autoconf != "" {
		m, ok, unsupported := autoconfMode(c.Autoconf)
		if unsupported != "" {
			return fail(unsupported)
		}
		if !ok {
			return fail("autoconf " + strconv.Quote(c.Autoconf) + " is not one of off, none, on, any, dhcp, bootp, both")
		}
		mode = m
	}
	// The family of the fields is the client address's, else the mode's.
	family, of := v6, "the client address "+c.Address
	if c.Address == "" {
		family, of = mode == ModeDHCP6 || mode == ModeAuto6, "autoconf "+strconv.Quote(c.Autoconf)
		if c.Autoconf == "" {
			of = "DHCP (IPv4)"
		}
	}
	for _, a := range []struct{ name, v string }{{"gateway", c.Gateway}, {"server address", c.Server}, {"ntp0", c.NTP}} {
		if a.v != "" && strings.Contains(a.v, ":") != family {
			return fail(a.name + " " + a.v + " and " + of + " are not of the same IP version")
		}
	}
	switch {
	case c.Address != "" && dhcpLike(mode) && c.Autoconf != "":
		return fail("a client address with autoconf " + strconv.Quote(c.Autoconf) +
			" is ambiguous (the kernel configures the address, dracut runs DHCP): use autoconf off for a static address or leave the address empty for DHCP")
	case c.Address != "":
		// ip_auto_config(): a given client address on one interface is configured as
		// is, autoconf only fills what is missing — and with it given nothing is.
		mode = ModeStatic
	case mode == ModeOff && (c.Gateway != "" || c.Netmask != ""):
		return fail("gateway or netmask without a client address")
	}
	c.Mode = mode
	if mode == ModeStatic && c.Netmask != "" && !v6 {
		if err := finishStatic(&c, value); err != nil {
			return IPConfig{}, err
		}
	}
	return c, nil
}

// parseDracutIP parses dracut's ip=DEVICE:AUTOCONF[:MTU].
func parseDracutIP(value string, f []string) (IPConfig, error) {
	const form = "ip=DEVICE:dhcp|on|any|off|none|dhcp6|auto6[:MTU]"
	if r := checkIfName(f[0]); r != "" {
		return IPConfig{}, perr("ip", value, r, form)
	}
	mode, _, unsupported := autoconfMode(f[1])
	if unsupported != "" {
		return IPConfig{}, perr("ip", value, unsupported, form)
	}
	c := IPConfig{Mode: mode, Device: f[0], Autoconf: f[1]}
	if len(f) == 3 && f[2] != "" {
		mtu, reason := parseMTU(f[2])
		if reason != "" {
			return IPConfig{}, perr("ip", value, reason, form)
		}
		c.MTU = mtu
	}
	return c, nil
}

// finishStatic fills the classful netmask and checks that the gateway is reachable, as
// ic_defaults() and ic_setup_routes() do. An IPv6 address without a prefix length gets /64,
// the length of every IPv6 subnet autoconfiguration serves (RFC 4291 section 2.5.1).
func finishStatic(c *IPConfig, value string) error {
	if strings.Contains(c.Address, ":") {
		c.Netmask = "64"
		return nil
	}
	a := netip.MustParseAddr(c.Address)
	b := a.As4()
	if c.Netmask == "" {
		switch {
		case b[0] < 128:
			c.Netmask = "255.0.0.0"
		case b[0] < 192:
			c.Netmask = "255.255.0.0"
		case b[0] < 224:
			c.Netmask = "255.255.255.0"
		default:
			return perr("ip", value, "cannot guess a netmask for class D/E address "+c.Address+"; give NETMASK", formIP)
		}
	}
	if c.Gateway != "" {
		m := netip.MustParseAddr(c.Netmask).As4()
		g := netip.MustParseAddr(c.Gateway).As4()
		for i := range 4 {
			if (b[i]^g[i])&m[i] != 0 {
				return perr("ip", value, "gateway "+c.Gateway+" is not on the network "+c.Address+"/"+c.Netmask, formIP)
			}
		}
	}
	return nil
}

func isIPv4(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.Is4()
}

// parseNetmask accepts a dotted-quad netmask (kernel) or a prefix length (dracut) and
// returns the dotted quad.
func parseNetmask(s string) (string, string) {
	if allDigits(s) {
		if len(s) > 2 {
			return "", "netmask prefix length must be 0-32"
		}
		n, _ := strconv.Atoi(s)
		if n > 32 {
			return "", "netmask prefix length must be 0-32"
		}
		p := netip.PrefixFrom(netip.IPv4Unspecified(), n)
		return maskString(p.Bits()), ""
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return "", "netmask " + strconv.Quote(s) + " is neither a dotted quad nor a prefix length"
	}
	b := a.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	// A valid mask is ones then zeros: its complement plus one is a power of two.
	if inv := ^v; inv&(inv+1) != 0 {
		return "", "netmask " + s + " is not contiguous"
	}
	return a.String(), ""
}

func maskString(bits int) string {
	v := uint32(0)
	if bits > 0 {
		v = ^uint32(0) << (32 - bits)
	}
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String()
}

func parseMTU(s string) (int, string) {
	// 68 is the minimum IPv4 MTU (RFC 791); 65535 the largest an IPv4 packet can be.
	n, ok := decimalIn(s, 68, 65535)
	if !ok {
		return 0, "MTU must be 68-65535"
	}
	return n, ""
}

// checkIfName checks an interface name the way the kernel's dev_valid_name() does: 1-15
// bytes (IFNAMSIZ-1), not "." or "..", no '/', ':' or whitespace.
func checkIfName(s string) string {
	if len(s) == 0 || len(s) > 15 {
		return "interface name " + strconv.Quote(s) + " must be 1-15 characters"
	}
	if s == "." || s == ".." || strings.ContainsAny(s, "/:") {
		return "interface name " + strconv.Quote(s) + " is not valid"
	}
	for _, r := range s {
		// Control characters and spaces: dev_valid_name refuses whitespace, and a name that
		// is not UTF-8 cannot be written back into the JSON plan or /run/net-IFACE.conf.
		if r <= ' ' || r == 0x7f || r == utf8.RuneError {
			return "interface name " + strconv.Quote(s) + " is not valid"
		}
	}
	return ""
}

// checkHostname accepts an RFC 1123 host name, optionally with a domain (the kernel splits
// HOSTNAME.DOMAIN into nodename and domainname), at most 64 bytes per part (__NEW_UTS_LEN).
func checkHostname(s string) string {
	host, _, _ := strings.Cut(s, ".")
	if len(host) > 64 || len(s) > 253 {
		return "hostname " + strconv.Quote(s) + " is too long"
	}
	for _, l := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
			return "hostname " + strconv.Quote(s) + " is not a valid host name"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return "hostname " + strconv.Quote(s) + " is not a valid host name"
			}
		}
	}
	return ""
}

// ParseBootIF parses pxelinux's BOOTIF= (IPAPPEND 2): the ARP hardware type 01 (Ethernet)
// and the MAC address, dash-separated: 01-aa-bb-cc-dd-ee-ff. A bare MAC address with '-' or
// ':' separators is accepted too (dracut does). It returns the MAC in lower case with colons.
func ParseBootIF(value string) (string, error) {
	const form = "BOOTIF=01-aa-bb-cc-dd-ee-ff"
	parts := strings.Split(value, "-")
	if len(parts) == 1 {
		parts = strings.Split(value, ":")
	}
	for _, p := range parts {
		if len(p) != 2 {
			return "", perr("BOOTIF", value, "not dash-separated pairs of hex digits", form)
		}
		if _, err := hex.DecodeString(p); err != nil {
			return "", perr("BOOTIF", value, strconv.Quote(p)+" is not two hex digits", form)
		}
	}
	if len(parts) == 7 {
		if parts[0] != "01" {
			return "", perr("BOOTIF", value, "hardware type "+parts[0]+" is not 01 (Ethernet)", form)
		}
		parts = parts[1:]
	}
	if len(parts) != 6 {
		return "", perr("BOOTIF", value, "not a hardware type and a 6-byte MAC address", form)
	}
	return strings.ToLower(strings.Join(parts, ":")), nil
}
