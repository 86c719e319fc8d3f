package nbdserver

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// ServerFile is what an nbd-server configuration file (nbd-server(5), "-C FILE") says, in
// our terms: the [generic] settings and one Export per other section.
type ServerFile struct {
	// ListenAddrs are the local addresses from listenaddr (empty: all of them).
	ListenAddrs []string
	// Port is the TCP port ("10809" unless set).
	Port string
	// UnixSocket is the unixsock path; with it and without DualListen there is no TCP.
	UnixSocket string
	DualListen bool
	// AllowList says whether NBD_OPT_LIST is answered (nbd-server's default: no).
	AllowList bool
	// TLS files and mode (force_tls: TLS required; a keyfile alone: TLS allowed).
	CertFile, KeyFile, CACertFile string
	ForceTLS                      bool
	// User and Group to switch to after listening, before opening images.
	User, Group string
	// MaxConnections bounds all connections (0: no bound given).
	MaxConnections int
	Exports        []Export
	// LogFile is where the log goes instead of standard error (logfile).
	LogFile string
	// Warnings lists settings that were accepted but have no effect here, for the log.
	Warnings []string
}

// INIError is a problem at a line of a configuration file.
type INIError struct {
	File string
	Line int
	Err  error
}

func (e *INIError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("%s: %v", e.File, e.Err)
}

// Unwrap returns the underlying error.
func (e *INIError) Unwrap() error { return e.Err }

// iniSection is one [section] of key = value lines, in order.
type iniSection struct {
	name string
	file string
	line int
	keys []iniKey
}

type iniKey struct {
	key, val string
	line     int
}

// maxINISize bounds what we read from a configuration file.
const maxINISize = 4 << 20

// parseINI splits a file into sections following GLib's key file rules, which nbd-server uses:
// "#" starts a comment line, "[name]" a section, "key = value" an option; whitespace around
// the key and before the value is dropped; values may use \s \t \n \r \\ escapes.
func parseINI(r io.Reader, file string) ([]iniSection, error) {
	var secs []iniSection
	sc := bufio.NewScanner(io.LimitReader(r, maxINISize))
	sc.Buffer(make([]byte, 0, 4096), 64<<10)
	line := 0
	for sc.Scan() {
		line++
		raw := sc.Text()
		if line == 1 {
			raw = strings.TrimPrefix(raw, "\uFEFF")
		}
		t := strings.TrimLeft(raw, " \t")
		if t == "" || t[0] == '#' || t[0] == ';' {
			continue
		}
		if t[0] == '[' {
			t = strings.TrimRight(t, " \t\r")
			if !strings.HasSuffix(t, "]") || len(t) < 3 {
				return nil, &INIError{file, line, fmt.Errorf("bad section header %q", t)}
			}
			name := t[1 : len(t)-1]
			if strings.ContainsAny(name, "[]") {
				return nil, &INIError{file, line, fmt.Errorf("bad section header %q", t)}
			}
			for _, s := range secs {
				if s.name == name {
					return nil, &INIError{file, line, fmt.Errorf("section [%s] defined twice (also line %d)", name, s.line)}
				}
			}
			secs = append(secs, iniSection{name: name, file: file, line: line})
			continue
		}
		key, val, ok := strings.Cut(t, "=")
		if !ok {
			return nil, &INIError{file, line, fmt.Errorf("want key = value, got %q", t)}
		}
		key = strings.TrimSpace(key)
		if key == "" {
			return nil, &INIError{file, line, errors.New("empty key")}
		}
		if len(secs) == 0 {
			return nil, &INIError{file, line, fmt.Errorf("option %q outside any section", key)}
		}
		v, err := unescapeINI(strings.TrimRight(strings.TrimLeft(val, " \t"), "\r"))
		if err != nil {
			return nil, &INIError{file, line, fmt.Errorf("%s: %w", key, err)}
		}
		s := &secs[len(secs)-1]
		for _, k := range s.keys {
			if k.key == key {
				return nil, &INIError{file, line, fmt.Errorf("%s set twice in [%s] (also line %d)", key, s.name, k.line)}
			}
		}
		s.keys = append(s.keys, iniKey{key, v, line})
	}
	if err := sc.Err(); err != nil {
		return nil, &INIError{file, line + 1, err}
	}
	return secs, nil
}

