package bootparam

import (
	"strconv"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Forms quoted in NBD errors.
const (
	formNBDServer  = "HOST[:PORT], [IPV6]:PORT; several separated by commas"
	formDracut     = "nbd:SERVER:PORT|NAME[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]]"
	formDebian     = "SERVER,PORT|NAME[,nbdN] | SERVER:PORT/NAME | SERVER:/NAME | [IPV6]:PORT/NAME | dhcp"
	formNBDDevice  = "/dev/nbdN or nbdN"
	formExportName = "NAME: up to 4096 bytes of UTF-8"
)

// nbdSpec is what one dialect says about the NBD connection.
type nbdSpec struct {
	// source is the parameter as written, for Sources and Notes.
	source string
	// servers is empty when the server comes from DHCP (fromDHCP).
	servers  []Server
	fromDHCP bool
	// port is set when the dialect gives a port but leaves the server to DHCP
	// (nbdroot=dhcp,10809).
	port      int
	export    string
	hasExport bool
	// device is a /dev/nbdN path or "".
	device string

	// dracut root=nbd: extras.
	fstype    string
	flags     []string // mount options without ro/rw
	rw        *bool    // ro/rw found in ROOTFLAGS
	blockSize int
	timeout   time.Duration
	ignored   []string // NBDOPTS nbdroot does not use
}

// parseServerList parses nbd_server=: one or more HOST[:PORT] separated by commas, tried in
// order (failover).
func parseServerList(param, value string) ([]Server, error) {
	if value == "" {
		return nil, perr(param, value, "no server given", formNBDServer)
	}
	var out []Server
	for _, item := range strings.Split(value, ",") {
		if item == "" {
			return nil, perr(param, value, "empty entry in the server list", formNBDServer)
		}
		s, reason := parseServer(item)
		if reason != "" {
			if strings.Contains(value, ",") {
				reason = strconv.Quote(item) + ": " + reason
			}
			return nil, perr(param, value, reason, formNBDServer)
		}
		out = append(out, s)
	}
	return out, nil
}

// parseNBDDevice accepts /dev/nbdN or nbdN (Debian writes the device without /dev/) and
// returns /dev/nbdN. Minor numbers are decimal without leading zeros, as the kernel names
// them.
func parseNBDDevice(param, value string) (string, error) {
	base, part, ok := splitNBDName(strings.TrimPrefix(value, "/dev/"))
	if !ok || part != "" {
		return "", perr(param, value, "not an NBD device", formNBDDevice)
	}
	return "/dev/" + base, nil
}

// splitNBDName splits "nbd3p2" into "nbd3" and "p2". ok is false when name is not an NBD
// device or partition name.
func splitNBDName(name string) (base, part string, ok bool) {
	rest, found := strings.CutPrefix(name, "nbd")
	if !found {
		return "", "", false
	}
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	num := rest[:n]
	if !validMinor(num) {
		return "", "", false
	}
	base, rest = "nbd"+num, rest[n:]
	if rest == "" {
		return base, "", true
	}
	p, found := strings.CutPrefix(rest, "p")
	if !found || !validMinor(p) || p == "0" {
		return "", "", false
	}
	return base, rest, true
}

// validMinor accepts a decimal device index without leading zeros, small enough for the
// kernel's 20-bit minor numbers.
func validMinor(s string) bool {
	if !allDigits(s) || len(s) > 6 || (len(s) > 1 && s[0] == '0') {
		return false
	}
	n, _ := strconv.Atoi(s)
	return n < 1<<20
}

// parseDracutNBD parses the value of dracut's root=nbd:… or netroot=nbd:… (modules.d/95nbd
// nbdroot.sh): nbd:SERVER:PORT[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]]. SERVER may be [IPV6]. A PORT
// that is not all digits is an export name (nbd-client -name); PORT/NAME gives both (the
// form of older dracut releases). FSTYPE "auto" means probe. ROOTFLAGS is a comma list in
// which ro and rw set the mount mode. NBDOPTS is a comma list for nbd-client, of which
// bs= and timeout= are honoured; the rest are noted and ignored.
func parseDracutNBD(param, value string) (*nbdSpec, error) {
	fail := func(reason string) (*nbdSpec, error) { return nil, perr(param, value, reason, formDracut) }
	rest, ok := strings.CutPrefix(value, "nbd:")
	if !ok {
		return fail("does not start with nbd:")
	}
	spec := &nbdSpec{source: param + "=" + value}
	host, after, bracketed, reason := cutBracket(rest)
	switch {
	case reason != "":
		return fail(reason)
	case !bracketed:
		host, rest, _ = strings.Cut(rest, ":")
	case after != "" && after[0] != ':':
		return fail("unexpected " + strconv.Quote(after) + " after ']'")
	default:
		rest = strings.TrimPrefix(after, ":")
	}
	if r := checkHost(host); r != "" {
		return fail(r)
	}
	portName, rest, _ := strings.Cut(rest, ":")
	srv := Server{Host: host, Port: nbd.DefaultPort}
	if portName != "" {
		pn, ok, r := parsePortName(portName)
		switch {
		case r != "":
			return fail(r)
		case ok:
			if pn.port != 0 {
				srv.Port = pn.port
			}
			spec.export, spec.hasExport = pn.export, pn.hasExport
		default:
			// nbdroot.sh: `[ "$nbdport" -gt 0 ] || nbdport="-name $nbdport"`.
			spec.export, spec.hasExport = portName, true
		}
		if r := checkExport(spec.export); r != "" {
			return fail(r)
		}
	}
	spec.servers = []Server{srv}
	fstype, rest, _ := strings.Cut(rest, ":")
	if fstype != "auto" {
		if r := checkFSType(fstype); r != "" {
			return fail(r)
		}
		spec.fstype = fstype
	}
	flags, opts, _ := strings.Cut(rest, ":")
	spec.flags, spec.rw = splitRootFlags(flags)
	for _, o := range strings.Split(opts, ",") {
		switch {
		case o == "":
		case strings.HasPrefix(o, "bs="):
			bs, r := parseBlockSize(strings.TrimPrefix(o, "bs="))
			if r != "" {
				return fail(r)
			}
			spec.blockSize = bs
		case strings.HasPrefix(o, "timeout="):
			d, r := parseSeconds(strings.TrimPrefix(o, "timeout="), time.Second)
			if r != "" {
				return fail("timeout: " + r)
			}
			spec.timeout = d
		default:
			spec.ignored = append(spec.ignored, o)
		}
	}
	return spec, nil
}

// parseDebianNBD parses Debian's nbdroot= (nbd-client's initramfs script
// scripts/local-top/nbd and README.Debian):
//
//	nbdroot=SERVER,PORT|NAME[,nbdN]    comma form; a numeric second field is a port
//	nbdroot=SERVER[:PORT][/NAME]        colon form; also SERVER:/NAME and SERVER:NAME (LTSP)
//	nbdroot=[IPV6]:PORT/NAME            IPv6 in brackets
//	nbdroot=dhcp or nbdroot=            everything from the DHCP root-path (option 17)
//
// An empty SERVER or "dhcp" takes the server address from DHCP but the rest from the
// command line.
func parseDebianNBD(param, value string) (*nbdSpec, error) {
	fail := func(reason string) (*nbdSpec, error) { return nil, perr(param, value, reason, formDebian) }
	spec := &nbdSpec{source: param + "=" + value}
	if value == "" || value == "dhcp" {
		spec.fromDHCP = true
		return spec, nil
	}
	var host, portName string
	if strings.Contains(value, ",") {
		f := strings.Split(value, ",")
		if len(f) > 3 {
			return fail("more than 3 comma-separated fields")
		}
		var reason string
		if host, reason = unbracket(f[0]); reason != "" {
			return fail(reason)
		}
		portName = f[1]
		if portName == "" {
			return fail("the second field (port or export name) is empty")
		}
		if len(f) == 3 && f[2] != "" {
			dev, err := parseNBDDevice(param, f[2])
			if err != nil {
				return fail("third field " + strconv.Quote(f[2]) + " is not an NBD device (nbdN)")
			}
			spec.device = dev
		}
		if allDigits(portName) {
			p, r := parsePort(portName)
			if r != "" {
				return fail(r)
			}
			spec.port = p
		} else {
			spec.export, spec.hasExport = portName, true
		}
	} else {
		h, rest, bracketed, reason := cutBracket(value)
		switch {
		case reason != "":
			return fail(reason)
		case bracketed:
			host = h
		default:
			i := strings.IndexAny(rest, ":/")
			if i < 0 {
				i = len(rest)
			}
			host, rest = rest[:i], rest[i:]
		}
		switch {
		case rest == "":
		case rest[0] == '/':
			spec.export, spec.hasExport = rest[1:], true
		case rest[0] == ':':
			rest = rest[1:]
			pn, ok, r := parsePortName(rest)
			port, _, _ := strings.Cut(rest, "/")
			switch {
			case r != "":
				return fail(r)
			case ok:
				spec.port, spec.export, spec.hasExport = pn.port, pn.export, pn.hasExport
			case port == "":
				return fail("':' without a port or export name")
			case strings.Contains(port, ":"):
				return fail("several ':' after the server; write an IPv6 address as [ADDR]")
			default:
				// LTSP writes nbdroot=SERVER:NAME; a name is never all digits.
				spec.export, spec.hasExport = rest, true
			}
		default:
			return fail("unexpected " + strconv.Quote(rest) + " after the server")
		}
	}
	if spec.hasExport {
		if spec.export == "" {
			return fail("the export name is empty")
		}
		if r := checkExport(spec.export); r != "" {
			return fail(r)
		}
	}
	if host == "" || host == "dhcp" {
		spec.fromDHCP = true
		return spec, nil
	}
	if r := checkHost(host); r != "" {
		if strings.Count(host, ":") > 0 {
			r += "; write an IPv6 address as [ADDR]"
		}
		return fail(r)
	}
	port := nbd.DefaultPort
	if spec.port != 0 {
		port = spec.port
	}
	spec.servers = []Server{{Host: host, Port: port}}
	return spec, nil
}

// portName is what PORT[/NAME] or /NAME says.
type portName struct {
	port      int // 0 when not given
	export    string
	hasExport bool
}

// parsePortName reads the PORT[/NAME] and /NAME that follow a server in dracut's and
// Debian's colon forms. ok is false for anything else, which each dialect reads its own way
// (dracut and LTSP take a bare NAME).
func parsePortName(s string) (pn portName, ok bool, reason string) {
	port, name, hasName := strings.Cut(s, "/")
	switch {
	case port == "" && hasName:
		return portName{export: name, hasExport: true}, true, ""
	case allDigits(port):
		p, r := parsePort(port)
		if r != "" {
			return portName{}, false, r
		}
		return portName{port: p, export: name, hasExport: hasName}, true, ""
	}
	return portName{}, false, ""
}

// splitRootFlags splits a comma list of mount options and pulls out ro and rw, the last of
// which decides the mode (as dracut's nbdroot.sh does with ROOTFLAGS).
func splitRootFlags(s string) (flags []string, rw *bool) {
	for _, f := range strings.Split(s, ",") {
		switch f {
		case "":
		case "ro":
			v := false
			rw = &v
		case "rw":
			v := true
			rw = &v
		default:
			flags = append(flags, f)
		}
	}
	return flags, rw
}

// checkFSType accepts a file system type name as mount(2) takes it: letters, digits, '.',
// '_' and '-' (fuse.sshfs, ext4, vfat, btrfs).
func checkFSType(s string) string {
	if s == "" {
		return ""
	}
	if len(s) > 64 {
		return "file system type is too long"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return "file system type " + strconv.Quote(s) + " is not a file system name"
		}
	}
	return ""
}

