package bootparam

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/nbd"
)

// Defaults of a Plan, used when no parameter decides.
const (
	DefaultDevice = "/dev/nbd0"
	DefaultInit   = "/sbin/init"
)

// breakPoints are the stages a break may name, in boot order: the hooks that run, then
// switch_root (the handover to the real init), from the hook table.
var breakPoints = catalog.Stages()

// dracutBreaks maps dracut's rd.break=HOOK points (dracut.cmdline(7)) to the nbdroot stage
// before which the init stops, so that a dracut habit does the nearest equivalent.
var dracutBreaks = map[string]string{
	"cmdline":     "base",
	"pre-udev":    "udev",
	"pre-trigger": "udev",
	"initqueue":   "net",
	"pre-mount":   "filesystems",
	"mount":       "filesystems",
	"pre-pivot":   "switch_root",
	"cleanup":     "switch_root",
}

// knobs are our own nbdroot.* parameters; an unknown one is a typo, not someone else's
// parameter, so it is an error.
var knobs = []string{"connections", "timeout", "deadconn", "connect", "tries", "debug", "shell", "break", "id", "overlay", "tls", "tlsname", "ktls"}

// valueParams are the parameters Parse reads; for each only the last occurrence counts
// (the kernel calls a __setup handler per occurrence, the shell scripts of every dialect
// loop over /proc/cmdline assigning a variable: the last assignment stays).
var valueParams = map[string]bool{
	"nbd_server": true, "nbd_export": true,
	"nbd_host": true, "nbd_name": true, "nbd_port": true,
	"nbdroot": true, "nbddev": true, "nbdport": true,
	"netroot": true, "root": true, "rootfstype": true, "rootflags": true,
	"init": true, "rootdelay": true, "cryptdevice": true, "cryptkey": true,
	"BOOTIF": true, "rd.break": true,
	"rd.lvm": true, "resume": true, "rd.luks": true, "luks": true,
}

// listParams are the parameters that may be given several times, each occurrence counting
// (dracut's rd.lvm.vg=/rd.lvm.lv=, systemd-cryptsetup-generator's rd.luks.*).
var listParams = map[string]bool{
	"rd.lvm.vg": true, "rd.lvm.lv": true,
	"rd.luks.uuid": true, "luks.uuid": true, "rd.luks.name": true, "luks.name": true,
	"rd.luks.options": true, "luks.options": true, "rd.luks.key": true, "luks.key": true,
}

// builder collects the parameters of one command line and turns them into a Plan.
type builder struct {
	last  map[string]Param
	count map[string]int
	ips   []Param
	// netroots keeps every netroot=: dracut uses the first one starting with nbd:.
	netroots []Param
	// lists keeps every occurrence of the listParams and the netdevParams (vlan=, bond=,
	// bridge=, rd.route=, ifname=: each may be repeated for several devices or routes), by
	// name, in order.
	lists map[string][]Param
	// rwWord is the last of the bare ro/rw words, or "".
	rwWord string
	// win is the NBD dialect that won (nil when none named a server).
	win *nbdSpec
	// root is the parsed root= when it names a block device.
	root *rootSpec
	plan *Plan
}

// Parse turns a kernel command line into a validated Plan.
//
// Every NBD dialect a PXE fleet uses is understood: the seed's nbd_server=/nbd_export=,
// dracut's root=nbd:/netroot=nbd:, Debian's nbdroot=/nbddev=, mkinitcpio-nbd's
// nbd_host=/nbd_name=/nbd_port=, with the kernel's ip= (every nfsroot form and dracut's),
// BOOTIF=, root=, rootfstype=, rootflags=, ro/rw, init=, rootdelay=, mkinitcpio's
// cryptdevice=/cryptkey=, rd.break and the nbdroot.* knobs. When dialects disagree, one
// precedence decides (see docs/cmdline.md, "Precedence"), and Plan.Sources names the
// parameter behind each field. Unknown parameters are ignored: they belong to the kernel or
// to the real init.
//
// When the server is left to DHCP, the returned Plan has NBD.FromDHCP set and no host; the
// nbd hook completes it into a Target with Resolve. Every other problem is a *ParamError.
func Parse(cmdline string) (*Plan, error) {
	params, initArgs := Tokenize(cmdline)
	b := &builder{last: map[string]Param{}, count: map[string]int{}, lists: map[string][]Param{}, plan: &Plan{Sources: map[string]string{}}}
	for _, p := range params {
		if err := b.collect(p); err != nil {
			return nil, err
		}
	}
	if err := b.build(); err != nil {
		return nil, err
	}
	b.plan.InitArgs = initArgs
	if err := b.plan.check(true); err != nil {
		return nil, err
	}
	return b.plan, nil
}

