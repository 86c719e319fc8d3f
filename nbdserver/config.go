package nbdserver

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"math"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
)

// TLSMode says whether clients may or must upgrade to TLS (proto.md "TLS support").
type TLSMode int

const (
	// TLSOff never offers TLS: NBD_OPT_STARTTLS gets NBD_REP_ERR_POLICY (NOTLS mode).
	TLSOff TLSMode = iota
	// TLSAllow lets clients upgrade; exports marked TLSOnly need it (SELECTIVETLS mode).
	TLSAllow
	// TLSRequire refuses every option but STARTTLS and ABORT before TLS (FORCEDTLS mode).
	TLSRequire
)

func (m TLSMode) String() string {
	switch m {
	case TLSOff:
		return "off"
	case TLSAllow:
		return "allow"
	case TLSRequire:
		return "require"
	}
	return fmt.Sprintf("TLSMode(%d)", int(m))
}

// ParseTLSMode parses "off", "allow" or "require".
func ParseTLSMode(s string) (TLSMode, error) {
	switch s {
	case "off":
		return TLSOff, nil
	case "allow":
		return TLSAllow, nil
	case "require":
		return TLSRequire, nil
	}
	return 0, fmt.Errorf("TLS mode %q: want off, allow or require", s)
}

// Export describes one export: a name clients ask for and the image behind it.
type Export struct {
	// Name is what clients ask for in NBD_OPT_GO/EXPORT_NAME.
	Name string
	// Path is a regular file or block device (an absolute path), or an object in an
	// S3-compatible store (s3://BUCKET/KEY; see StoreConfig).
	Path string
	// Description is shown by NBD_OPT_LIST and NBD_INFO_DESCRIPTION.
	Description string
	// ReadOnly refuses every write (NBD_FLAG_READ_ONLY).
	ReadOnly bool
	// Cow gives each client (by identity, else by address) its own overlay over the
	// read-only image. Overlays are temporary: a client's fresh boot gets a new one, a
	// reconnect resumes its own, and one unused for Config.OverlayGrace is removed.
	Cow bool
	// CowDir is where a Cow export's overlays live: a directory, or a prefix in the object
	// store (s3://BUCKET/PREFIX). Default: Config.StateDir/overlays, and for an object
	// image PATH.nbdroot beside it, so that every server of a fleet finds them.
	CowDir string
	// CowPersistent makes overlays last until an administrator removes them: a client gets
	// its overlay back on every boot. It needs CowDir.
	CowPersistent bool
	// Shared lets several clients write at once. Without it the first client to open the
	// export read-write holds it and everyone else is refused (or, with ReadOnlyFallback,
	// served read-only) until its last connection closes.
	Shared bool
	// ReadOnlyFallback serves other clients a read-only view while a writer holds the export,
	// instead of refusing them.
	ReadOnlyFallback bool
	// Default makes this the export for clients that ask for the empty name. A single export
	// is the default without saying so.
	Default bool
	// Allow lists the client networks that may use the export, AllowCerts the client
	// certificates (tls.go); a client that one entry admits passes. Both empty allow
	// everyone (unless AllowNone). Clients on the Unix socket are local and always pass.
	Allow      []netip.Prefix
	AllowCerts []CertRule
	// AllowNone refuses every TCP client (nbd-server: an empty authfile).
	AllowNone bool
	// MaxConnections bounds the connections to this export (0: no per-export bound).
	MaxConnections int
	// NoTrim withholds NBD_FLAG_SEND_TRIM (nbd-server "trim = false").
	NoTrim bool
	// Sync makes every write durable before its reply (nbd-server "sync").
	Sync bool
	// Rotational sets NBD_FLAG_ROTATIONAL so clients schedule I/O for a spinning disk.
	Rotational bool
	// TLSOnly refuses clients that have not upgraded to TLS (nbd-server "tlsonly").
	TLSOnly bool
	// IdleTimeout closes a connection with no request for this long (0: never).
	IdleTimeout time.Duration
	// CreateSize creates a missing image as a sparse file of this many bytes (nbd-server
	// "filesize"); an existing image must have exactly this size. 0: the image must exist.
	CreateSize int64
	// Temporary serves a fresh image of CreateSize bytes that nothing outlives (nbd-server
	// "temporary"): Path is the template, whose directory and name the file gets. Run
	// creates the file and points Path at it; a Server given such an export directly
	// refuses it.
	Temporary bool
	// Tree serves Path as a directory of 4096-byte block files, one per block written,
	// CreateSize bytes in all (nbd-server "treefiles"; treefiles.go).
	Tree bool
}

