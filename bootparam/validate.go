package bootparam

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/nbd"
)

// Validate checks that the Plan is complete and consistent: a server to connect to (a plan
// still waiting for its DHCP root-path is not complete), valid addresses, ports, devices and
// names, and a root that the boot can reach (root=/dev/nbdNpM on the attached device,
// /dev/mapper/NAME opened by cryptdevice=). Parse already ran these checks; call Validate
// again after building a Plan by hand. Errors are *ParamError naming the
// parameter behind the field (from Sources).
func (p *Plan) Validate() error { return p.check(false) }

// errFor builds a ParamError for the field key, naming the parameter that set it when
// Sources knows one.
func (p *Plan) errFor(key, value, reason, form string) *ParamError {
	src := p.Sources[key]
	if src != "" && !strings.HasPrefix(src, "default") {
		word, _, _ := strings.Cut(src, " ")
		if name, v, ok := strings.Cut(word, "="); ok {
			return perr(name, v, reason, form)
		}
		return perr(word, value, reason, form)
	}
	return perr(key, value, reason, form)
}

// check validates the plan; pending allows a server that DHCP has yet to supply.
func (p *Plan) check(pending bool) error {
	n := &p.NBD
	switch {
	case n.Host == "" && n.FromDHCP && pending:
	case n.Host == "" && n.FromDHCP:
		return missing("nbd_server", "the DHCP root-path (option 17) named no server and DHCP gave no server address",
			"a root-path nbd:SERVER:PORT[:…] | SERVER:PORT/NAME | SERVER,NAME | HOST[:PORT], or nbd_server= on the cmdline")
	case n.Host == "":
		return missing("nbd_server", "no NBD server", "nbd_server=HOST[:PORT]")
	default:
		if r := checkHost(n.Host); r != "" {
			return p.errFor("nbd.host", n.Host, r, formNBDServer)
		}
		if n.Port < 1 || n.Port > 65535 {
			return p.errFor("nbd.port", strconv.Itoa(n.Port), "port must be 1-65535", formNBDServer)
		}
		if len(n.Servers) > 0 && (n.Servers[0].Host != n.Host || n.Servers[0].Port != n.Port) {
			return p.errFor("nbd.host", n.Host, "Servers[0] is not Host:Port", formNBDServer)
		}
		for _, s := range n.Servers {
			if r := checkHost(s.Host); r != "" {
				return p.errFor("nbd.host", s.Host, r, formNBDServer)
			}
			if s.Port < 1 || s.Port > 65535 {
				return p.errFor("nbd.port", strconv.Itoa(s.Port), "port must be 1-65535", formNBDServer)
			}
		}
	}
	if r := checkExport(n.Export); r != "" {
		return p.errFor("nbd.export", n.Export, r, formExportName)
	}
	base, part, ok := splitNBDName(strings.TrimPrefix(n.Device, "/dev/"))
	if !ok || part != "" || !strings.HasPrefix(n.Device, "/dev/") {
		return p.errFor("nbd.device", n.Device, "not an NBD device", formNBDDevice)
	}
	if n.Connections < 0 || n.Connections > maxConnections {
		return p.errFor("nbd.connections", strconv.Itoa(n.Connections), "must be 1-64", "nbdroot.connections=N")
	}
	if n.Timeout < 0 || n.Timeout > maxTimeout || n.DeadConnTimeout < 0 || n.DeadConnTimeout > maxTimeout {
		return p.errFor("nbd.timeout", n.Timeout.String(), "must be 0-24h", "nbdroot.timeout=SECONDS")
	}
	if n.BlockSize != 0 {
		if _, r := parseBlockSize(strconv.Itoa(n.BlockSize)); r != "" {
			return p.errFor("nbd.block_size", strconv.Itoa(n.BlockSize), r, formDracut)
		}
	}
	switch n.TLS {
	case "", TLSOff, TLSOn, TLSRequire:
	default:
		return p.errFor("nbd.tls", n.TLS, "not a TLS mode", "nbdroot.tls=require|on|off")
	}
	if len(p.IP) == 0 {
		return missing("ip", "no network configuration, but the root is on NBD", formIP)
	}
	for i, c := range p.IP {
		if err := checkIPConfig(c); err != "" {
			return p.errFor("ip["+strconv.Itoa(i)+"]", c.Address, err, formIP)
		}
	}
	if err := p.checkNetdevs(); err != nil {
		return err
	}
	if c := p.Crypt; c != nil {
		if r := checkBlockDevice(c.Device); r != "" {
			return p.errFor("crypt", c.Device, r, formCryptDevice)
		}
		if r := checkMapperName(c.Name); r != "" {
			return p.errFor("crypt", c.Name, r, formCryptDevice)
		}
	}
	if p.Root.Device == "" {
		return missing("root", "nothing names the root file system", formRoot)
	}
	if p.Root.Device != n.Device {
		r, err := parseRootDevice(p.Root.Device)
		if err != nil {
			return p.errFor("root.device", p.Root.Device, err.(*ParamError).Reason, formRoot)
		}
		switch {
		case r.kind == rootNBD && r.nbdBase != "/dev/"+base:
			return p.errFor("root.device", p.Root.Device, "is not on the attached device "+n.Device, formRoot)
		case r.kind == rootMapper && (p.Crypt == nil || p.Crypt.Name != r.mapperName) && r.vg == "":
			return p.errFor("root.device", p.Root.Device, "no cryptdevice= opens mapping "+r.mapperName, formCryptDevice)
		case (r.kind == rootLVM || r.kind == rootMapper && r.vg != "" && (p.Crypt == nil || p.Crypt.Name != r.mapperName)) &&
			(p.LVM == nil || p.LVM.Off || !slices.Contains(p.LVM.LVs, r.vg+"/"+r.lv)):
			return p.errFor("root.device", p.Root.Device, "is a logical volume the plan does not activate", formRoot)
		}
	}
	if n.ClientID != "" {
		if err := nbd.ValidateIdentity(n.ClientID); err != nil {
			return p.errFor("nbd.client_id", n.ClientID, strings.TrimPrefix(err.Error(), nbd.ErrBadIdentity.Error()+": "), formClientID)
		}
	}
	if err := p.checkOverlay(); err != nil {
		return err
	}
	if r := checkFSType(p.Root.FSType); r != "" {
		return p.errFor("root.fstype", p.Root.FSType, r, "rootfstype=TYPE")
	}
	if !strings.HasPrefix(p.Init, "/") {
		return p.errFor("init", p.Init, "must be an absolute path", "init=/PATH/TO/INIT")
	}
	if p.RootDelay < 0 || p.RootDelay > maxTimeout {
		return p.errFor("rootdelay", p.RootDelay.String(), "must be 0-24h", "rootdelay=SECONDS")
	}
	if p.Break != "" {
		known := false
		for _, h := range breakPoints {
			known = known || h == p.Break
		}
		if !known {
			return p.errFor("break", p.Break, "unknown break point", "nbdroot.break="+strings.Join(breakPoints, "|"))
		}
	}
	return nil
}