func unescapeINI(s string) (string, error) {
	if !strings.Contains(s, `\`) {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			b.WriteByte(s[i])
			continue
		}
		i++
		if i == len(s) {
			return "", errors.New("value ends in a lone backslash")
		}
		switch s[i] {
		case 's':
			b.WriteByte(' ')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case '\\':
			b.WriteByte('\\')
		default:
			return "", fmt.Errorf("unknown escape \\%c", s[i])
		}
	}
	return b.String(), nil
}

func iniBool(k iniKey) (bool, error) {
	switch strings.TrimSpace(k.val) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, fmt.Errorf("%s: %q is not a boolean (true or false)", k.key, k.val)
}

func iniInt(k iniKey) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(k.val))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s: %q is not a non-negative integer", k.key, k.val)
	}
	return n, nil
}

// LoadServerFile reads an nbd-server configuration file, its includedir and the authfiles
// it names. Relative paths are refused, as nbd-server refuses them.
func LoadServerFile(path string) (*ServerFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sf, err := ParseServerFile(strings.NewReader(string(data)), path, os.ReadFile, readDir)
	if err != nil {
		return nil, err
	}
	return sf, nil
}

func readDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if !e.IsDir() && strings.HasSuffix(e.Name(), ".conf") {
			names = append(names, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(names)
	return names, nil
}

// ParseServerFile parses configuration text. readFile loads authfiles and included files;
// listConf lists the *.conf files of an includedir. Either may be nil to forbid them.
func ParseServerFile(r io.Reader, file string, readFile func(string) ([]byte, error), listConf func(string) ([]string, error)) (*ServerFile, error) {
	secs, err := parseINI(r, file)
	if err != nil {
		return nil, err
	}
	if len(secs) == 0 || secs[0].name != "generic" {
		return nil, &INIError{file, 0, errors.New("the first section must be [generic] (nbd-server(5))")}
	}
	sf := &ServerFile{Port: strconv.Itoa(nbd.DefaultPort)}
	includeDir := ""
	for _, k := range secs[0].keys {
		if err := sf.generic(k, &includeDir); err != nil {
			return nil, &INIError{file, k.line, err}
		}
	}
	exportSecs := secs[1:]
	if includeDir != "" {
		if listConf == nil || readFile == nil {
			return nil, &INIError{file, 0, errors.New("includedir is not allowed here")}
		}
		files, err := listConf(includeDir)
		if err != nil {
			return nil, &INIError{file, 0, fmt.Errorf("includedir: %w", err)}
		}
		for _, f := range files {
			data, err := readFile(f)
			if err != nil {
				return nil, &INIError{f, 0, err}
			}
			more, err := parseINI(strings.NewReader(string(data)), f)
			if err != nil {
				return nil, err
			}
			for _, s := range more {
				if s.name == "generic" {
					return nil, &INIError{f, s.line, errors.New("[generic] may only appear in the main file")}
				}
				for _, old := range exportSecs {
					if old.name == s.name {
						return nil, &INIError{f, s.line, fmt.Errorf("export [%s] defined twice", s.name)}
					}
				}
			}
			exportSecs = append(exportSecs, more...)
		}
	}
	for _, s := range exportSecs {
		e, warns, err := exportFromINI(s, readFile)
		if err != nil {
			return nil, err
		}
		for _, w := range warns {
			sf.Warnings = append(sf.Warnings, fmt.Sprintf("%s: [%s] %s", s.file, s.name, w))
		}
		sf.Exports = append(sf.Exports, e)
	}
	if len(sf.Exports) == 0 {
		return nil, &INIError{file, 0, errors.New("no exports configured")}
	}
	return sf, nil
}

// generic applies one [generic] option.
func (sf *ServerFile) generic(k iniKey, includeDir *string) error {
	var err error
	switch k.key {
	case "allowlist":
		sf.AllowList, err = iniBool(k)
	case "listenaddr":
		sf.ListenAddrs = nil
		for _, a := range strings.Split(k.val, ",") {
			if a = strings.TrimSpace(a); a != "" {
				if _, perr := netip.ParseAddr(a); perr != nil {
					return fmt.Errorf("listenaddr: %q is not an IP address", a)
				}
				sf.ListenAddrs = append(sf.ListenAddrs, a)
			}
		}
	case "port":
		sf.Port = strings.TrimSpace(k.val)
		if sf.Port == "" {
			return errors.New("port: empty")
		}
	case "unixsock":
		sf.UnixSocket = k.val
	case "duallisten":
		sf.DualListen, err = iniBool(k)
	case "certfile":
		sf.CertFile = k.val
	case "keyfile":
		sf.KeyFile = k.val
	case "cacertfile":
		sf.CACertFile = k.val
	case "force_tls":
		sf.ForceTLS, err = iniBool(k)
	case "user":
		sf.User = strings.TrimSpace(k.val)
	case "group":
		sf.Group = strings.TrimSpace(k.val)
	case "includedir":
		*includeDir = k.val
		if !filepath.IsAbs(k.val) {
			return fmt.Errorf("includedir %q is not an absolute path", k.val)
		}
	case "maxconnections":
		sf.MaxConnections, err = iniInt(k)
	case "oldstyle":
		var on bool
		if on, err = iniBool(k); err == nil && on {
			return errors.New("oldstyle: the oldstyle handshake is not supported (nor by nbd-server since 3.10)")
		}
	case "logfile":
		sf.LogFile = k.val
	case "max_threads", "splice", "tlsprio", "pidfile":
		sf.Warnings = append(sf.Warnings, fmt.Sprintf("[generic] %s is ignored (%s)", k.key, genericIgnored[k.key]))
	default:
		sf.Warnings = append(sf.Warnings, fmt.Sprintf("[generic] unknown option %s ignored", k.key))
	}
	return err
}

var genericIgnored = map[string]string{
	"max_threads": "workers are sized per connection",
	"splice":      "reads are served from the page cache without it",
	"tlsprio":     "GnuTLS priority strings do not apply; TLS 1.2 or later is required",
	"pidfile":     "use the systemd unit or your supervisor",
}

// exportFromINI turns an export section into an Export. Options whose effect we cannot give
// (scripts, multi-file images, virtualisation) are errors rather than silently ignored: an
// admin relying on them must know.
func exportFromINI(s iniSection, readFile func(string) ([]byte, error)) (Export, []string, error) {
	e := Export{Name: s.name}
	var warns []string
	fail := func(k iniKey, err error) (Export, []string, error) {
		return Export{}, nil, &INIError{s.file, k.line, fmt.Errorf("[%s] %w", s.name, err)}
	}
	var authfile string
	var authLine, treeLine int
	for _, k := range s.keys {
		var err error
		var on bool
		switch k.key {
		case "exportname":
			e.Path = k.val
			if strings.Contains(k.val, "%s") {
				err = errors.New("exportname with %s (virtstyle per-client files) is not supported; use a cow export with a cowdir")
			}
		case "readonly":
			e.ReadOnly, err = iniBool(k)
		case "copyonwrite":
			e.Cow, err = iniBool(k)
		case "cowdir":
			e.CowDir = k.val
		case "cowpersistent": // ours: keep overlays in cowdir across disconnects
			e.CowPersistent, err = iniBool(k)
		case "authfile":
			authfile, authLine = k.val, k.line
		case "maxconnections":
			e.MaxConnections, err = iniInt(k)
		case "trim":
			on, err = iniBool(k)
			e.NoTrim = !on
		case "sync":
			e.Sync, err = iniBool(k)
		case "rotational":
			e.Rotational, err = iniBool(k)
		case "tlsonly", "force_tls":
			e.TLSOnly, err = iniBool(k)
		case "timeout":
			var n int
			n, err = iniInt(k)
			e.IdleTimeout = time.Duration(n) * time.Second
		case "description": // ours
			e.Description = k.val
		case "default": // ours
			e.Default, err = iniBool(k)
		case "shared": // ours
			e.Shared, err = iniBool(k)
		case "rofallback": // ours
			e.ReadOnlyFallback, err = iniBool(k)
		case "allow": // ours: networks and certificate rules inline, comma-separated
			for _, a := range strings.Split(k.val, ",") {
				if a = strings.TrimSpace(a); a == "" {
					continue
				}
				if err = e.addAllow(a); err != nil {
					break
				}
			}
		case "flush", "fua":
			if on, err = iniBool(k); err == nil && !on {
				warns = append(warns, k.key+" = false ignored: FLUSH and FUA are always honoured, which is never less safe")
			}
		case "sparse_cow", "splice", "listenaddr", "transactionlog":
			warns = append(warns, k.key+" ignored")
		case "virtstyle":
			if strings.TrimSpace(k.val) != "none" && strings.TrimSpace(k.val) != "ipliteral" {
				err = fmt.Errorf("virtstyle %q is not supported", k.val)
			}
		case "filesize":
			var n int
			if n, err = iniInt(k); err == nil {
				e.CreateSize = int64(n)
			}
		case "temporary":
			e.Temporary, err = iniBool(k)
		case "treefiles":
			e.Tree, err = iniBool(k)
			treeLine = k.line
		case "multifile", "sdp", "waitfile", "prerun", "postrun":
			if k.key == "prerun" || k.key == "postrun" || k.key == "waitfile" {
				if strings.TrimSpace(k.val) == "" {
					continue
				}
				err = fmt.Errorf("%s is not supported", k.key)
				break
			}
			if on, err = iniBool(k); err == nil && on {
				err = fmt.Errorf("%s is not supported", k.key)
			}
		default:
			warns = append(warns, "unknown option "+k.key+" ignored")
		}
		if err != nil {
			return fail(k, err)
		}
	}
	if e.Path == "" {
		return Export{}, nil, &INIError{s.file, s.line, fmt.Errorf("[%s] has no exportname", s.name)}
	}
	if err := validateTreeExport(&e); err != nil {
		return Export{}, nil, &INIError{s.file, treeLine, fmt.Errorf("[%s] %w", s.name, err)}
	}
	if e.CowDir != "" && !e.Cow {
		warns = append(warns, "cowdir ignored: copyonwrite is off")
		e.CowDir, e.CowPersistent = "", false
	}
	if authfile != "" {
		data, err := readAuthfile(authfile, readFile)
		switch {
		case errors.Is(err, os.ErrNotExist):
			// nbd-server(5): a missing authfile allows everyone.
		case err != nil:
			return Export{}, nil, &INIError{s.file, authLine, fmt.Errorf("[%s] authfile: %w", s.name, err)}
		default:
			nets, err := ParseAuthfile(data)
			if err != nil {
				return Export{}, nil, &INIError{authfile, 0, err}
			}
			e.Allow = append(e.Allow, nets...)
			// An authfile that exists but lists nobody admits nobody.
			e.AllowNone = len(e.Allow) == 0
		}
	}
	return e, warns, nil
}

func readAuthfile(path string, readFile func(string) ([]byte, error)) ([]byte, error) {
	if readFile == nil {
		return nil, errors.New("authfiles are not allowed here")
	}
	return readFile(path)
}

// ParseAuthfile parses an nbd-server authfile: one address or network (CIDR or
// address/netmask) per line; blank lines and anything after "#" are skipped.
func ParseAuthfile(data []byte) ([]netip.Prefix, error) {
	var nets []netip.Prefix
	for i, line := range strings.Split(string(data), "\n") {
		if c := strings.IndexByte(line, '#'); c >= 0 {
			line = line[:c]
		}
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		p, err := ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		nets = append(nets, p)
	}
	return nets, nil
}
