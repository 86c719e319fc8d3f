package bootparam

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// dracut's network devices and routes (dracut.cmdline(7), "Network"): interfaces the net hook
// creates or renames before it configures the ip= entries, and static routes it adds after.
// Each parameter may be given several times, one device or route each.

// VLAN is one vlan=NAME:PARENT: an 802.1Q interface on PARENT, its id taken from the name.
type VLAN struct {
	Name   string `json:"name"`
	Parent string `json:"parent"`
	// ID is the VLAN id, 1-4094 (IEEE 802.1Q reserves 0 and 4095).
	ID int `json:"id"`
}

// Bond is one bond=NAME[:SLAVES[:OPTIONS[:MTU]]]: a bonding interface over physical NICs.
type Bond struct {
	Name   string   `json:"name"`
	Slaves []string `json:"slaves"`
	// Options are the bonding options in the order given, as the bonding driver's sysfs
	// attributes take them (mode=active-backup, miimon=100, arp_ip_target=a;b…).
	Options []BondOption `json:"options,omitempty"`
	// MTU is set on the bond when not zero.
	MTU int `json:"mtu,omitempty"`
}

// BondOption is one NAME=VALUE of bond='s OPTIONS.
type BondOption struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Bridge is one bridge=NAME:PORTS: a bridge with the listed interfaces as ports.
type Bridge struct {
	Name  string   `json:"name"`
	Ports []string `json:"ports"`
}

// StaticRoute is one rd.route=NET/PREFIX:GATEWAY[:INTERFACE].
type StaticRoute struct {
	// Destination is NET/PREFIX (IPv4 or IPv6), its host bits cleared.
	Destination string `json:"destination"`
	// Gateway is empty for a route on the link (INTERFACE then names it).
	Gateway string `json:"gateway,omitempty"`
	// Device is INTERFACE; empty lets the kernel find it from the gateway.
	Device string `json:"device,omitempty"`
}

// IfName is one ifname=NAME:MAC: the NIC with that MAC address is renamed NAME.
type IfName struct {
	Name string `json:"name"`
	// MAC is lower case with colons.
	MAC string `json:"mac"`
}

// The forms quoted in errors.
const (
	formVLAN   = "vlan=NAME:PARENT with NAME vlanN, vlan000N, PARENT.N or PARENT.000N (N the VLAN id, 1-4094)"
	formBond   = "bond=NAME[:SLAVES[:OPTIONS[:MTU]]] with SLAVES a comma list of NICs and OPTIONS a comma list of bonding options (mode=active-backup,miimon=100)"
	formBridge = "bridge=NAME:PORTS with PORTS a comma list of interfaces"
	formRoute  = "rd.route=NET/PREFIX:GATEWAY[:INTERFACE] (IPv6 in brackets: rd.route=[2001:db8:3::/48]:[2001:db8::1]:eth0)"
	formIfName = "ifname=NAME:aa:bb:cc:dd:ee:ff"
)

// maxVLANID is the highest VLAN id: 4095 is reserved (IEEE 802.1Q).
const maxVLANID = 4094

// ParseVLAN parses vlan=NAME:PARENT. The id comes from the name, in the four styles dracut's
// parse-vlan.sh knows: vlan0005, vlan5, eth0.0005, eth0.5.
func ParseVLAN(value string) (VLAN, error) {
	fail := func(reason string) (VLAN, error) { return VLAN{}, perr("vlan", value, reason, formVLAN) }
	name, parent, ok := strings.Cut(value, ":")
	if !ok || name == "" || parent == "" {
		return fail("needs a VLAN name and its parent interface")
	}
	if strings.Contains(parent, ":") {
		return fail("more than two fields")
	}
	for _, n := range []string{name, parent} {
		if r := checkIfName(n); r != "" {
			return fail(r)
		}
	}
	var id string
	switch {
	case strings.HasPrefix(name, "vlan") && allDigits(name[4:]):
		id = name[4:]
	case strings.Contains(name, "."):
		id = name[strings.LastIndexByte(name, '.')+1:]
	default:
		return fail("cannot tell the VLAN id from the name " + strconv.Quote(name))
	}
	if !allDigits(id) {
		return fail("VLAN id " + strconv.Quote(id) + " is not a number")
	}
	n, ok := decimalIn(strings.TrimLeft(id, "0"), 1, maxVLANID)
	if !ok {
		return fail("VLAN id " + id + " is out of range: it must be 1-4094")
	}
	if name == parent {
		return fail("the VLAN cannot be its own parent")
	}
	return VLAN{Name: name, Parent: parent, ID: n}, nil
}