func (b *builder) note(format string, args ...any) {
	b.plan.Notes = append(b.plan.Notes, fmt.Sprintf(format, args...))
}

func (b *builder) src(key, source string) { b.plan.Sources[key] = source }

func (b *builder) get(name string) (Param, bool) {
	p, ok := b.last[name]
	return p, ok
}

// collect sorts one parameter into the builder; unknown ones are dropped.
func (b *builder) collect(p Param) error {
	if !utf8.ValidString(p.Value) && b.reads(p) {
		// Every value we read ends up in paths, names and the JSON plan; bytes that are
		// not UTF-8 would be altered on the way, so they are refused up front.
		return perr(p.Name, p.Value, "not valid UTF-8", "UTF-8 text")
	}
	switch {
	case p.Name == "ip" && p.HasValue:
		b.ips = append(b.ips, p)
		return nil
	case netdevParams[p.Name]:
		// A bare bond or bridge is dracut's default device; a bare vlan, rd.route or
		// ifname is incomplete, which their parsers say.
		b.lists[p.Name] = append(b.lists[p.Name], p)
		return nil
	case p.Name == "netroot" && p.HasValue:
		b.netroots = append(b.netroots, p)
		return nil
	case listParams[p.Name] && p.HasValue:
		b.lists[p.Name] = append(b.lists[p.Name], p)
		return nil
	case (p.Name == "ro" || p.Name == "rw") && !p.HasValue:
		// The kernel's ro/rw handlers refuse a value (`ro=x` is not ro); the last word wins.
		b.rwWord = p.Name
		return nil
	case p.Name == "rd.break" && !p.HasValue:
		p.Value = ""
	case strings.HasPrefix(p.Name, "nbdroot."):
		knob := strings.TrimPrefix(p.Name, "nbdroot.")
		known := false
		for _, k := range knobs {
			known = known || k == knob
		}
		if !known {
			return perr(p.Name, p.Value, "unknown nbdroot knob", "nbdroot.connections=N | nbdroot.timeout=SECONDS | nbdroot.deadconn=SECONDS | nbdroot.connect=SECONDS | nbdroot.tries=N | nbdroot.debug | nbdroot.shell | nbdroot.break=HOOK | nbdroot.id=ID | nbdroot.overlay=tmpfs[:SIZE]|DEVICE | nbdroot.tls=require|on|off | nbdroot.tlsname=NAME | nbdroot.ktls=0")
		}
	case !p.HasValue || !valueParams[p.Name]:
		return nil
	}
	b.count[p.Name]++
	if b.count[p.Name] == 2 {
		b.note("%s is given more than once; the last one (%s) wins, as in every dialect", p.Name, "…")
	}
	b.last[p.Name] = p
	return nil
}

// fixRepeatNotes replaces the placeholder of repeat notes with the winning value, now that
// the last occurrence is known.
// reads says whether Parse reads p (as opposed to leaving it to the kernel or the init).
func (b *builder) reads(p Param) bool {
	return p.Name == "ip" || p.Name == "netroot" || valueParams[p.Name] || listParams[p.Name] || netdevParams[p.Name] || strings.HasPrefix(p.Name, "nbdroot.")
}

func (b *builder) fixRepeatNotes() {
	for i, n := range b.plan.Notes {
		name, _, ok := strings.Cut(n, " is given more than once")
		if !ok {
			continue
		}
		if p, found := b.last[name]; found {
			b.plan.Notes[i] = strings.Replace(n, "(…)", "("+p.String()+")", 1)
		}
	}
}