// DefaultExport is the export clients asking for the empty name get: the one marked
// Default, else the only one; nil when there is none.
func DefaultExport(exports []Export) *Export {
	for i := range exports {
		if exports[i].Default {
			return &exports[i]
		}
	}
	if len(exports) == 1 {
		return &exports[0]
	}
	return nil
}

// Config is everything a Server needs; zero values are sensible defaults.
type Config struct {
	// Exports served; at least one.
	Exports []Export
	// TLS holds the server certificate (and client CA, if client certificates are checked).
	// It is required unless TLSMode is TLSOff.
	TLS *tls.Config
	// TLSMode says whether TLS is off, allowed or required.
	TLSMode TLSMode
	// DenyList refuses NBD_OPT_LIST (nbd-server's default unless "allowlist = true").
	DenyList bool
	// MaxConnections bounds all connections (0: DefaultMaxConnections).
	MaxConnections int
	// MaxClientConnections bounds the connections of one client: from one IP address, and
	// of one client identity (0: DefaultMaxClientConnections). Unix-socket connections count
	// only against MaxConnections: they are local, admitted by the socket's permissions.
	MaxClientConnections int
	// UnusedTimeout is how long a connection may go without sending a request before it
	// gives up its slot to a new client when the server is full (0: DefaultUnusedTimeout).
	UnusedTimeout time.Duration
	// HandshakeTimeout bounds the whole option negotiation, so a slow or silent client
	// cannot hold a connection slot (0: DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration
	// MaxInFlight bounds the requests of one connection being served at once
	// (0: DefaultMaxInFlight).
	MaxInFlight int
	// DrainTimeout is how long Shutdown keeps connections open after it starts, answering
	// requests that arrive meanwhile with ESHUTDOWN so clients disconnect cleanly
	// (0: DefaultDrainTimeout). Negative: close each connection as soon as the requests it
	// had in flight are answered — kernel clients then see a dead connection and reconnect
	// instead of failing I/O with ESHUTDOWN, which suits root filesystems.
	DrainTimeout time.Duration
	// StateDir is where the server keeps state: temporary overlays of exports without a
	// cowtmp= directory (StateDir/overlays) and the list of overlay directories that
	// `nbdroot overlays` reads. Empty: DefaultStateDir. New reads it; Reload keeps it.
	StateDir string
	// OverlayGrace is how long a temporary overlay outlives its client's last connection
	// before it is removed (0: DefaultOverlayGrace). A server (re)start counts as a last
	// connection, so clients find their overlays again after a restart.
	OverlayGrace time.Duration
	// ReplyMemory bounds the memory all connections together hold for replies their
	// clients have not taken yet (0: DefaultReplyMemory). A connection past its share
	// stops being read from until its client catches up; one holding nothing is always
	// served.
	ReplyMemory int64
	// Store says how to reach the object store of s3:// exports. New reads it; Reload
	// keeps it.
	Store StoreConfig
	// Logger gets one line per connection and handshake outcome; nil discards.
	Logger *log.Logger
}

// Defaults for zero Config fields.
const (
	DefaultMaxConnections = 1024
	// DefaultMaxClientConnections leaves room for a kernel client with 8 connections
	// (one per CPU is the usual choice) reconnecting while its old sockets still linger.
	DefaultMaxClientConnections = 16
	DefaultUnusedTimeout        = 10 * time.Second
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultMaxInFlight          = 64
	DefaultDrainTimeout         = 2 * time.Second
	DefaultReplyMemory          = 64 << 20
	DefaultStateDir             = "/var/lib/nbdroot"
	DefaultOverlayGrace         = time.Hour
)

// ConfigError reports an invalid configuration value.
type ConfigError struct {
	Where string // "export root", "--export root=…", "config:12"
	Err   error
}