// bondOptions are the bonding driver's options (its sysfs attributes, Documentation/
// networking/bonding.rst) that bond= may set; an unknown name is refused rather than left
// for the driver to reject at boot.
var bondOptions = []string{"mode", "miimon", "updelay", "downdelay", "peer_notif_delay", "use_carrier",
	"arp_interval", "arp_ip_target", "arp_validate", "arp_all_targets", "primary", "primary_reselect",
	"fail_over_mac", "xmit_hash_policy", "resend_igmp", "num_grat_arp", "num_unsol_na", "lacp_rate",
	"lacp_active", "ad_select", "min_links", "all_slaves_active", "packets_per_slave", "tlb_dynamic_lb",
	"lp_interval", "ad_actor_sys_prio", "ad_actor_system", "ad_user_port_key", "missed_max"}

// bondModes are the bonding modes by name, in the order of their numbers (0-6).
var bondModes = []string{"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"}

// bondNumeric are the options whose value is a number.
var bondNumeric = []string{"miimon", "updelay", "downdelay", "peer_notif_delay", "arp_interval", "resend_igmp",
	"num_grat_arp", "num_unsol_na", "min_links", "packets_per_slave", "lp_interval", "ad_actor_sys_prio",
	"ad_user_port_key", "missed_max"}

// ParseBond parses bond=NAME[:SLAVES[:OPTIONS[:MTU]]]; a bare bond= is dracut's default,
// bond0 over eth0 and eth1 in balance-rr. A numeric mode is written by its name.
func ParseBond(value string) (Bond, error) {
	fail := func(reason string) (Bond, error) { return Bond{}, perr("bond", value, reason, formBond) }
	if value == "" {
		return Bond{Name: "bond0", Slaves: []string{"eth0", "eth1"}, Options: []BondOption{{"mode", "balance-rr"}}}, nil
	}
	f := strings.Split(value, ":")
	if len(f) > 4 {
		return fail("more than four fields")
	}
	b := Bond{Name: f[0]}
	if r := checkIfName(b.Name); r != "" {
		return fail(r)
	}
	if len(f) < 2 || f[1] == "" {
		return fail("no slave interfaces")
	}
	slaves, r := ifList(f[1], b.Name)
	if r != "" {
		return fail(r)
	}
	b.Slaves = slaves
	if len(f) > 2 && f[2] != "" {
		seen := map[string]bool{}
		for _, o := range strings.Split(f[2], ",") {
			name, v, ok := strings.Cut(o, "=")
			switch {
			case !ok || name == "" || v == "":
				return fail("option " + strconv.Quote(o) + " is not NAME=VALUE")
			case !slices.Contains(bondOptions, name):
				return fail("unknown bonding option " + strconv.Quote(name))
			case seen[name]:
				return fail("option " + name + " is given twice")
			}
			seen[name] = true
			switch {
			case name == "mode":
				if n, err := strconv.Atoi(v); err == nil && n >= 0 && n < len(bondModes) && allDigits(v) {
					v = bondModes[n]
				}
				if !slices.Contains(bondModes, v) {
					return fail("mode " + strconv.Quote(v) + " is not one of " + strings.Join(bondModes, ", ") + " (or 0-6)")
				}
			case name == "arp_ip_target":
				// dracut: several targets separated by semicolons.
				for _, a := range strings.Split(v, ";") {
					if !isIPv4(a) {
						return fail("arp_ip_target " + strconv.Quote(a) + " is not an IPv4 address")
					}
				}
			case name == "primary":
				if !slices.Contains(b.Slaves, v) {
					return fail("primary " + v + " is not one of the slaves")
				}
			case slices.Contains(bondNumeric, name):
				if _, ok := decimalIn(v, 0, 1<<31-1); !ok {
					return fail("option " + name + "=" + v + " is not a number")
				}
			default:
				if strings.ContainsAny(v, " \t\n/") || len(v) > 64 {
					return fail("option " + name + " has a malformed value")
				}
			}
			b.Options = append(b.Options, BondOption{name, v})
		}
	}
	if len(f) > 3 && f[3] != "" {
		mtu, reason := parseMTU(f[3])
		if reason != "" {
			return fail(reason)
		}
		b.MTU = mtu
	}
	return b, nil
}

