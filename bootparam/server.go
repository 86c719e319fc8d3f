package bootparam

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nbdroot/nbdroot/nbd"
)

// formServer is the form of one server address, quoted in ParseServer's errors.
const formServer = "HOST[:PORT], [IPV6]:PORT"

// ParseServer parses one NBD server address the way every dialect and `nbdroot attach` write
// it: HOST[:PORT], [IPV6][:PORT] or a bare IPv6 address (which cannot carry a port), the port
// defaulting to nbd.DefaultPort. HOST must be an address a server can have or an RFC 1123
// name. Its errors are *ParamError with Param "server"; callers that know the parameter
// (nbd_server=, root-path) build their own from Reason.
//
// This is the one parser of the server syntax: the command line's dialects, the DHCP
// root-path and the host tool all use it.
func ParseServer(s string) (Server, error) {
	srv, reason := parseServer(s)
	if reason != "" {
		return Server{}, perr("server", s, reason, formServer)
	}
	return srv, nil
}

// String formats the server as host:port for dialling (IPv6 in brackets).
func (s Server) String() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// maxExportLen is the longest export name the NBD protocol allows (doc/proto.md: "The
// export name ... MUST NOT exceed 4096 bytes").
const maxExportLen = 4096

// parsePort parses a decimal TCP port. It returns a reason when s is not one.
func parsePort(s string) (int, string) {
	if s == "" {
		return 0, "port is empty"
	}
	if !allDigits(s) {
		return 0, "port " + strconv.Quote(s) + " is not a number"
	}
	n, ok := decimalIn(s, 1, 65535)
	if !ok {
		return 0, "port must be 1-65535"
	}
	return n, ""
}

// decimalIn parses a string of digits (allDigits) as a number from min to max; ok is false
// outside (also for a number too long to parse).
func decimalIn(s string, min, max int) (int, bool) {
	if !allDigits(s) || len(s) > len(strconv.Itoa(max)) {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= min && n <= max
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkHost accepts an IPv4 address, an IPv6 address (brackets already removed, zone
// allowed) or a DNS host name (RFC 1123 labels). It returns a reason when host is none of
// them. A name whose last label is all digits is refused (RFC 3696 section 2: top-level
// labels are never numeric) so that a mistyped address such as 10.0.0.256 is reported
// rather than looked up in DNS.
func checkHost(host string) string {
	if host == "" {
		return "host is empty"
	}
	if strings.Contains(host, ":") {
		a, err := netip.ParseAddr(host)
		if err != nil || !a.Is6() {
			return "host " + strconv.Quote(host) + " is not an IPv6 address"
		}
		return checkUnicast(a)
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return checkUnicast(a)
	}
	name := strings.TrimSuffix(host, ".")
	if len(name) == 0 || len(name) > 253 {
		return "host name must be 1-253 characters"
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 {
			return "host " + strconv.Quote(host) + " has an empty or over-long (>63) label"
		}
		if l[0] == '-' || l[len(l)-1] == '-' {
			return "host " + strconv.Quote(host) + " has a label starting or ending with '-'"
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return "host " + strconv.Quote(host) + " is neither an IP address nor a DNS name"
			}
		}
	}
	if allDigits(labels[len(labels)-1]) {
		return "host " + strconv.Quote(host) + " is not a valid IPv4 address"
	}
	return ""
}

// cutBracket splits a bracketed IPv6 address off the front of s: "[fd00::1]:10809" gives
// "fd00::1" and ":10809". ok is false when s does not start with '['. Only an IPv6 address
// goes in brackets (the brackets exist to tell its colons from the port's); what follows
// the ']' is the caller's to check. This is the one place that reads brackets.
func cutBracket(s string) (host, rest string, ok bool, reason string) {
	if !strings.HasPrefix(s, "[") {
		return "", s, false, ""
	}
	end := strings.IndexByte(s, ']')
	if end < 0 {
		return "", "", true, "'[' without ']'"
	}
	host = s[1:end]
	if !strings.Contains(host, ":") {
		return "", "", true, "only an IPv6 address goes in brackets"
	}
	return host, s[end+1:], true, ""
}

// unbracket accepts a host written alone, with or without brackets ([IPV6] or IPV6), as
// nbd-client's nbd_host= and Debian's comma form take it.
func unbracket(h string) (string, string) {
	if !strings.HasPrefix(h, "[") && !strings.HasSuffix(h, "]") {
		return h, ""
	}
	host, rest, _, reason := cutBracket(h)
	if reason != "" || rest != "" {
		return "", "only an IPv6 address goes in brackets, as [ADDR]"
	}
	return host, ""
}

// splitHostPort splits HOST[:PORT], [IPV6][:PORT] or a bare IPv6 address (which cannot carry
// a port: its colons would be ambiguous). port is "" when absent. It does not validate.
func splitHostPort(s string) (host, port string, reason string) {
	if host, rest, ok, reason := cutBracket(s); ok {
		switch {
		case reason != "":
			return "", "", reason
		case rest == "":
			return host, "", ""
		case rest[0] == ':':
			if rest[1:] == "" {
				return "", "", "':' without a port"
			}
			return host, rest[1:], ""
		default:
			return "", "", "unexpected " + strconv.Quote(rest) + " after ']'"
		}
	}
	switch strings.Count(s, ":") {
	case 0:
		return s, "", ""
	case 1:
		i := strings.IndexByte(s, ':')
		if s[i+1:] == "" {
			return "", "", "':' without a port"
		}
		return s[:i], s[i+1:], ""
	default:
		// Several colons and no brackets: only a whole IPv6 address makes sense.
		return s, "", ""
	}
}

// parseServer parses one HOST[:PORT] / [IPV6]:PORT / IPV6 server address, port defaulting
// to nbd.DefaultPort; ParseServer is its exported form.
func parseServer(s string) (Server, string) {
	host, port, reason := splitHostPort(s)
	if reason != "" {
		return Server{}, reason
	}
	if r := checkHost(host); r != "" {
		if strings.Count(s, ":") > 1 && !strings.HasPrefix(s, "[") {
			return Server{}, r + "; write an IPv6 address with a port as [ADDR]:PORT"
		}
		return Server{}, r
	}
	srv := Server{Host: host, Port: nbd.DefaultPort}
	if port != "" {
		p, r := parsePort(port)
		if r != "" {
			return Server{}, r
		}
		srv.Port = p
	}
	return srv, ""
}

// checkExport validates an export name: UTF-8 without NUL, at most 4096 bytes
// (NBD doc/proto.md, "Export names").
func checkExport(name string) string {
	if len(name) > maxExportLen {
		return "export name is longer than 4096 bytes"
	}
	if !utf8.ValidString(name) {
		return "export name is not valid UTF-8"
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "export name contains a NUL byte"
	}
	return ""
}

// checkUnicast refuses addresses no server can have: unspecified (0.0.0.0, ::), multicast
// and the IPv4 limited broadcast address.
func checkUnicast(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "host " + a.String() + " is the unspecified address, not a server"
	case a.IsMulticast():
		return "host " + a.String() + " is a multicast address, not a server"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "host 255.255.255.255 is the broadcast address, not a server"
	}
	return ""
}
