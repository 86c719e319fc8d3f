package kernelcfg

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name        string
		in          string
		wantValues  map[string]string
		wantVersion string
		wantErrLine int // -1: no error
	}{
		{
			name: "assignments, unset symbols and the header",
			in: "#\n# Linux/x86 6.1.192 Kernel Configuration\n#\nCONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\n" +
				"CONFIG_D=\"quoted = value\"\nCONFIG_E=0x10\n\n# a comment\n",
			wantValues:  map[string]string{"A": "y", "B": "m", "C": "n", "D": `"quoted = value"`, "E": "0x10"},
			wantVersion: "6.1.192",
			wantErrLine: -1,
		},
		{
			name:        "CRLF line ends and surrounding blanks",
			in:          "CONFIG_A=y\r\n   CONFIG_B=m  \r\n",
			wantValues:  map[string]string{"A": "y", "B": "m"},
			wantErrLine: -1,
		},
		{
			name:        "a later assignment wins, as in Kconfig",
			in:          "CONFIG_A=m\nCONFIG_A=y\n",
			wantValues:  map[string]string{"A": "y"},
			wantErrLine: -1,
		},
		{
			name:        "only unset symbols",
			in:          "# CONFIG_A is not set\n",
			wantValues:  map[string]string{"A": "n"},
			wantErrLine: -1,
		},
		{name: "a line that is no assignment", in: "CONFIG_A=y\nhello\n", wantErrLine: 2},
		{name: "a symbol without its prefix", in: "BLK_DEV_NBD=m\n", wantErrLine: 1},
		{name: "an empty symbol name", in: "CONFIG_=y\n", wantErrLine: 1},
		{name: "empty input", in: "", wantErrLine: 0},
		{name: "comments only", in: "# Linux/x86 6.1.0 Kernel Configuration\n", wantErrLine: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(tc.in))
			if tc.wantErrLine >= 0 {
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("Parse: got %v, want a *ParseError", err)
				}
				if pe.Line != tc.wantErrLine {
					t.Errorf("ParseError.Line = %d, want %d (%v)", pe.Line, tc.wantErrLine, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.wantValues, c.values); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
			if c.Version != tc.wantVersion {
				t.Errorf("Version = %q, want %q", c.Version, tc.wantVersion)
			}
		})
	}
}

func TestTristate(t *testing.T) {
	c := mustParse(t, "CONFIG_Y=y\nCONFIG_M=m\n# CONFIG_N is not set\nCONFIG_S=\"y\"\nCONFIG_I=1\n")
	for name, want := range map[string]byte{"Y": 'y', "M": 'm', "N": 'n', "S": 'n', "I": 'n', "ABSENT": 'n'} {
		if got := c.Tristate(name); got != want {
			t.Errorf("Tristate(%s) = %c, want %c", name, got, want)
		}
	}
	if v, ok := c.Value("S"); !ok || v != `"y"` {
		t.Errorf(`Value(S) = %q, %v; want "\"y\"", true`, v, ok)
	}
	if _, ok := c.Value("ABSENT"); ok {
		t.Error("Value(ABSENT) reports the symbol present")
	}
}