// parseBlockSize accepts the block sizes the kernel's nbd driver allows: a power of two from
// 512 to 4096 (nbd_is_valid_blksize: at least 512, at most PAGE_SIZE on x86).
func parseBlockSize(s string) (int, string) {
	switch s {
	case "512", "1024", "2048", "4096":
		n, _ := strconv.Atoi(s)
		return n, ""
	}
	return 0, "block size " + strconv.Quote(s) + " must be 512, 1024, 2048 or 4096"
}

// maxTimeout bounds timeouts and delays: a day is longer than any sane boot wait, and a
// bound keeps a mistyped number from overflowing time.Duration.
const maxTimeout = 24 * time.Hour

// parseSeconds parses a whole number of seconds ("30") or a Go duration in whole seconds
// ("30s", "2m", "1m30s"), at least min and at most maxTimeout. Whole seconds, because the
// kernel's NBD timeouts (NBD_ATTR_TIMEOUT, NBD_ATTR_DEAD_CONN_TIMEOUT) are seconds.
func parseSeconds(s string, min time.Duration) (time.Duration, string) {
	var d time.Duration
	if allDigits(s) {
		if len(s) > 6 {
			return 0, "must be at most 24h"
		}
		n, _ := strconv.Atoi(s)
		d = time.Duration(n) * time.Second
	} else {
		var err error
		d, err = time.ParseDuration(s)
		if err != nil {
			return 0, strconv.Quote(s) + " is neither seconds nor a duration such as 30s or 2m"
		}
		if d%time.Second != 0 {
			return 0, "must be whole seconds"
		}
	}
	if d < min {
		if min == time.Second {
			return 0, "must be at least 1s"
		}
		return 0, "must not be negative"
	}
	if d > maxTimeout {
		return 0, "must be at most 24h"
	}
	return d, ""
}
