package kernelcfg

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

// maxConfigSize bounds what Parse reads (after gunzip): a real .config is about 300 KB, so this
// only stops a wrong file, or a gzip bomb, from filling memory. A variable so that the fuzz
// test can keep each run short.
var maxConfigSize int64 = 4 << 20

// Config is a parsed kernel .config: the value of every CONFIG_ symbol it sets, and the kernel
// version its header names.
type Config struct {
	// Source says where the config came from (a path), for messages; "" when parsed from a
	// reader.
	Source string
	// Version is the kernel version from the header comment that `make *config` writes
	// ("# Linux/x86 6.1.192 Kernel Configuration"), or "" when there is none.
	Version string
	// values maps a symbol without its CONFIG_ prefix to its value as written (y, m, a number,
	// a quoted string); symbols listed as "# CONFIG_X is not set" map to "n".
	values map[string]string
}

// Value returns the value of symbol name (without the CONFIG_ prefix) as the file wrote it, and
// whether the file mentions the symbol at all.
func (c *Config) Value(name string) (string, bool) {
	v, ok := c.values[name]
	return v, ok
}

// Tristate returns 'y', 'm' or 'n' for symbol name: 'n' when it is unset or absent, and 'n' too
// for a non-tristate value, which can neither build a feature in nor as a module.
func (c *Config) Tristate(name string) byte {
	switch c.values[name] {
	case "y":
		return 'y'
	case "m":
		return 'm'
	}
	return 'n'
}

// Len returns how many symbols the config mentions (set or "is not set").
func (c *Config) Len() int { return len(c.values) }

// ParseError reports a line that is neither a comment nor a CONFIG_ assignment, or a file that
// holds no CONFIG_ line at all: the file is not a kernel .config.
type ParseError struct {
	Line int // 1-based; 0 for a problem with the file as a whole
	Text string
	Msg  string
}

func (e *ParseError) Error() string {
	if e.Line == 0 {
		return "not a kernel .config: " + e.Msg
	}
	return fmt.Sprintf("not a kernel .config: line %d: %s: %q", e.Line, e.Msg, e.Text)
}

var (
	// assignRe is a Kconfig assignment as scripts/kconfig/confdata.c writes it.
	assignRe = regexp.MustCompile(`^CONFIG_([A-Za-z0-9_]+)=(.*)$`)
	// unsetRe is how confdata.c writes a bool/tristate symbol set to n.
	unsetRe = regexp.MustCompile(`^# CONFIG_([A-Za-z0-9_]+) is not set$`)
	// versionRe is the header line confdata.c writes: "# Linux/<arch> <version> Kernel Configuration".
	versionRe = regexp.MustCompile(`^# Linux/\S+ (\S+) Kernel Configuration$`)
)

// Parse reads a kernel .config, plain or gzip-compressed (as /proc/config.gz is; recognised by
// its magic bytes, not by a name).
func Parse(r io.Reader) (*Config, error) {
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gunzip: %w", err)
		}
		defer zr.Close()
		return parse(zr)
	}
	return parse(br)
}

func tooBig() error {
	return &ParseError{Msg: fmt.Sprintf("larger than %d KiB", maxConfigSize>>10)}
}

func parse(r io.Reader) (*Config, error) {
	lr := &io.LimitedReader{R: r, N: maxConfigSize + 1}
	sc := bufio.NewScanner(lr)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	c := &Config{values: map[string]string{}}
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			if m := unsetRe.FindStringSubmatch(line); m != nil {
				c.values[m[1]] = "n"
			} else if m := versionRe.FindStringSubmatch(line); m != nil && c.Version == "" {
				c.Version = m[1]
			}
		default:
			m := assignRe.FindStringSubmatch(line)
			if m == nil {
				if lr.N <= 0 { // a line cut by the size limit
					return nil, tooBig()
				}
				return nil, &ParseError{Line: n, Text: line, Msg: "want CONFIG_NAME=value or a # comment"}
			}
			c.values[m[1]] = strings.TrimSpace(m[2])
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, &ParseError{Line: n + 1, Msg: "line longer than 1 MiB"}
		}
		return nil, fmt.Errorf("read: %w", err)
	}
	if lr.N <= 0 {
		return nil, tooBig()
	}
	if len(c.values) == 0 {
		return nil, &ParseError{Msg: "no CONFIG_ line"}
	}
	return c, nil
}

// Load reads the kernel config at path (plain, or gzip like /proc/config.gz).
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c.Source = path
	return c, nil
}

// ProcConfig is where a kernel built with CONFIG_IKCONFIG_PROC exposes its own config.
const ProcConfig = "/proc/config.gz"

// ConfigCandidates lists, best first, where the config of a kernel may be found.
//
// With a modules dir (/lib/modules/VER, possibly inside a chroot such as /mnt/lib/modules/VER)
// the config must be the one of that kernel: ROOT/boot/config-VER beside it, and the running
// kernel's own files only when release (`uname -r`) is VER. Without one, the running kernel is
// meant: /proc/config.gz, then /boot/config-RELEASE. The modules dir is taken both as given and
// with its symlinks resolved, so that a link such as the test kernel's "current/modules", and
// merged-/usr systems (/lib -> usr/lib), both lead to ROOT/boot.
func ConfigCandidates(modulesDir, release string) []string {
	if modulesDir == "" {
		c := []string{ProcConfig}
		if release != "" {
			c = append(c, "/boot/config-"+release)
		}
		return c
	}
	var c []string
	add := func(p string) {
		if !slices.Contains(c, p) {
			c = append(c, p)
		}
	}
	host := false
	for _, dir := range modulesPaths(modulesDir) {
		if root, ok := chrootOf(dir); ok {
			add(filepath.Join(root, "boot", "config-"+filepath.Base(dir)))
		}
		host = host || (release != "" && filepath.Base(dir) == release)
	}
	if host {
		add(ProcConfig)
		add("/boot/config-" + release)
	}
	return c
}

// modulesPaths returns a modules dir as given and, when different, with symlinks resolved.
func modulesPaths(modulesDir string) []string {
	dir := filepath.Clean(modulesDir)
	paths := []string{dir}
	if real, err := filepath.EvalSymlinks(dir); err == nil && real != dir {
		paths = append(paths, real)
	}
	return paths
}

// chrootOf returns ROOT for a modules dir ROOT/lib/modules/VER (or ROOT/usr/lib/modules/VER),
// and false for a dir whose parent is not named "modules".
func chrootOf(dir string) (string, bool) {
	mods := filepath.Dir(dir)
	if filepath.Base(mods) != "modules" {
		return "", false
	}
	lib := filepath.Dir(mods)
	root := filepath.Dir(lib)
	if filepath.Base(lib) == "lib" && filepath.Base(root) == "usr" {
		root = filepath.Dir(root)
	}
	return root, true
}

// HostRelease returns the running kernel's release (what `uname -r` prints), or "" where it
// cannot be read (not Linux, no /proc).
func HostRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// NoConfigError reports that none of the places a kernel config is looked for holds one.
type NoConfigError struct {
	Tried []string
}

func (e *NoConfigError) Error() string {
	if len(e.Tried) == 0 {
		return "no kernel config found"
	}
	return "no kernel config found (tried " + strings.Join(e.Tried, ", ") + ")"
}

// FindConfig returns the first of ConfigCandidates(modulesDir, release) that exists, or a
// *NoConfigError naming them all.
func FindConfig(modulesDir, release string) (string, error) {
	tried := ConfigCandidates(modulesDir, release)
	for _, p := range tried {
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", &NoConfigError{Tried: tried}
}
