package nbdserver

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// memFS serves authfiles and included files from a map.
type memFS map[string]string

func (m memFS) read(p string) ([]byte, error) {
	s, ok := m[p]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
	}
	return []byte(s), nil
}

func (m memFS) list(dir string) ([]string, error) {
	var out []string
	for p := range m {
		if filepath.Dir(p) == dir && strings.HasSuffix(p, ".conf") {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		if _, ok := m[dir+"/"]; !ok {
			return nil, &fs.PathError{Op: "open", Path: dir, Err: fs.ErrNotExist}
		}
	}
	return out, nil
}

var prefixCmp = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

func TestParseServerFile(t *testing.T) {
	files := memFS{
		"/etc/nbd-server/allow":       "127.0.0.1\n192.168.0.0/8   # the office\n\n# comment\n192.168.1.1\n",
		"/etc/nbd-server/empty-allow": "# nobody\n",
		"/etc/nbd-server/conf.d/":     "",
		"/etc/nbd-server/conf.d/x.conf": `[extra]
exportname = /srv/extra.img
readonly = true
`,
	}
	tests := []struct {
		name    string
		text    string
		want    *ServerFile
		wantErr string
	}{
		{name: "man page example", text: `[generic]
[export]
    exportname = /export/blkdev
`, want: &ServerFile{Port: "10809", Exports: []Export{{Name: "export", Path: "/export/blkdev"}}}},
		{name: "full", text: `# nbd-server configuration
[generic]
	user = nbd
	group = nbd
	listenaddr = 127.0.0.1, ::1
	port = 10810
	allowlist = true
	maxconnections = 50
	includedir = /etc/nbd-server/conf.d
	max_threads = 8
[root]
	exportname = /srv/nbd/root.img
	authfile = /etc/nbd-server/allow
	flush = true
	fua = true
	trim = false
	maxconnections = 4
	timeout = 30
	rotational = true
	sync = false
[cow]
	exportname = /srv/nbd/base.img
	copyonwrite = true
	cowdir = /var/lib/cow
	cowpersistent = true
	authfile = /etc/nbd-server/empty-allow
[missing-auth]
	exportname = /srv/x.img
	authfile = /etc/nbd-server/nonexistent
	description = text\swith\sescapes
	default = true
`, want: &ServerFile{
			ListenAddrs: []string{"127.0.0.1", "::1"}, Port: "10810", AllowList: true, User: "nbd", Group: "nbd", MaxConnections: 50,
			Exports: []Export{
				{Name: "root", Path: "/srv/nbd/root.img", NoTrim: true, MaxConnections: 4, IdleTimeout: 30 * time.Second, Rotational: true,
					Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("192.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32")}},
				{Name: "cow", Path: "/srv/nbd/base.img", Cow: true, CowDir: "/var/lib/cow", CowPersistent: true, AllowNone: true},
				{Name: "missing-auth", Path: "/srv/x.img", Description: "text with escapes", Default: true},
				{Name: "extra", Path: "/srv/extra.img", ReadOnly: true},
			},
			Warnings: []string{"[generic] max_threads is ignored (workers are sized per connection)"},
		}},
		{name: "unix socket and tls", text: `[generic]
unixsock = /run/nbd.sock
certfile = /c.pem
keyfile = /k.pem
cacertfile = /ca.pem
force_tls = true
[a]
exportname = /a
tlsonly = true
`, want: &ServerFile{Port: "10809", UnixSocket: "/run/nbd.sock", CertFile: "/c.pem", KeyFile: "/k.pem", CACertFile: "/ca.pem", ForceTLS: true,
			Exports: []Export{{Name: "a", Path: "/a", TLSOnly: true}}}},
		{name: "flush false is not honoured", text: "[generic]\n[a]\nexportname = /a\nflush = false\n", want: &ServerFile{Port: "10809",
			Exports:  []Export{{Name: "a", Path: "/a"}},
			Warnings: []string{"cfg: [a] flush = false ignored: FLUSH and FUA are always honoured, which is never less safe"}}},
		{name: "no generic first", text: "[a]\nexportname = /a\n", wantErr: "first section must be [generic]"},
		{name: "no exports", text: "[generic]\n", wantErr: "no exports"},
		{name: "option outside section", text: "port = 1\n[generic]\n", wantErr: "cfg:1: option \"port\" outside any section"},
		{name: "bad boolean", text: "[generic]\n[a]\nexportname = /a\nreadonly = yes\n", wantErr: "cfg:4: [a] readonly: \"yes\" is not a boolean"},
		{name: "no exportname", text: "[generic]\n[a]\nreadonly = true\n", wantErr: "has no exportname"},
		{name: "duplicate key", text: "[generic]\n[a]\nexportname = /a\nexportname = /b\n", wantErr: "set twice"},
		{name: "duplicate section", text: "[generic]\n[a]\nexportname = /a\n[a]\nexportname = /b\n", wantErr: "defined twice"},
		{name: "virtstyle files", text: "[generic]\n[a]\nexportname = /srv/%s.img\n", wantErr: "virtstyle"},
		{name: "prerun", text: "[generic]\n[a]\nexportname = /a\nprerun = /bin/true\n", wantErr: "prerun is not supported"},
		{name: "multifile", text: "[generic]\n[a]\nexportname = /a\nmultifile = true\n", wantErr: "multifile is not supported"},
		{name: "oldstyle", text: "[generic]\noldstyle = true\n[a]\nexportname = /a\n", wantErr: "oldstyle"},
		{name: "bad listenaddr", text: "[generic]\nlistenaddr = example.com\n[a]\nexportname = /a\n", wantErr: "not an IP"},
		{name: "bad section header", text: "[generic\n", wantErr: "bad section header"},
		{name: "not key value", text: "[generic]\njunk\n", wantErr: "want key = value"},
		{name: "bad escape", text: "[generic]\n[a]\nexportname = /a\\q\n", wantErr: "unknown escape"},
		{name: "bad authfile", text: "[generic]\n[a]\nexportname = /a\nauthfile = /bad\n", wantErr: "line 1"},
	}
	files["/bad"] = "not-an-address\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseServerFile(strings.NewReader(tt.text), "cfg", files.read, files.list)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				var ie *INIError
				if !errors.As(err, &ie) {
					t.Errorf("error %T is not an *INIError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, prefixCmp); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// An nbd-server setup moves over unchanged: Options.Load turns the file into listeners and
// a server configuration.
func TestLoadServerFilePlan(t *testing.T) {
	dir := t.TempDir()
	img := makeImage(t, testSize)
	allow := filepath.Join(dir, "allow")
	os.WriteFile(allow, []byte("10.0.0.0/24\n"), 0o600)
	cfgPath := filepath.Join(dir, "config")
	os.WriteFile(cfgPath, []byte("[generic]\n  port = 10999\n  listenaddr = 127.0.0.1\n[root]\n  exportname = "+img+"\n  authfile = "+allow+"\n"), 0o600)
	o := Options{ConfigFile: cfgPath, Exports: []string{"extra=" + img + ",ro"}}
	p, err := o.Load()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(p.Config); err == nil || !strings.Contains(err.Error(), "also exported") {
		t.Fatalf("image exported writable and read-only accepted: %v", err)
	}
	o.Exports = nil
	p, err = o.Load()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"127.0.0.1:10999"}, p.TCP); diff != "" {
		t.Errorf("listeners (-want +got):\n%s", diff)
	}
	if !p.Config.DenyList {
		t.Error("nbd-server's default is to refuse NBD_OPT_LIST")
	}
	if len(p.Config.Exports) != 1 || p.Config.Exports[0].Allow[0] != netip.MustParsePrefix("10.0.0.0/24") {
		t.Errorf("exports %+v", p.Config.Exports)
	}
	// Flags override the file's listeners.
	o.Listen = []string{"127.0.0.1:0"}
	if p, err = o.Load(); err != nil || len(p.TCP) != 1 || p.TCP[0] != "127.0.0.1:0" {
		t.Errorf("--listen override: %v %v", p.TCP, err)
	}
}

func TestParseAuthfile(t *testing.T) {
	got, err := ParseAuthfile([]byte("# allow\n10.0.0.1\n  10.1.0.0/16 # lab\n\n::1\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32"), netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::1/128")}
	if diff := cmp.Diff(want, got, prefixCmp); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := ParseAuthfile([]byte("10.0.0.1\nbogus\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("bad line: %v", err)
	}
}

// FuzzParseServerFile feeds arbitrary configuration text to the INI parser: it must not
// panic, and what it accepts must validate as exports (names, paths) or fail validation
// with a ConfigError — never half-parse silently.
func FuzzParseServerFile(f *testing.F) {
	for _, s := range []string{
		"[generic]\n[export]\n    exportname = /export/blkdev\n",
		"[generic]\nport = 10809\nlistenaddr = 0.0.0.0\nallowlist = true\n[a]\nexportname = /a\nreadonly = true\ncopyonwrite = false\ntrim = true\nauthfile = /allow\n",
		"[generic]\nunixsock = /run/s\n[a]\nexportname = /a\\s\\t\\\\\nmaxconnections = 3\ntimeout = 7\n",
		"[generic\n", "[]\n", "x=y\n", "[generic]\n[a]\n=\n",
	} {
		f.Add(s)
	}
	files := memFS{"/allow": "10.0.0.0/8\n"}
	f.Fuzz(func(t *testing.T, text string) {
		sf, err := ParseServerFile(strings.NewReader(text), "cfg", files.read, nil)
		if err != nil {
			return
		}
		if len(sf.Exports) == 0 {
			t.Fatal("accepted a file without exports")
		}
		cfg := Config{Exports: sf.Exports}
		if err := cfg.Validate(); err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Validate: %T %v", err, err)
			}
		}
	})
}