func (b *builder) build() error {
	b.fixRepeatNotes()
	steps := []func() error{b.buildIP, b.buildNBD, b.buildKnobs, b.buildTLS, b.buildDevice, b.buildCrypt, b.buildRoot, b.buildLVM, b.buildMount, b.buildMisc, b.buildNetwork, b.buildFleet, b.buildNetdevs}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

// buildIP parses every ip= and BOOTIF=.
func (b *builder) buildIP() error {
	devices := map[string]string{}
	anyDevice := ""
	for i, p := range b.ips {
		c, maskDefaulted, err := parseIP(p.Value)
		if err != nil {
			return err
		}
		key := "ip[" + strconv.Itoa(i) + "]"
		b.src(key, p.String())
		switch {
		case maskDefaulted && strings.Contains(c.Address, ":"):
			b.src(key+".netmask", "default: prefix length 64 for "+c.Address+" (an IPv6 subnet)")
		case maskDefaulted:
			b.src(key+".netmask", "default: classful netmask of "+c.Address+" (kernel ic_defaults)")
		}
		if c.Device == "" {
			if anyDevice != "" && len(b.ips) > 1 {
				return perr("ip", p.Value, "several ip= leave the device empty ("+anyDevice+" too); with several ip=, each names its interface", "ip=…:DEVICE:… or ip=DEVICE:dhcp per interface")
			}
			anyDevice = p.String()
		} else {
			if prev, dup := devices[c.Device]; dup {
				return perr("ip", p.Value, "interface "+c.Device+" is configured twice (also by "+prev+")", formIP)
			}
			devices[c.Device] = p.String()
		}
		b.plan.IP = append(b.plan.IP, c)
	}
	if p, ok := b.get("BOOTIF"); ok {
		mac, err := ParseBootIF(p.Value)
		if err != nil {
			return err
		}
		b.plan.BootIF = mac
		b.src("bootif", p.String())
	}
	return nil
}

// dialect is one NBD dialect's parameters, in precedence order.
type dialect struct {
	name string
	spec *nbdSpec
}

// buildNBD parses every NBD dialect present and applies the precedence:
//
//  1. nbd_server= (the seed's, and nbdroot's own) — an explicit override appended to any
//     boot entry wins;
//  2. dracut root=nbd:… then netroot=nbd:… (dracut itself lets root= win over netroot=);
//  3. Debian nbdroot= (with the old nbdport=);
//  4. mkinitcpio-nbd nbd_host=/nbd_port=/nbd_name=;
//  5. the DHCP root-path (option 17), when nothing names a server or a dialect asks for it.
//
// The server, its port and its export name travel together: the export of a losing dialect
// is not combined with the server of a winning one. nbd_export= is ours and explicit, so it
// overrides the export whichever dialect won.
func (b *builder) buildNBD() error {
	present, err := b.dialects()
	if err != nil {
		return err
	}
	return b.applyDialects(present)
}

// dialects returns the NBD dialects the command line uses, in precedence order.
func (b *builder) dialects() ([]dialect, error) {
	var present []dialect
	if p, ok := b.get("nbd_server"); ok {
		servers, err := parseServerList(p.Name, p.Value)
		if err != nil {
			return nil, err
		}
		present = append(present, dialect{"nbd_server", &nbdSpec{source: p.String(), servers: servers}})
	}
	root, hasRoot := b.get("root")
	if hasRoot && strings.HasPrefix(root.Value, "nbd:") {
		spec, err := parseDracutNBD("root", root.Value)
		if err != nil {
			return nil, err
		}
		present = append(present, dialect{"root=nbd:", spec})
	}
	if hasRoot && root.Value == "dhcp" {
		present = append(present, dialect{"root=dhcp", &nbdSpec{source: root.String(), fromDHCP: true}})
	}
	for _, p := range b.netroots {
		switch {
		case strings.HasPrefix(p.Value, "nbd:"):
			spec, err := parseDracutNBD("netroot", p.Value)
			if err != nil {
				return nil, err
			}
			present = append(present, dialect{"netroot=nbd:", spec})
		case p.Value == "dhcp":
			present = append(present, dialect{"netroot=dhcp", &nbdSpec{source: p.String(), fromDHCP: true}})
		default:
			b.note("%s is not an NBD root and is ignored", p.String())
			continue
		}
		break // dracut's parse-nbdroot.sh takes the first netroot=nbd:
	}
	debian, err := b.debianDialect()
	if err != nil {
		return nil, err
	}
	if debian != nil {
		present = append(present, dialect{"nbdroot=", debian})
	}
	mkinitcpio, err := b.mkinitcpioDialect(len(present) > 0)
	if err != nil {
		return nil, err
	}
	if mkinitcpio != nil {
		present = append(present, dialect{"nbd_host=", mkinitcpio})
	}
	return present, nil
}

// debianDialect reads Debian's nbdroot=, with the old nbdport= (nil when absent).
func (b *builder) debianDialect() (*nbdSpec, error) {
	p, ok := b.get("nbdroot")
	np, hasPort := b.get("nbdport")
	if !ok {
		if hasPort {
			b.note("%s is ignored without nbdroot=", np.String())
		}
		return nil, nil
	}
	spec, err := parseDebianNBD(p.Name, p.Value)
	if err != nil || !hasPort {
		return spec, err
	}
	// Old Ubuntu/LTSP initramfs: nbdroot=SERVER nbdport=PORT|NAME.
	const form = "nbdport=PORT|NAME"
	switch {
	case spec.port != 0 || spec.hasExport:
		b.note("%s is ignored: %s already gives the port or export", np.String(), p.String())
		return spec, nil
	case allDigits(np.Value):
		port, r := parsePort(np.Value)
		if r != "" {
			return nil, perr(np.Name, np.Value, r, form)
		}
		spec.port = port
		for i := range spec.servers {
			spec.servers[i].Port = port
		}
	default:
		if r := checkExport(np.Value); r != "" || np.Value == "" {
			if r == "" {
				r = "export name is empty"
			}
			return nil, perr(np.Name, np.Value, r, form)
		}
		spec.export, spec.hasExport = np.Value, true
	}
	spec.source += " " + np.String()
	return spec, nil
}

// mkinitcpioDialect reads mkinitcpio-nbd's nbd_host=, nbd_port= and nbd_name= (nil when
// nbd_host= is absent). Without nbd_host= the other two are an error when nothing else
// names a server (others false), and ignored otherwise.
func (b *builder) mkinitcpioDialect(others bool) (*nbdSpec, error) {
	const form = "nbd_host=HOST nbd_name=NAME [nbd_port=PORT]"
	host, hasHost := b.get("nbd_host")
	name, hasName := b.get("nbd_name")
	port, hasPort := b.get("nbd_port")
	if !hasHost {
		if !hasName && !hasPort {
			return nil, nil
		}
		if !others {
			p := name
			if !hasName {
				p = port
			}
			return nil, &ParamError{Param: "nbd_host", Missing: true,
				Reason: p.String() + " needs nbd_host= (mkinitcpio-nbd)", Expected: form}
		}
		for _, p := range []Param{name, port} {
			if p.Name != "" {
				b.note("%s is ignored without nbd_host=", p.String())
			}
		}
		return nil, nil
	}
	// nbd-client takes a bare IPv6 address; brackets are tolerated.
	h, r := unbracket(host.Value)
	if r == "" {
		r = checkHost(h)
	}
	if r != "" {
		return nil, perr(host.Name, host.Value, r, form)
	}
	spec := &nbdSpec{source: host.String(), servers: []Server{{Host: h, Port: nbd.DefaultPort}}}
	if hasPort {
		p, r := parsePort(port.Value)
		if r != "" {
			return nil, perr(port.Name, port.Value, r, form)
		}
		spec.servers[0].Port = p
		spec.source += " " + port.String()
	}
	if hasName {
		if r := checkExport(name.Value); r != "" {
			return nil, perr(name.Name, name.Value, r, form)
		}
		spec.export, spec.hasExport = name.Value, name.Value != ""
		spec.source += " " + name.String()
	}
	return spec, nil
}

// applyDialects applies the winning dialect (the first present) to the plan, notes the
// others, and applies nbd_export=.
func (b *builder) applyDialects(present []dialect) error {
	n := &b.plan.NBD
	var win *nbdSpec
	if len(present) > 0 {
		win = present[0].spec
		for _, d := range present[1:] {
			b.note("%s is ignored: %s takes precedence (docs/cmdline.md, Precedence)", d.spec.source, win.source)
		}
	}
	switch {
	case win != nil && !win.fromDHCP:
		n.Servers = win.servers
		n.Host, n.Port = win.servers[0].Host, win.servers[0].Port
		b.src("nbd.host", win.source)
		b.src("nbd.port", win.source)
		if win.hasExport {
			n.Export = win.export
			b.src("nbd.export", win.source)
		}
	case win != nil:
		n.FromDHCP = true
		b.src("nbd.host", win.source+" (server from DHCP)")
		if win.port != 0 {
			n.Port = win.port
			b.src("nbd.port", win.source)
		}
		if win.hasExport {
			n.Export = win.export
			b.src("nbd.export", win.source)
		}
	default:
		n.FromDHCP = true
		b.src("nbd.host", "default: no server parameter, DHCP root-path (option 17)")
	}
	if n.Port == 0 {
		n.Port = nbd.DefaultPort
		b.src("nbd.port", "default: the IANA NBD port")
	}
	if p, ok := b.get("nbd_export"); ok {
		if r := checkExport(p.Value); r != "" {
			return perr(p.Name, p.Value, r, formExportName)
		}
		if win != nil && win.hasExport && win.export != p.Value {
			b.note("%s overrides the export %q of %s", p.String(), win.export, win.source)
		}
		n.Export = p.Value
		b.src("nbd.export", p.String())
	}
	if _, ok := b.plan.Sources["nbd.export"]; !ok {
		b.src("nbd.export", "default: no export name, the server's default export")
	}
	b.win = win
	return nil
}

// maxConnections bounds nbdroot.connections. The kernel opens one socket and one blk-mq
// hardware queue per connection; beyond the CPU count of a thin client more only loads the
// server, and a three-digit value is a typo.
const maxConnections = 64

// buildKnobs reads nbdroot.connections/timeout/deadconn and the winning dialect's NBD
// options (dracut's bs= and timeout=). Our knobs win over dracut's NBDOPTS.
func (b *builder) buildKnobs() error {
	n := &b.plan.NBD
	if w := b.win; w != nil {
		if w.timeout != 0 {
			n.Timeout = w.timeout
			b.src("nbd.timeout", w.source)
		}
		if w.blockSize != 0 {
			n.BlockSize = w.blockSize
			b.src("nbd.block_size", w.source)
		}
		for _, o := range w.ignored {
			b.note("NBD option %q of %s is an nbd-client option nbdroot does not use; ignored", o, w.source)
		}
	}
	if p, ok := b.get("nbdroot.connections"); ok {
		const form = "nbdroot.connections=N with N 1-64"
		if !allDigits(p.Value) || len(p.Value) > 2 {
			return perr(p.Name, p.Value, "not a number of connections", form)
		}
		c, _ := strconv.Atoi(p.Value)
		if c < 1 || c > maxConnections {
			return perr(p.Name, p.Value, "must be 1-64", form)
		}
		n.Connections = c
		b.src("nbd.connections", p.String())
	}
	for _, k := range []struct {
		param, key string
		dst        *time.Duration
	}{
		{"nbdroot.timeout", "nbd.timeout", &n.Timeout},
		{"nbdroot.deadconn", "nbd.dead_conn_timeout", &n.DeadConnTimeout},
		{"nbdroot.connect", "nbd.connect_timeout", &n.ConnectTimeout},
	} {
		p, ok := b.get(k.param)
		if !ok {
			continue
		}
		d, r := parseSeconds(p.Value, time.Second)
		if r != "" {
			return perr(p.Name, p.Value, r, k.param+"=SECONDS or a duration (30, 30s, 2m)")
		}
		*k.dst = d
		b.src(k.key, p.String())
	}
	if p, ok := b.get("nbdroot.tries"); ok {
		const form = "nbdroot.tries=N with N 1-99"
		t, err := strconv.Atoi(p.Value)
		if err != nil || !allDigits(p.Value) || t < 1 || t > 99 {
			return perr(p.Name, p.Value, "not a number of tries from 1 to 99", form)
		}
		b.plan.Tries = t
		b.src("tries", p.String())
	}
	return nil
}

// buildDevice decides the NBD device: root=/dev/nbdN[pM] (its base device), nbddev=,
// cryptdevice=/dev/nbdN[pM] — which must agree, since one device is attached — then the
// device of the winning dialect (Debian's third field, which root= overrides as Debian
// documents), then /dev/nbd0.
func (b *builder) buildDevice() error {
	if p, ok := b.get("root"); ok && !strings.HasPrefix(p.Value, "nbd:") && p.Value != "dhcp" {
		r, err := parseRootDevice(p.Value)
		if err != nil {
			return err
		}
		b.root = r
	}
	type claim struct {
		dev string
		p   Param
	}
	var claims []claim
	if b.root != nil && b.root.kind == rootNBD {
		claims = append(claims, claim{b.root.nbdBase, b.last["root"]})
	}
	if p, ok := b.get("nbddev"); ok {
		dev, err := parseNBDDevice(p.Name, p.Value)
		if err != nil {
			return err
		}
		claims = append(claims, claim{dev, p})
	}
	if p, ok := b.get("cryptdevice"); ok {
		dev, _, _ := strings.Cut(p.Value, ":")
		if name, found := strings.CutPrefix(dev, "/dev/"); found && strings.HasPrefix(name, "nbd") {
			base, _, ok := splitNBDName(name)
			if !ok {
				return perr(p.Name, p.Value, "not an NBD device or partition name (nbdN, nbdNpM)", formCryptDevice)
			}
			claims = append(claims, claim{"/dev/" + base, p})
		}
	}
	n := &b.plan.NBD
	for i, c := range claims {
		if i == 0 {
			n.Device = c.dev
			b.src("nbd.device", c.p.String())
			continue
		}
		if c.dev != n.Device {
			return perr(c.p.Name, c.p.Value, "needs "+c.dev+" but "+claims[0].p.String()+" needs "+n.Device+"; a boot attaches one NBD device", formNBDDevice)
		}
	}
	if w := b.win; w != nil && w.device != "" {
		switch {
		case n.Device == "":
			n.Device = w.device
			b.src("nbd.device", w.source)
		case n.Device != w.device:
			b.note("device %s of %s is overridden by %s (root= takes precedence, as Debian documents)", w.device, w.source, b.plan.Sources["nbd.device"])
		}
	}
	if n.Device == "" {
		n.Device = DefaultDevice
		b.src("nbd.device", "default: no root=/dev/nbdN, nbddev= or cryptdevice=/dev/nbdN")
	}
	return nil
}

// buildCrypt reads cryptdevice= and cryptkey=.
func (b *builder) buildCrypt() error {
	if err := b.buildSystemdLUKS(); err != nil {
		return err
	}
	p, ok := b.get("cryptdevice")
	if !ok {
		if k, ok := b.get("cryptkey"); ok {
			b.note("%s is ignored without cryptdevice=", k.String())
		}
		return nil
	}
	c, notes, err := parseCryptDevice(p.Value)
	if err != nil {
		return err
	}
	b.plan.Notes = append(b.plan.Notes, notes...)
	b.plan.Crypt = c
	b.src("crypt", p.String())
	if k, ok := b.get("cryptkey"); ok {
		key, err := parseCryptKey(k.Value)
		if err != nil {
			return err
		}
		c.Key = key
		b.src("crypt.key", k.String())
	}
	return nil
}

// buildRoot decides the root device: root= when it names a device; the NBD device itself
// for dracut's root=nbd:/root=dhcp/netroot= (dracut mounts /dev/nbd0) and for Debian's
// device-naming nbdroot=SERVER,NAME,nbdN or nbddev= without root=; otherwise root= is
// missing.
func (b *builder) buildRoot() error {
	r := &b.plan.Root
	if b.root != nil {
		r.Device = b.root.device
		b.src("root.device", b.last["root"].String())
		if b.root.kind == rootMapper && !b.cryptNames(b.root.mapperName) && b.root.vg == "" {
			c := b.plan.Crypt
			if c == nil {
				return perr("root", b.root.device, "needs cryptdevice=DEVICE:"+b.root.mapperName+" (nbdroot creates LUKS mappings and LVM2 volumes VG-LV, and this name is neither)", formCryptDevice)
			}
			return perr("root", b.root.device, "names mapping "+b.root.mapperName+" but cryptdevice= opens "+c.Name, "root=/dev/mapper/"+c.Name)
		}
		return nil
	}
	if p, ok := b.get("root"); ok {
		// root=nbd:… or root=dhcp (dracut): the root is the NBD device.
		r.Device = b.plan.NBD.Device
		b.src("root.device", p.String()+" (the NBD device)")
		return nil
	}
	for _, p := range b.netroots {
		if strings.HasPrefix(p.Value, "nbd:") || p.Value == "dhcp" {
			r.Device = b.plan.NBD.Device
			b.src("root.device", p.String()+" (the NBD device)")
			return nil
		}
	}
	if p, ok := b.get("nbddev"); ok {
		r.Device = b.plan.NBD.Device
		b.src("root.device", p.String())
		return nil
	}
	if w := b.win; w != nil && w.device != "" {
		r.Device = w.device
		b.src("root.device", w.source)
		return nil
	}
	return missing("root", "nothing names the root file system", formRoot)
}

// buildMount decides the file system type, mount options and read-only/read-write mode.
//
// rootfstype= and rootflags= win over the FSTYPE and ROOTFLAGS of dracut's root=nbd:. The
// mode is read-only unless something says rw — the kernel's default (root_mountflags =
// MS_RDONLY), kept by every dialect — and the bare ro/rw words win over ro/rw inside
// rootflags=, which win over those in dracut's ROOTFLAGS (nbdroot.sh: "ro/rw on the
// cmdline override").
func (b *builder) buildMount() error {
	r := &b.plan.Root
	w := b.win
	if p, ok := b.get("rootfstype"); ok {
		if reason := checkFSType(p.Value); reason != "" {
			return perr(p.Name, p.Value, reason, "rootfstype=TYPE (ext4, xfs, btrfs, …)")
		}
		r.FSType = p.Value
		b.src("root.fstype", p.String())
	} else if w != nil && w.fstype != "" {
		r.FSType = w.fstype
		b.src("root.fstype", w.source)
	}
	if r.FSType == "" {
		b.src("root.fstype", "default: no rootfstype=")
	}
	var rw *bool
	rwSource := ""
	if w != nil {
		if len(w.flags) > 0 {
			r.Flags = strings.Join(w.flags, ",")
			b.src("root.flags", w.source)
		}
		if w.rw != nil {
			rw, rwSource = w.rw, w.source
		}
	}
	if p, ok := b.get("rootflags"); ok {
		flags, frw := splitRootFlags(p.Value)
		r.Flags = strings.Join(flags, ",")
		b.src("root.flags", p.String())
		if frw != nil {
			rw, rwSource = frw, p.String()
		}
	}
	switch {
	case b.rwWord != "":
		r.RW = b.rwWord == "rw"
		b.src("root.rw", b.rwWord)
	case rw != nil:
		r.RW = *rw
		b.src("root.rw", rwSource)
	default:
		b.src("root.rw", "default: the kernel mounts the root read-only unless rw")
	}
	return nil
}

// buildMisc reads init=, rootdelay=, the break/shell knobs and nbdroot.debug.
func (b *builder) buildMisc() error {
	b.plan.Init = DefaultInit
	b.src("init", "default: no init=")
	if p, ok := b.get("init"); ok {
		if !strings.HasPrefix(p.Value, "/") || len(p.Value) > 4096 || strings.ContainsRune(p.Value, 0) {
			return perr(p.Name, p.Value, "must be an absolute path", "init=/PATH/TO/INIT")
		}
		b.plan.Init = p.Value
		b.src("init", p.String())
	}
	if p, ok := b.get("rootdelay"); ok {
		if !allDigits(p.Value) {
			return perr(p.Name, p.Value, "not a whole number of seconds", "rootdelay=SECONDS")
		}
		d, r := parseSeconds(p.Value, 0)
		if r != "" {
			return perr(p.Name, p.Value, r, "rootdelay=SECONDS")
		}
		b.plan.RootDelay = d
		b.src("rootdelay", p.String())
	}
	if p, ok := b.get("nbdroot.debug"); ok {
		v, err := parseBool(p)
		if err != nil {
			return err
		}
		b.plan.Debug = v
		b.src("debug", p.String())
	}
	// Break: nbdroot.break= > nbdroot.shell > rd.break, most specific and ours first.
	if p, ok := b.get("rd.break"); ok {
		if err := b.setBreak(p, p.Value); err != nil {
			return err
		}
	}
	if p, ok := b.get("nbdroot.shell"); ok {
		v, err := parseBool(p)
		if err != nil {
			return err
		}
		if v {
			b.plan.Break = "switch_root"
			b.src("break", p.String())
		}
	}
	if p, ok := b.get("nbdroot.break"); ok {
		if p.Value == "" {
			return perr(p.Name, p.Value, "no hook named", "nbdroot.break="+strings.Join(breakPoints, "|"))
		}
		if err := b.setBreak(p, p.Value); err != nil {
			return err
		}
	}
	return nil
}

// setBreak sets Plan.Break from rd.break[=HOOK] or nbdroot.break=HOOK. A bare rd.break stops
// before switch_root, as in dracut.
func (b *builder) setBreak(p Param, hook string) error {
	switch {
	case hook == "":
		hook = "switch_root"
	case dracutBreaks[hook] != "":
		hook = dracutBreaks[hook]
	default:
		known := false
		for _, h := range breakPoints {
			known = known || h == hook
		}
		if !known {
			return perr(p.Name, p.Value, "unknown break point", p.Name+"[="+strings.Join(breakPoints, "|")+"] or a dracut hook (pre-udev, pre-trigger, initqueue, pre-mount, mount, pre-pivot, cleanup)")
		}
	}
	b.plan.Break = hook
	b.src("break", p.String())
	return nil
}

// parseBool reads a flag parameter: bare, or =1/0, yes/no, true/false, on/off.
func parseBool(p Param) (bool, error) {
	if !p.HasValue {
		return true, nil
	}
	switch strings.ToLower(p.Value) {
	case "", "1", "y", "yes", "true", "on":
		return true, nil
	case "0", "n", "no", "false", "off":
		return false, nil
	}
	return false, perr(p.Name, p.Value, "not a yes/no value", p.Name+"[=1|0|yes|no|true|false|on|off]")
}

// buildNetwork makes sure the root can be reached: without ip= the network is DHCP on the
// first interface with carrier (dracut and Debian do the same when the root is on the
// network; the kernel default of no network cannot boot an NBD root); ip=off everywhere
// cannot reach a server; a server left to DHCP needs a DHCP interface, or a static ip= whose
// SERVER field names it (the kernel's root server, Debian's ROOTSERVER).
func (b *builder) buildNetwork() error {
	pl := b.plan
	if len(pl.IP) == 0 {
		pl.IP = []IPConfig{{Mode: ModeDHCP}}
		b.src("ip[0]", "default: no ip=, DHCP (the root is on the network)")
	}
	var dhcp, static *IPConfig
	staticKey := ""
	for i := range pl.IP {
		c := &pl.IP[i]
		switch {
		case dhcpLike(c.Mode):
			if dhcp == nil {
				dhcp = c
			}
		case c.Mode == ModeStatic:
			if static == nil || (static.Server == "" && c.Server != "") {
				static, staticKey = c, "ip["+strconv.Itoa(i)+"]"
			}
		}
	}
	if dhcp == nil && static == nil {
		p := b.ips[len(b.ips)-1]
		return perr("ip", p.Value, "the network is off but the root is on NBD", formIP)
	}
	n := &pl.NBD
	if !n.FromDHCP || dhcp != nil {
		return nil
	}
	if static.Server != "" {
		n.FromDHCP = false
		n.Host = static.Server
		n.Servers = []Server{{Host: n.Host, Port: n.Port}}
		b.src("nbd.host", pl.Sources[staticKey]+" (its SERVER field: the network is static, so no DHCP root-path can name the server)")
		return nil
	}
	return missing("nbd_server", "no NBD server is named and ip= is static, so no DHCP root-path can name one",
		"nbd_server=HOST[:PORT] | root=nbd:SERVER:PORT | nbdroot=SERVER,NAME | nbd_host=HOST | ip=…:SERVER:… (static)")
}