func TestParseLimits(t *testing.T) {
	long := "CONFIG_A=\"" + strings.Repeat("x", 2<<20) + "\"\n"
	var pe *ParseError
	if _, err := Parse(strings.NewReader(long)); !errors.As(err, &pe) || pe.Line != 1 {
		t.Errorf("a 2 MiB line: got %v, want a ParseError at line 1", err)
	}
	// A gzip bomb of valid lines stops at maxConfigSize, not at the end of memory.
	big := bytes.Repeat([]byte("CONFIG_A=y\n"), int(maxConfigSize/10))
	if _, err := Parse(bytes.NewReader(gzipped(big))); !errors.As(err, &pe) || pe.Line != 0 {
		t.Errorf("%d MiB config: got %v, want a ParseError for the size", len(big)>>20, err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	text := readFile(t, synthConfig)
	plain := filepath.Join(dir, "config")
	gz := filepath.Join(dir, "config.gz")
	bad := filepath.Join(dir, "bad")
	os.WriteFile(plain, []byte(text), 0o644)
	os.WriteFile(gz, gzipped([]byte(text)), 0o644)
	os.WriteFile(bad, []byte("\x1f\x8bnot gzip at all"), 0o644)

	want, err := Load(plain)
	if err != nil {
		t.Fatal(err)
	}
	if want.Source != plain || want.Version != "6.1.0" || want.Tristate("BLK_DEV_NBD") != 'm' {
		t.Fatalf("Load(plain) = source %q version %q BLK_DEV_NBD %c", want.Source, want.Version, want.Tristate("BLK_DEV_NBD"))
	}
	got, err := Load(gz)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want.values, got.values); diff != "" || got.Version != want.Version {
		t.Errorf("gzip config differs from the plain one (-plain +gzip):\n%s", diff)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("Load(corrupt gzip) = %v, want an error naming the file", err)
	}
	if _, err := Load(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(absent) = %v, want ErrNotExist", err)
	}
}

func TestConfigCandidates(t *testing.T) {
	// A chroot: ROOT/lib/modules/VER and ROOT/boot/config-VER, and a "current" link to the
	// modules dir like the test kernel's cache.
	root := t.TempDir()
	mods := filepath.Join(root, "lib", "modules", "6.1.0-9-amd64")
	os.MkdirAll(mods, 0o755)
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	link := filepath.Join(t.TempDir(), "modules")
	if err := os.Symlink(mods, link); err != nil {
		t.Fatal(err)
	}
	chrootConfig := filepath.Join(root, "boot", "config-6.1.0-9-amd64")
	// A second chroot whose lib/modules/VER is a link into the first.
	root2 := t.TempDir()
	chrootLink := filepath.Join(root2, "lib", "modules", "6.1.0-9-amd64")
	os.MkdirAll(filepath.Dir(chrootLink), 0o755)
	if err := os.Symlink(mods, chrootLink); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, modules, release string
		want                   []string
	}{
		{"the running kernel", "", "6.18.0", []string{"/proc/config.gz", "/boot/config-6.18.0"}},
		{"the running kernel, release unknown", "", "", []string{"/proc/config.gz"}},
		{"another kernel's modules: never the running kernel's config", mods, "6.18.0", []string{chrootConfig}},
		{"a link to the modules dir", link, "6.18.0", []string{chrootConfig}},
		{"the running kernel's own modules dir", mods, "6.1.0-9-amd64",
			[]string{chrootConfig, "/proc/config.gz", "/boot/config-6.1.0-9-amd64"}},
		{"the host's /lib/modules/VER", "/lib/modules/6.18.0", "6.18.0", []string{"/boot/config-6.18.0", "/proc/config.gz"}},
		{"merged /usr", "/usr/lib/modules/6.18.0", "", []string{"/boot/config-6.18.0"}},
		{"a link into another tree: both roots", chrootLink, "6.18.0", []string{filepath.Join(root2, "boot", "config-6.1.0-9-amd64"), chrootConfig}},
		{"not a modules dir", root, "6.18.0", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, ConfigCandidates(tc.modules, tc.release)); diff != "" {
				t.Errorf("ConfigCandidates(%q, %q) (-want +got):\n%s", tc.modules, tc.release, diff)
			}
		})
	}

	t.Run("FindConfig", func(t *testing.T) {
		var none *NoConfigError
		if _, err := FindConfig(mods, "6.18.0"); !errors.As(err, &none) || len(none.Tried) != 1 {
			t.Fatalf("FindConfig without a config = %v, want a NoConfigError naming 1 path", err)
		}
		os.WriteFile(chrootConfig, []byte("CONFIG_A=y\n"), 0o644)
		if got, err := FindConfig(link, "6.18.0"); err != nil || got != chrootConfig {
			t.Errorf("FindConfig = %q, %v; want %q", got, err, chrootConfig)
		}
	})
}

// FuzzParse feeds arbitrary bytes to the .config parser. Whatever it accepts must name only
// valid symbols and must not depend on whether it came gzip-compressed.
func FuzzParse(f *testing.F) {
	f.Add([]byte("CONFIG_A=y\n# CONFIG_B is not set\n"))
	f.Add([]byte(readFileF(f, synthConfig)))
	f.Add(gzipped([]byte("CONFIG_BLK_DEV_NBD=m\n")))
	valid := regexp.MustCompile(`^[A-Za-z0-9_]+$`)
	// Deflate expands up to ~1000:1, so a mutated gzip seed can make megabytes to scan;
	// instrumented, that stalls the fuzzer. The limit's own behaviour is TestParseLimits'.
	defer func(n int64) { maxConfigSize = n }(maxConfigSize)
	maxConfigSize = 64 << 10
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(c.values) == 0 {
			t.Fatal("Parse accepted a config without symbols")
		}
		for name, v := range c.values {
			if !valid.MatchString(name) {
				t.Fatalf("symbol %q is not a Kconfig name", name)
			}
			if got, ok := c.Value(name); !ok || got != v {
				t.Fatalf("Value(%q) = %q, %v; want %q", name, got, ok, v)
			}
		}
		if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
			return // already compressed
		}
		z, err := Parse(bytes.NewReader(gzipped(data)))
		if err != nil {
			t.Fatalf("plain input parses, gzip of it does not: %v", err)
		}
		if diff := cmp.Diff(c.values, z.values); diff != "" || c.Version != z.Version {
			t.Fatalf("gzip input parses differently (-plain +gzip):\n%s", diff)
		}
	})
}

func readFileF(f *testing.F, name string) string {
	b, err := os.ReadFile(name)
	if err != nil {
		f.Fatal(err)
	}
	return string(b)
}
