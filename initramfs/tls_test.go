package initramfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"github.com/nbdroot/nbdroot/initramfs/inittest"
	"github.com/nbdroot/nbdroot/test/pki"
)

// goInit is a static executable with Go build information naming nbdroot-init and no
// nbdroot_notls tag, as an init with TLS: it passes the init check (CheckInit), which this
// test binary, dynamically linked, would not.
func goInit(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "nbdroot-init-tls")
	if err := inittest.Write(p, inittest.Init); err != nil {
		t.Fatal(err)
	}
	return p
}

// plainInit is a static executable without Go build information.
func plainInit(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "init")
	if err := inittest.Write(p, inittest.Options{}); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBuildTLS(t *testing.T) {
	f := newFixture(t)
	p := pki.New(t, "thin01")
	opts := f.opts()
	opts.Compression = None
	opts.Init = goInit(t)
	opts.Hooks = []string{"base", "udev", "net", "nbd", "filesystems"}
	opts.TLS = &TLSFiles{CA: p.File, Cert: p.Client.CertFile, Key: p.Client.KeyFile}
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"base", "udev", "net", "tls", "nbd", "filesystems"}; !slices.Equal(sum.Hooks, want) {
		t.Errorf("hooks %v, want %v (the tls hook added before nbd)", sum.Hooks, want)
	}
	recs, _, _ := readImage(t, f.out, None)
	for _, c := range []struct {
		name string
		mode uint64
		data []byte
	}{
		{"etc/nbdroot/tls/ca.pem", cpio.S_IFREG | 0o644, p.PEM},
		{"etc/nbdroot/tls/client.pem", cpio.S_IFREG | 0o644, p.Client.CertPEM},
		{"etc/nbdroot/tls/client.key", cpio.S_IFREG | 0o400, p.Client.KeyPEM},
	} {
		r, ok := recs[c.name]
		if !ok {
			t.Errorf("%s missing", c.name)
			continue
		}
		if r.Mode != c.mode || content(t, r) != string(c.data) {
			t.Errorf("%s: mode %o, %d bytes", c.name, r.Mode, r.FileSize)
		}
	}
	if !strings.Contains(strings.Join(sum.Warnings, "\n"), "whoever can fetch the image") {
		t.Errorf("no warning about the key inside the image: %q", sum.Warnings)
	}
	// The list names the hook once when it is already there.
	opts.Hooks = []string{"base", "udev", "net", "nbd", "tls", "filesystems"}
	if sum, err = Build(opts); err != nil || strings.Count(strings.Join(sum.Hooks, " "), "tls") != 1 {
		t.Errorf("hooks %v, %v", sum.Hooks, err)
	}
}

func TestBuildTLSErrors(t *testing.T) {
	f := newFixture(t)
	p := pki.New(t, "thin01")
	other := pki.New(t, "thin02")
	open := filepath.Join(t.TempDir(), "open.key")
	if err := os.WriteFile(open, p.Client.KeyPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("no certificate"), 0o644)
	notls := notlsInit(t)
	for _, tc := range []struct {
		name string
		tls  TLSFiles
		init string
		want string
	}{
		{"world-readable key", TLSFiles{CA: p.File, Cert: p.Client.CertFile, Key: open}, "", "readable by every user of this machine (mode 0644)"},
		{"certificate without key", TLSFiles{CA: p.File, Cert: p.Client.CertFile}, "", "go together"},
		{"key without CA", TLSFiles{Cert: p.Client.CertFile, Key: p.Client.KeyFile}, "", "need --tls-ca"},
		{"certificate and key of two clients", TLSFiles{CA: p.File, Cert: p.Client.CertFile, Key: other.Client.KeyFile}, "", "private key does not match public key"},
		{"CA without certificates", TLSFiles{CA: empty}, "", "no PEM certificate"},
		{"missing CA", TLSFiles{CA: "/nonexistent/ca.pem"}, "", "--tls-ca"},
		{"init without TLS", TLSFiles{CA: p.File}, notls, "was built without TLS (-tags nbdroot_notls): use nbdroot-init-tls"},
		{"init that is not a Go program", TLSFiles{CA: p.File}, plainInit(t), "cannot tell whether it speaks TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := f.opts()
			opts.Init = goInit(t)
			if tc.init != "" {
				opts.Init = tc.init
			}
			tls := tc.tls
			opts.TLS = &tls
			_, err := Build(opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// notlsInit builds a small Go program with the tag of an init without TLS.
func notlsInit(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "nbdroot-init")
	cmd := exec.Command("go", "build", "-tags", NoTLSTag, "-o", out, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO111MODULE=off", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}