// ParseBridge parses bridge=NAME:PORTS; a bare bridge= is dracut's default, br0 with eth0.
func ParseBridge(value string) (Bridge, error) {
	fail := func(reason string) (Bridge, error) { return Bridge{}, perr("bridge", value, reason, formBridge) }
	if value == "" {
		return Bridge{Name: "br0", Ports: []string{"eth0"}}, nil
	}
	name, ports, ok := strings.Cut(value, ":")
	if r := checkIfName(name); r != "" {
		return fail(r)
	}
	if !ok || ports == "" {
		return fail("no ports")
	}
	list, r := ifList(ports, name)
	if r != "" {
		return fail(r)
	}
	return Bridge{Name: name, Ports: list}, nil
}

// ifList parses a comma list of interface names, none of them self, none twice.
func ifList(s, self string) ([]string, string) {
	var out []string
	for _, n := range strings.Split(s, ",") {
		if r := checkIfName(n); r != "" {
			return nil, r
		}
		if n == self {
			return nil, "interface " + n + " cannot be part of itself"
		}
		if slices.Contains(out, n) {
			return nil, "interface " + n + " is listed twice"
		}
		out = append(out, n)
	}
	return out, ""
}

// ParseRoute parses rd.route=NET/PREFIX:GATEWAY[:INTERFACE], IPv6 addresses in brackets. An
// empty GATEWAY is a route on the link of INTERFACE. An IPv4 prefix may be a dotted netmask.
func ParseRoute(value string) (StaticRoute, error) {
	fail := func(reason string) (StaticRoute, error) {
		return StaticRoute{}, perr("rd.route", value, reason, formRoute)
	}
	f, r := splitBracketed(value)
	if r != "" {
		return fail(r)
	}
	if len(f) < 2 || len(f) > 3 {
		return fail("needs NET/PREFIX and a gateway, and optionally an interface")
	}
	netw, mask, ok := strings.Cut(f[0], "/")
	if !ok {
		return fail("destination " + strconv.Quote(f[0]) + " has no /PREFIX")
	}
	dst, err := netip.ParseAddr(netw)
	if err != nil || dst.Zone() != "" {
		return fail("destination " + strconv.Quote(netw) + " is not an address")
	}
	bits := -1
	switch {
	case allDigits(mask):
		if n, ok := decimalIn(mask, 0, dst.BitLen()); ok {
			bits = n
		}
	case dst.Is4():
		if m, r := parseNetmask(mask); r == "" {
			ones, _ := net.IPMask(net.ParseIP(m).To4()).Size()
			bits = ones
		}
	}
	if bits < 0 {
		return fail("prefix " + strconv.Quote(mask) + " is not 0-" + strconv.Itoa(dst.BitLen()))
	}
	route := StaticRoute{Destination: netip.PrefixFrom(dst, bits).Masked().String()}
	if g := f[1]; g != "" {
		gw, err := netip.ParseAddr(g)
		switch {
		case err != nil || gw.Zone() != "":
			return fail("gateway " + strconv.Quote(g) + " is not an address")
		case gw.Is4() != dst.Is4():
			return fail("the gateway and the destination are not of the same IP version")
		case gw.IsUnspecified() || gw.IsMulticast():
			return fail("gateway " + g + " cannot be a router")
		}
		route.Gateway = gw.String()
	}
	if len(f) == 3 && f[2] != "" {
		if r := checkIfName(f[2]); r != "" {
			return fail(r)
		}
		route.Device = f[2]
	}
	if route.Gateway == "" && route.Device == "" {
		return fail("a route without a gateway needs the interface")
	}
	return route, nil
}

