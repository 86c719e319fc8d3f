package bootparam

import (
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Explain writes the Plan for a person: one line per decision, each with the parameter
// that made it or the reason for its default, then the notes. `nbdroot cmdline` prints it.
func (p *Plan) Explain(w io.Writer) error {
	ew := &errWriter{w: w}
	line := func(label, value, key string) {
		src := p.Sources[key]
		switch {
		case src == "":
			ew.printf("  %-12s %s\n", label, value)
		case strings.HasPrefix(src, "default"):
			ew.printf("  %-12s %s  (%s)\n", label, value, src)
		default:
			ew.printf("  %-12s %s  (from %s)\n", label, value, src)
		}
	}

	ew.printf("network\n")
	for i, c := range p.IP {
		line("ip["+strconv.Itoa(i)+"]", describeIP(c, p.BootIF), "ip["+strconv.Itoa(i)+"]")
		if c.Mode == ModeStatic && p.Sources["ip["+strconv.Itoa(i)+"].netmask"] != "" {
			line("", "netmask "+c.Netmask, "ip["+strconv.Itoa(i)+"].netmask")
		}
	}
	if p.BootIF != "" {
		line("boot NIC", p.BootIF+" (the NIC that PXE-booted is preferred)", "bootif")
	}
	for i, n := range p.IfNames {
		key := "ifname[" + strconv.Itoa(i) + "]"
		line(key, n.Name+" is the NIC with MAC "+n.MAC+" (renamed before anything else)", key)
	}
	for i, b := range p.Bonds {
		key := "bond[" + strconv.Itoa(i) + "]"
		d := b.Name + " bonds " + strings.Join(b.Slaves, ", ")
		var opts []string
		for _, o := range b.Options {
			opts = append(opts, o.Name+"="+o.Value)
		}
		if len(opts) > 0 {
			d += " (" + strings.Join(opts, ", ") + ")"
		} else {
			d += " (the driver's defaults: balance-rr)"
		}
		if b.MTU != 0 {
			d += ", MTU " + strconv.Itoa(b.MTU)
		}
		line(key, d, key)
	}
	for i, v := range p.VLANs {
		key := "vlan[" + strconv.Itoa(i) + "]"
		line(key, fmt.Sprintf("%s is VLAN %d on %s (802.1Q)", v.Name, v.ID, v.Parent), key)
	}
	for i, b := range p.Bridges {
		key := "bridge[" + strconv.Itoa(i) + "]"
		line(key, b.Name+" bridges "+strings.Join(b.Ports, ", "), key)
	}
	for i, r := range p.Routes {
		key := "route[" + strconv.Itoa(i) + "]"
		d := "route to " + r.Destination
		if r.Gateway != "" {
			d += " via " + r.Gateway
		}
		if r.Device != "" {
			d += " on " + r.Device
		}
		line(key, d+", added after the interfaces are configured", key)
	}

	n := p.NBD
	ew.printf("nbd\n")
	switch {
	case n.Host == "" && n.FromDHCP:
		line("server", "from the DHCP root-path (option 17), else the DHCP server", "nbd.host")
		if s := p.Sources["nbd.port"]; s != "" && !strings.HasPrefix(s, "default") {
			line("port", strconv.Itoa(n.Port), "nbd.port")
		}
	default:
		line("server", Server{n.Host, n.Port}.String(), "nbd.host")
		for _, s := range n.Servers[min(1, len(n.Servers)):] {
			ew.printf("  %-12s %s\n", "failover", s)
		}
	}
	line("export", strconv.Quote(n.Export), "nbd.export")
	line("device", n.Device, "nbd.device")
	if n.Connections != 0 {
		line("connections", strconv.Itoa(n.Connections), "nbd.connections")
	}
	if n.Timeout != 0 {
		line("timeout", n.Timeout.String()+" per request", "nbd.timeout")
	}
	if n.DeadConnTimeout != 0 {
		line("dead conn", n.DeadConnTimeout.String()+" to reconnect a dead connection", "nbd.dead_conn_timeout")
	}
	if n.BlockSize != 0 {
		line("block size", strconv.Itoa(n.BlockSize), "nbd.block_size")
	}
	clientID := n.ClientID
	if clientID == "" {
		clientID = "the NIC's MAC address"
	}
	line("client id", clientID+" (the server keys overlays and its writer lock by it)", "nbd.client_id")
	line("tls", describeTLS(n), "nbd.tls")

	if c := p.Crypt; c != nil {
		ew.printf("crypt\n")
		line("unlock", c.Device+" as /dev/mapper/"+c.Name, "crypt")
		if len(c.Options) > 0 {
			line("options", strings.Join(c.Options, ","), "crypt")
		}
		key := "passphrase asked on the console"
		switch k := c.Key; {
		case k == nil:
		case k.Kind == "rootfs":
			key = "key file " + k.Path + " inside the initramfs"
		case k.Kind == "raw":
			key = fmt.Sprintf("%d bytes at offset %d of %s", k.Size, k.Offset, k.Device)
		default:
			key = "key file " + k.Path + " on " + k.Device + " (" + k.FSType + ", mounted read-only)"
		}
		line("key", key, "crypt.key")
	}

	if l := p.LVM; l != nil {
		ew.printf("lvm\n")
		switch {
		case l.Off:
			line("activate", "nothing (LVM is off)", "lvm")
		default:
			if len(l.LVs) > 0 {
				line("needs", strings.Join(l.LVs, " "), "lvm")
			}
			if len(l.VGs) > 0 {
				line("activate", "every volume of "+strings.Join(l.VGs, " ")+" it can map", "lvm")
			}
		}
	}

	r := p.Root
	ew.printf("root\n")
	line("device", r.Device, "root.device")
	fstype := r.FSType
	if fstype == "" {
		fstype = "probed from the superblock"
	}
	line("fstype", fstype, "root.fstype")
	if r.Flags != "" {
		line("options", r.Flags, "root.flags")
	}
	mode := "read-only"
	if r.RW {
		mode = "read-write"
	}
	if p.Overlay != nil {
		line("mode", "read-only, under a writable overlay", "overlay")
		line("overlay", describeOverlay(p.Overlay), "overlay")
	} else {
		line("mode", mode, "root.rw")
	}
	if p.RootDelay != 0 {
		line("delay", p.RootDelay.String()+" before looking for the root", "rootdelay")
	}
	ew.printf("init\n")
	line("program", p.Init, "init")
	if len(p.InitArgs) > 0 {
		ew.printf("  %-12s %s  (after --)\n", "arguments", strings.Join(p.InitArgs, " "))
	}
	if p.Break != "" {
		line("break", "rescue shell before "+p.Break, "break")
	}
	if p.Debug {
		line("debug", "every hook logs its details", "debug")
	}
	if len(p.Notes) > 0 {
		ew.printf("notes\n")
		for _, note := range p.Notes {
			ew.printf("  - %s\n", note)
		}
	}
	return ew.err
}

// describeIP says in words what the net hook will do with one ip= entry; bootif is the
// BOOTIF MAC address, which picks the NIC of an entry without a device.
func describeIP(c IPConfig, bootif string) string {
	dev := "the first interface with carrier"
	switch {
	case c.Device != "":
		dev = c.Device
	case bootif != "":
		dev = "the interface with MAC " + bootif + " (BOOTIF)"
	}
	var b strings.Builder
	switch c.Mode {
	case ModeOff:
		return "no configuration on " + dev
	case ModeDHCP:
		b.WriteString("DHCP on " + dev)
	case ModeDHCP6:
		b.WriteString("DHCPv6 on " + dev + " (routes from router advertisements)")
	case ModeAuto6:
		b.WriteString("IPv6 autoconfiguration (SLAAC) on " + dev)
	case ModeStatic:
		b.WriteString("static " + c.Address + "/" + c.Netmask + " on " + dev)
	}
	if c.Gateway != "" {
		b.WriteString(", gateway " + c.Gateway)
	}
	if c.Hostname != "" {
		b.WriteString(", hostname " + c.Hostname)
	}
	if len(c.DNS) > 0 {
		b.WriteString(", DNS " + strings.Join(c.DNS, " "))
	}
	if c.Server != "" {
		b.WriteString(", server " + c.Server)
	}
	if c.NTP != "" {
		b.WriteString(", NTP " + c.NTP)
	}
	if c.MTU != 0 {
		b.WriteString(", MTU " + strconv.Itoa(c.MTU))
	}
	return b.String()
}

// errWriter keeps the first write error so that Explain can print freely.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