// checkIPConfig checks one IPConfig as the net hook will use it.
func checkIPConfig(c IPConfig) string {
	v6 := strings.Contains(c.Address, ":") || (c.Address == "" && (c.Mode == ModeDHCP6 || c.Mode == ModeAuto6))
	addrOK := func(s string) bool {
		if s == "" {
			return true
		}
		a, err := netip.ParseAddr(s)
		return err == nil && a.Is6() == v6 && a.Zone() == ""
	}
	switch c.Mode {
	case ModeDHCP, ModeOff, ModeDHCP6, ModeAuto6:
	case ModeStatic:
		switch {
		case v6:
			if a, err := netip.ParseAddr(c.Address); err != nil || !a.Is6() {
				return "static configuration without a client IPv6 address"
			}
			if _, ok := decimalIn(c.Netmask, 1, 128); !ok {
				return "static IPv6 configuration without a prefix length 1-128"
			}
		case !isIPv4(c.Address):
			return "static configuration without a client IPv4 address"
		default:
			if _, r := parseNetmask(c.Netmask); r != "" || c.Netmask == "" || allDigits(c.Netmask) {
				return "static configuration without a dotted-quad netmask"
			}
		}
	default:
		return "mode " + strconv.Quote(c.Mode) + " is not dhcp, dhcp6, auto6, static or off"
	}
	if !addrOK(c.Address) || !addrOK(c.Gateway) || !addrOK(c.Server) || !addrOK(c.NTP) || (!v6 && !addrOK(c.Netmask)) {
		return "an address is not of the client address's IP version"
	}
	for _, d := range c.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return "DNS server " + strconv.Quote(d) + " is not an address"
		}
	}
	if c.Device != "" {
		if r := checkIfName(c.Device); r != "" {
			return r
		}
	}
	return ""
}

// checkNetdevs checks the devices and routes of a Plan built by hand as Parse would have.
func (p *Plan) checkNetdevs() error {
	names := func(key, form string, list ...string) error {
		for _, n := range list {
			if r := checkIfName(n); r != "" {
				return p.errFor(key, n, r, form)
			}
		}
		return nil
	}
	for i, v := range p.VLANs {
		key := "vlan[" + strconv.Itoa(i) + "]"
		if err := names(key, formVLAN, v.Name, v.Parent); err != nil {
			return err
		}
		if v.ID < 1 || v.ID > maxVLANID {
			return p.errFor(key, strconv.Itoa(v.ID), "VLAN id "+strconv.Itoa(v.ID)+" is out of range: it must be 1-4094", formVLAN)
		}
	}
	for i, b := range p.Bonds {
		if err := names("bond["+strconv.Itoa(i)+"]", formBond, append([]string{b.Name}, b.Slaves...)...); err != nil {
			return err
		}
		if len(b.Slaves) == 0 {
			return p.errFor("bond["+strconv.Itoa(i)+"]", b.Name, "no slave interfaces", formBond)
		}
	}
	for i, b := range p.Bridges {
		if err := names("bridge["+strconv.Itoa(i)+"]", formBridge, append([]string{b.Name}, b.Ports...)...); err != nil {
			return err
		}
	}
	for i, r := range p.Routes {
		key := "route[" + strconv.Itoa(i) + "]"
		d, err := netip.ParsePrefix(r.Destination)
		if err != nil {
			return p.errFor(key, r.Destination, "destination is not NET/PREFIX", formRoute)
		}
		if g := r.Gateway; g != "" {
			if a, err := netip.ParseAddr(g); err != nil || a.Is4() != d.Addr().Is4() {
				return p.errFor(key, g, "gateway is not an address of the destination's IP version", formRoute)
			}
		} else if r.Device == "" {
			return p.errFor(key, r.Destination, "a route without a gateway needs the interface", formRoute)
		}
	}
	for i, n := range p.IfNames {
		if err := names("ifname["+strconv.Itoa(i)+"]", formIfName, n.Name); err != nil {
			return err
		}
		if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 || hw.String() != n.MAC {
			return p.errFor("ifname["+strconv.Itoa(i)+"]", n.MAC, "not a MAC address in lower case with colons", formIfName)
		}
	}
	return nil
}