// splitBracketed splits at the colons outside brackets and removes the brackets:
// "[2001:db8::/48]:[2001:db8::1]:eth0" is three fields.
func splitBracketed(s string) ([]string, string) {
	var out []string
	var cur strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '[' && !in && cur.Len() == 0:
			in = true
		case c == ']' && in:
			in = false
			if i+1 < len(s) && s[i+1] != ':' {
				return nil, "text after ']'"
			}
		case c == '[' || c == ']':
			return nil, "unbalanced brackets"
		case c == ':' && !in:
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	if in {
		return nil, "unbalanced brackets"
	}
	return append(out, cur.String()), ""
}

// ParseIfName parses ifname=NAME:MAC.
func ParseIfName(value string) (IfName, error) {
	fail := func(reason string) (IfName, error) { return IfName{}, perr("ifname", value, reason, formIfName) }
	name, mac, ok := strings.Cut(value, ":")
	if !ok {
		return fail("needs a name and a MAC address")
	}
	if r := checkIfName(name); r != "" {
		return fail(r)
	}
	hw, err := net.ParseMAC(mac)
	if err != nil || len(hw) != 6 {
		return fail(strconv.Quote(mac) + " is not an Ethernet MAC address")
	}
	return IfName{Name: name, MAC: hw.String()}, nil
}

// kernelIfName matches the names the kernel gives NICs itself (eth0, …): dracut.cmdline(7)
// warns that ifname= with one of them can clash with the kernel's own naming.
func kernelIfName(name string) bool {
	return strings.HasPrefix(name, "eth") && allDigits(name[3:])
}

// netdevParams are dracut's repeatable network parameters.
var netdevParams = map[string]bool{"vlan": true, "bond": true, "bridge": true, "rd.route": true, "ifname": true}

