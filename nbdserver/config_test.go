package nbdserver

import (
	"errors"
	"net/netip"
	"path"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseExport(t *testing.T) {
	pfx := netip.MustParsePrefix
	tests := []struct {
		spec    string
		want    Export
		wantErr string
	}{
		{spec: "root=/nbd/root", want: Export{Name: "root", Path: "/nbd/root"}},
		{spec: "root=/nbd/root,readonly,default", want: Export{Name: "root", Path: "/nbd/root", ReadOnly: true, Default: true}},
		{spec: "r=/img,ro,desc=thin client,maxconn=3,notrim,sync,rotational,tls,timeout=10m",
			want: Export{Name: "r", Path: "/img", ReadOnly: true, Description: "thin client", MaxConnections: 3,
				NoTrim: true, Sync: true, Rotational: true, TLSOnly: true, IdleTimeout: 10 * time.Minute}},
		{spec: "r=/img,cow", want: Export{Name: "r", Path: "/img", Cow: true}},
		{spec: "r=/img,cowdir=/var/lib/cow", want: Export{Name: "r", Path: "/img", Cow: true, CowDir: "/var/lib/cow", CowPersistent: true}},
		{spec: "r=/img,cowtmp=/scratch", want: Export{Name: "r", Path: "/img", Cow: true, CowDir: "/scratch"}},
		{spec: "r=/img,allow=10.0.0.0/8,allow=192.168.1.5,allow=fd00::/8",
			want: Export{Name: "r", Path: "/img", Allow: []netip.Prefix{pfx("10.0.0.0/8"), pfx("192.168.1.5/32"), pfx("fd00::/8")}}},
		{spec: "r=/img,shared,rofallback", want: Export{Name: "r", Path: "/img", Shared: true, ReadOnlyFallback: true}},
		{spec: "name with spaces=/img", want: Export{Name: "name with spaces", Path: "/img"}},
		{spec: "/img", wantErr: "NAME=PATH"},
		{spec: "=/img", wantErr: "empty export name"},
		{spec: "r=", wantErr: "empty path"},
		{spec: "r=/img,bogus", wantErr: `unknown option "bogus"`},
		{spec: "r=/img,readonly=yes", wantErr: "takes no value"},
		{spec: "r=/img,allow=", wantErr: "needs a value"},
		{spec: "r=/img,allow=10.0.0.0/33", wantErr: "prefix length"},
		{spec: "r=/img,allow=foo", wantErr: "network"},
		{spec: "r=/img,maxconn=-1", wantErr: "negative"},
		{spec: "r=/img,maxconn=x", wantErr: "invalid syntax"},
		{spec: "r=/img,timeout=30", want: Export{Name: "r", Path: "/img", IdleTimeout: 30 * time.Second}},
		{spec: "r=/img,timeout=soon", wantErr: "duration"},
		{spec: "r=/img,timeout=-5", wantErr: "negative"},
		{spec: "r=/img,,ro", wantErr: "empty option"},
		{spec: "r\x00=/img", wantErr: "NUL"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseExport(tt.spec)
			if tt.wantErr != "" {
				var ce *ConfigError
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.As(err, &ce) {
					t.Fatalf("got %v, want a ConfigError containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParsePrefix(t *testing.T) {
	tests := []struct{ in, want string }{
		{"10.1.2.3", "10.1.2.3/32"},
		{"10.1.2.3/8", "10.0.0.0/8"},
		{"192.168.0.0/255.255.255.0", "192.168.0.0/24"},
		{"::ffff:10.0.0.1", "10.0.0.1/32"},
		{"fd00::1/64", "fd00::/64"},
		{" 127.0.0.1 ", "127.0.0.1/32"},
	}
	for _, tt := range tests {
		got, err := ParsePrefix(tt.in)
		if err != nil || got.String() != tt.want {
			t.Errorf("ParsePrefix(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", "10.0.0.0/255.0.255.0", "10.0.0.0/-1", "fe80::1%eth0", "10.0.0.0/24/1", "host"} {
		if p, err := ParsePrefix(bad); err == nil {
			t.Errorf("ParsePrefix(%q) = %v, want an error", bad, p)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Export{Name: "a", Path: "/a"}
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"fine", Config{Exports: []Export{ok}}, ""},
		{"no exports", Config{}, "no exports"},
		{"duplicate", Config{Exports: []Export{ok, ok}}, "defined twice"},
		{"relative path", Config{Exports: []Export{{Name: "a", Path: "a.img"}}}, "not absolute"},
		{"two defaults", Config{Exports: []Export{{Name: "a", Path: "/a", Default: true}, {Name: "b", Path: "/b", Default: true}}}, "more than one default"},
		{"persistent without dir", Config{Exports: []Export{{Name: "a", Path: "/a", Cow: true, CowPersistent: true}}}, "need a cowdir"},
		{"cowdir without cow", Config{Exports: []Export{{Name: "a", Path: "/a", CowDir: "/c"}}}, "without cow"},
		{"tls export without tls", Config{Exports: []Export{{Name: "a", Path: "/a", TLSOnly: true}}}, "TLS is off"},
		{"tls without certificate", Config{Exports: []Export{ok}, TLSMode: TLSRequire}, "certificate"},
		{"long description", Config{Exports: []Export{{Name: "a", Path: "/a", Description: strings.Repeat("x", 5000)}}}, "description"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("Validate: %v, want %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseTLSMode(t *testing.T) {
	for _, m := range []TLSMode{TLSOff, TLSAllow, TLSRequire} {
		got, err := ParseTLSMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseTLSMode(%q) = %v, %v", m, got, err)
		}
	}
	if _, err := ParseTLSMode("maybe"); err == nil {
		t.Error("ParseTLSMode(maybe) succeeded")
	}
}

// FuzzParseExport checks that the --export parser never panics and that what it accepts is
// a valid export (apart from the path, which is made absolute by the command).
func FuzzParseExport(f *testing.F) {
	for _, s := range []string{"root=/nbd/root", "r=/i,ro,default,allow=10.0.0.0/8", "r=/i,cowdir=/c,maxconn=2,timeout=1s",
		"r=/i,desc=x,tls,notrim,sync", "=", "a=b,,", "r=/i,allow=::1/129",
		"r=/i,allow=cn:thin-*,allow=dns:*.lab.example,allow=10.0.0.0/8", "r=/i,allow=cn:[", "r=/i,allow=dns:", "r=/i,allow=san:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		e, err := ParseExport(spec)
		if err != nil {
			return
		}
		if err := validateName(e.Name); err != nil {
			t.Fatalf("accepted bad name %q: %v", e.Name, err)
		}
		if e.Path == "" || e.MaxConnections < 0 || e.IdleTimeout < 0 {
			t.Fatalf("accepted %+v", e)
		}
		for _, r := range e.AllowCerts {
			if _, err := path.Match(r.Pattern, ""); err != nil || r.Pattern == "" || (r.Field != "cn" && r.Field != "dns") {
				t.Fatalf("accepted the certificate rule %+v", r)
			}
		}
	})
}

// ParseDuration takes what every duration option takes: Go durations and bare seconds.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"5", "-1", "30s", "2m", "1m30s", "1.5s", "", "x", "99999999999999", "+3", "0x10"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if n, ierr := strconv.ParseInt(s, 10, 64); ierr == nil && d != time.Duration(n)*time.Second {
			t.Fatalf("%q: %v, want %d seconds", s, d, n)
		}
		if _, gerr := time.ParseDuration(s); gerr != nil {
			if _, ierr := strconv.ParseInt(s, 10, 64); ierr != nil {
				t.Fatalf("%q accepted as %v, neither a Go duration nor seconds", s, d)
			}
		}
	})
}