func (e *ConfigError) Error() string { return e.Where + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// Validate checks a configuration for mistakes that would otherwise show up only when a
// client connects: names, duplicates, the default export, TLS settings.
func (c *Config) Validate() error {
	if len(c.Exports) == 0 {
		return &ConfigError{"config", errors.New("no exports")}
	}
	seen := map[string]bool{}
	defaults := 0
	for i := range c.Exports {
		e := &c.Exports[i]
		where := fmt.Sprintf("export %q", e.Name)
		if err := validateName(e.Name); err != nil {
			return &ConfigError{where, err}
		}
		if seen[e.Name] {
			return &ConfigError{where, errors.New("defined twice")}
		}
		seen[e.Name] = true
		if e.Path == "" {
			return &ConfigError{where, errors.New("no path")}
		}
		if err := validateObjectExport(e); err != nil {
			return &ConfigError{where, err}
		}
		if !filepath.IsAbs(e.Path) && !objstore.IsURL(e.Path) {
			return &ConfigError{where, fmt.Errorf("path %q is not absolute", e.Path)}
		}
		if err := validateTreeExport(e); err != nil {
			return &ConfigError{where, err}
		}
		if e.Temporary && e.CreateSize <= 0 {
			return &ConfigError{where, errors.New("temporary needs filesize, the size of the image to create")}
		}
		if e.CowPersistent && e.CowDir == "" {
			return &ConfigError{where, errors.New("persistent overlays need a cowdir")}
		}
		if (e.CowDir != "" || e.CowPersistent) && !e.Cow {
			return &ConfigError{where, errors.New("cowdir without cow")}
		}
		if e.CowDir != "" && !filepath.IsAbs(e.CowDir) && !objstore.IsURL(e.CowDir) {
			return &ConfigError{where, fmt.Errorf("cowdir %q is not absolute", e.CowDir)}
		}
		if len(e.Description) > nbd.MaxNameLength {
			return &ConfigError{where, errors.New("description longer than 4096 bytes")}
		}
		if e.MaxConnections < 0 || e.IdleTimeout < 0 {
			return &ConfigError{where, errors.New("negative limit")}
		}
		if e.TLSOnly && c.TLSMode == TLSOff {
			return &ConfigError{where, errors.New("tls-only export but TLS is off")}
		}
		if e.Default {
			defaults++
		}
	}
	if defaults > 1 {
		return &ConfigError{"config", errors.New("more than one default export")}
	}
	if c.TLSMode != TLSOff && (c.TLS == nil || len(c.TLS.Certificates) == 0 && c.TLS.GetCertificate == nil) {
		return &ConfigError{"config", fmt.Errorf("TLS mode %s needs a certificate and key", c.TLSMode)}
	}
	if err := c.validateCertRules(); err != nil {
		return err
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		return &ConfigError{"config", fmt.Errorf("state directory %q is not absolute", c.StateDir)}
	}
	if c.MaxConnections < 0 || c.HandshakeTimeout < 0 || c.MaxInFlight < 0 || c.OverlayGrace < 0 ||
		c.ReplyMemory < 0 || c.MaxClientConnections < 0 || c.UnusedTimeout < 0 {
		return &ConfigError{"config", errors.New("negative limit")}
	}
	return nil
}

// validateName applies proto.md's rules for strings: UTF-8 without NUL, at most 4096 bytes.
// The empty name is reserved for "the default export" and cannot be configured.
func validateName(name string) error {
	switch {
	case name == "":
		return errors.New("empty export name (the empty name means the default export; use the default option)")
	case len(name) > nbd.MaxNameLength:
		return errors.New("export name longer than 4096 bytes")
	case strings.ContainsRune(name, 0):
		return errors.New("export name contains NUL")
	case !utf8.ValidString(name):
		return errors.New("export name is not UTF-8")
	}
	return nil
}

// ParseExport parses the --export flag: NAME=PATH followed by comma-separated options.
// PATH is a file, a block device or an object, s3://BUCKET/KEY.
//
//	readonly|ro        refuse writes
//	cow                per-client copy-on-write overlay; the image is never written
//	cowdir=DIR         persistent overlays in DIR (or s3://BUCKET/PREFIX): a client keeps its overlay across boots (implies cow)
//	cowtmp=DIR         temporary overlays in DIR (or s3://BUCKET/PREFIX) instead of the default (implies cow)
//	allow=CIDR         allow only this network (repeat for more; an address means /32 or /128)
//	allow=cn:PATTERN   allow clients whose TLS certificate's common name matches (dns:PATTERN: a DNS name)
//	default            the export for clients asking for the empty name
//	shared             allow several concurrent writers (unsafe for ordinary filesystems)
//	rofallback         serve others read-only while a writer holds the export
//	desc=TEXT          description shown to clients (no commas)
//	maxconn=N          at most N connections to this export
//	notrim             do not advertise TRIM
//	sync               make every write durable before replying
//	rotational         advertise a rotational medium
//	tls                require TLS for this export
//	timeout=DURATION   close connections idle this long (e.g. 10m)
func ParseExport(spec string) (Export, error) {
	fail := func(err error) (Export, error) {
		return Export{}, &ConfigError{fmt.Sprintf("--export %s", spec), err}
	}
	name, rest, ok := strings.Cut(spec, "=")
	if !ok {
		return fail(errors.New("want NAME=PATH[,option…]"))
	}
	parts := strings.Split(rest, ",")
	e := Export{Name: name, Path: parts[0]}
	if e.Path == "" {
		return fail(errors.New("empty path"))
	}
	for _, opt := range parts[1:] {
		key, val, hasVal := strings.Cut(opt, "=")
		needVal := func() error {
			if !hasVal || val == "" {
				return fmt.Errorf("option %s needs a value (%s=…)", key, key)
			}
			return nil
		}
		noVal := func() error {
			if hasVal {
				return fmt.Errorf("option %s takes no value", key)
			}
			return nil
		}
		var err error
		switch key {
		case "readonly", "ro":
			err, e.ReadOnly = noVal(), true
		case "cow":
			err, e.Cow = noVal(), true
		case "cowdir":
			err, e.Cow, e.CowDir, e.CowPersistent = needVal(), true, val, true
		case "cowtmp":
			err, e.Cow, e.CowDir = needVal(), true, val
		case "allow":
			if err = needVal(); err == nil {
				err = e.addAllow(val)
			}
		case "default":
			err, e.Default = noVal(), true
		case "shared":
			err, e.Shared = noVal(), true
		case "rofallback":
			err, e.ReadOnlyFallback = noVal(), true
		case "desc":
			err, e.Description = needVal(), val
		case "maxconn":
			if err = needVal(); err == nil {
				e.MaxConnections, err = strconv.Atoi(val)
				if err == nil && e.MaxConnections < 0 {
					err = errors.New("maxconn must not be negative")
				}
			}
		case "notrim":
			err, e.NoTrim = noVal(), true
		case "sync":
			err, e.Sync = noVal(), true
		case "rotational":
			err, e.Rotational = noVal(), true
		case "tls":
			err, e.TLSOnly = noVal(), true
		case "timeout":
			if err = needVal(); err == nil {
				e.IdleTimeout, err = ParseDuration(val)
				if err == nil && e.IdleTimeout < 0 {
					err = errors.New("timeout must not be negative")
				}
			}
		case "":
			err = errors.New("empty option (doubled comma?)")
		default:
			err = fmt.Errorf("unknown option %q", key)
		}
		if err != nil {
			return fail(err)
		}
	}
	if err := validateName(e.Name); err != nil {
		return fail(err)
	}
	return e, nil
}

// ParsePrefix parses a network in CIDR form ("10.0.0.0/8"), an address/netmask pair
// ("10.0.0.0/255.0.0.0") or a single address ("10.0.0.5", meaning /32).
func ParsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	addr, mask, hasMask := strings.Cut(s, "/")
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network %q: %w", s, err)
	}
	a = a.Unmap()
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("network %q: zones are not allowed", s)
	}
	bits := a.BitLen()
	if hasMask {
		if m, err := netip.ParseAddr(mask); err == nil && m.Is4() && a.Is4() {
			if bits, err = maskBits(m); err != nil {
				return netip.Prefix{}, fmt.Errorf("network %q: %w", s, err)
			}
		} else if bits, err = strconv.Atoi(mask); err != nil || bits < 0 || bits > a.BitLen() {
			return netip.Prefix{}, fmt.Errorf("network %q: bad prefix length %q", s, mask)
		}
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("network %q: %w", s, err)
	}
	return p, nil
}

func maskBits(m netip.Addr) (int, error) {
	b := m.As4()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	ones := 0
	for v&(1<<31) != 0 {
		ones, v = ones+1, v<<1
	}
	if v != 0 {
		return 0, fmt.Errorf("netmask %s is not contiguous", m)
	}
	return ones, nil
}

// ParseDuration reads a duration the way every nbdroot option and configuration takes one:
// a Go duration ("30s", "2m", "1m30s") or a bare number of seconds ("30", "-1"), as
// nbd-server's own timeout option is written. The error names neither the option nor its
// source: the caller adds those.
func ParseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > math.MaxInt64/int64(time.Second) || n < math.MinInt64/int64(time.Second) {
			return 0, fmt.Errorf("%q seconds is too long", s)
		}
		return time.Duration(n) * time.Second, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (30, 30s, 2m)", s)
	}
	return d, nil
}