// buildNetdevs parses vlan=, bond=, bridge=, rd.route= and ifname= and checks them together:
// every device name is given once, a NIC is enslaved to one bond or bridge at most and
// configured by no ip= of its own, a bond's slaves are NICs, and no device is built on
// itself.
func (b *builder) buildNetdevs() error {
	pl := b.plan
	// owner maps each device name to the parameter that makes it.
	owner := map[string]Param{}
	claim := func(name string, p Param, form string) error {
		if prev, dup := owner[name]; dup {
			return perr(p.Name, p.Value, "interface "+name+" is also made by "+prev.String(), form)
		}
		owner[name] = p
		return nil
	}
	for i, p := range b.lists["ifname"] {
		n, err := ParseIfName(p.Value)
		if err != nil {
			return err
		}
		for _, o := range pl.IfNames {
			if o.MAC == n.MAC {
				return perr(p.Name, p.Value, "the NIC "+n.MAC+" is already named "+o.Name, formIfName)
			}
		}
		if err := claim(n.Name, p, formIfName); err != nil {
			return err
		}
		if kernelIfName(n.Name) {
			b.note("%s uses a name of the kernel's own (ethN): it clashes when another NIC has it (dracut.cmdline(7) advises a name like bootnet)", p.String())
		}
		pl.IfNames = append(pl.IfNames, n)
		b.src("ifname["+strconv.Itoa(i)+"]", p.String())
	}
	// enslaved maps a NIC to the bond or bridge it is a port of.
	enslaved := map[string]Param{}
	enslave := func(dev string, p Param, form string) error {
		if prev, dup := enslaved[dev]; dup {
			return perr(p.Name, p.Value, dev+" is already a port of "+prev.String(), form)
		}
		enslaved[dev] = p
		return nil
	}
	for i, p := range b.lists["bond"] {
		bd, err := ParseBond(p.Value)
		if err != nil {
			return err
		}
		if err := claim(bd.Name, p, formBond); err != nil {
			return err
		}
		for _, s := range bd.Slaves {
			if err := enslave(s, p, formBond); err != nil {
				return err
			}
		}
		pl.Bonds = append(pl.Bonds, bd)
		b.src("bond["+strconv.Itoa(i)+"]", p.String())
	}
	for i, p := range b.lists["vlan"] {
		v, err := ParseVLAN(p.Value)
		if err != nil {
			return err
		}
		if err := claim(v.Name, p, formVLAN); err != nil {
			return err
		}
		pl.VLANs = append(pl.VLANs, v)
		b.src("vlan["+strconv.Itoa(i)+"]", p.String())
	}
	for i, p := range b.lists["bridge"] {
		br, err := ParseBridge(p.Value)
		if err != nil {
			return err
		}
		if err := claim(br.Name, p, formBridge); err != nil {
			return err
		}
		for _, port := range br.Ports {
			if err := enslave(port, p, formBridge); err != nil {
				return err
			}
		}
		pl.Bridges = append(pl.Bridges, br)
		b.src("bridge["+strconv.Itoa(i)+"]", p.String())
	}
	// A bond's slaves are NICs: the bonding driver takes Ethernet devices, not other
	// virtual ones.
	for _, bd := range pl.Bonds {
		for _, s := range bd.Slaves {
			if o, ok := owner[s]; ok && o.Name != "ifname" {
				p := owner[bd.Name]
				return perr(p.Name, p.Value, "slave "+s+" is made by "+o.String()+": a bond's slaves are NICs", formBond)
			}
		}
	}
	if err := b.checkNetdevCycles(owner); err != nil {
		return err
	}
	for i, p := range b.lists["rd.route"] {
		r, err := ParseRoute(p.Value)
		if err != nil {
			return err
		}
		pl.Routes = append(pl.Routes, r)
		b.src("route["+strconv.Itoa(i)+"]", p.String())
	}
	for i, c := range pl.IP {
		if by, ok := enslaved[c.Device]; ok && c.Device != "" && c.Mode != ModeOff {
			p := b.ips[i]
			return perr(p.Name, p.Value, c.Device+" is a port of "+by.String()+": configure the device it belongs to", formIP)
		}
	}
	if len(owner) > len(pl.IfNames) {
		for i, c := range pl.IP {
			if c.Device != "" || c.Mode == ModeOff {
				continue
			}
			what := "no ip= (DHCP by default)"
			if i < len(b.ips) {
				what = b.ips[i].String() + " names no interface"
			}
			b.note("%s: the devices of vlan=, bond= and bridge= are not chosen automatically (write ip=NAME:dhcp)", what)
		}
	}
	return nil
}

// checkNetdevCycles refuses devices built on themselves: a VLAN whose parent is a bridge
// that has the VLAN as a port, and the like.
func (b *builder) checkNetdevCycles(owner map[string]Param) error {
	deps := map[string][]string{}
	for _, v := range b.plan.VLANs {
		deps[v.Name] = []string{v.Parent}
	}
	for _, br := range b.plan.Bridges {
		deps[br.Name] = br.Ports
	}
	for _, bd := range b.plan.Bonds {
		deps[bd.Name] = bd.Slaves
	}
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	var visit func(n string) bool
	visit = func(n string) bool {
		switch state[n] {
		case visiting:
			return false
		case done:
			return true
		}
		state[n] = visiting
		for _, d := range deps[n] {
			if !visit(d) {
				return false
			}
		}
		state[n] = done
		return true
	}
	names := make([]string, 0, len(deps))
	for n := range deps {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if !visit(n) {
			p := owner[n]
			return perr(p.Name, p.Value, "interface "+n+" is built on itself", p.Name+"=…")
		}
	}
	return nil
}
