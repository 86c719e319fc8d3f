package initramfs

import (
	"debug/elf"

	"github.com/nbdroot/nbdroot/initramfs/inittest"

	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChrootModules(t *testing.T) {
	one, several := t.TempDir(), t.TempDir()
	os.MkdirAll(filepath.Join(one, "lib/modules/6.1.0-test"), 0o755)
	for _, v := range []string{"6.1.0-a", "6.12.0-b"} {
		os.MkdirAll(filepath.Join(several, "lib/modules", v), 0o755)
	}
	tests := []struct {
		name, root, kver, want, wantErr string
	}{
		{"the only kernel", one, "", filepath.Join(one, "lib/modules/6.1.0-test"), ""},
		{"kver chosen", several, "6.12.0-b", filepath.Join(several, "lib/modules/6.12.0-b"), ""},
		{"several", several, "", "", "several kernels under " + filepath.Join(several, "lib/modules") + " (6.1.0-a, 6.12.0-b): choose one with --kver"},
		{"none", t.TempDir(), "", "", "--root: open"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ChrootModules(tt.root, tt.kver)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ChrootModules = %q, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ChrootModules = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestConfigApply: the command line wins over mkinitcpio.conf for HOOKS and COMPRESSION;
// MODULES and FILES add up, the config's first.
func TestConfigApply(t *testing.T) {
	cfg := &Config{Hooks: []string{"base", "nbd"}, Modules: []string{"tg3"}, Files: []string{"/etc/hosts"}, Compression: "cat"}
	var empty Options
	cfg.Apply(&empty)
	want := Options{Hooks: []string{"base", "nbd"}, AddModules: []string{"tg3"}, Files: []File{{"/etc/hosts", "/etc/hosts"}}, Compression: None}
	if diff := cmp.Diff(want, empty); diff != "" {
		t.Errorf("into empty options (-want +got):\n%s", diff)
	}
	flags := Options{Hooks: []string{"base"}, AddModules: []string{"e1000"}, Files: []File{{"/a", "/b"}}, Compression: Gzip}
	cfg.Apply(&flags)
	want = Options{Hooks: []string{"base"}, AddModules: []string{"tg3", "e1000"},
		Files: []File{{"/etc/hosts", "/etc/hosts"}, {"/a", "/b"}}, Compression: Gzip}
	if diff := cmp.Diff(want, flags); diff != "" {
		t.Errorf("under command line options (-want +got):\n%s", diff)
	}
}

func TestSourceDateEpoch(t *testing.T) {
	for in, want := range map[string]int64{"": 0, "0": 0, "1700000000": 1700000000, "4294967295": 1<<32 - 1} {
		if got, err := SourceDateEpoch(in); err != nil || got != want {
			t.Errorf("SourceDateEpoch(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"yesterday", "-1", "4294967296", "1e9"} {
		if got, err := SourceDateEpoch(in); err == nil {
			t.Errorf("SourceDateEpoch(%q) = %d, want an error", in, got)
		}
	}
}

// TestDefaultInit: the init beside the program for the host architecture, in ARCH/ for
// another one; a file of the wrong architecture is passed over.
func TestDefaultInit(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "nbdroot")
	amd64, _ := ParseArch("amd64")
	arm64, _ := ParseArch("arm64")
	if got, tried := DefaultInit(exe, amd64); got != "" || len(tried) != 4 {
		t.Errorf("DefaultInit without nbdroot-init = %q (tried %q)", got, tried)
	}
	if err := inittest.Write(filepath.Join(dir, "nbdroot-init"), inittest.Init); err != nil {
		t.Fatal(err)
	}
	if got, _ := DefaultInit(exe, amd64); got != filepath.Join(dir, "nbdroot-init") {
		t.Errorf("DefaultInit(amd64) = %q", got)
	}
	if got, _ := DefaultInit(exe, arm64); got != "" {
		t.Errorf("DefaultInit(arm64) = %q, an amd64 binary", got)
	}
	os.Mkdir(filepath.Join(dir, "arm64"), 0o755)
	armInit := inittest.Init
	armInit.Machine = elf.EM_AARCH64
	if err := inittest.Write(filepath.Join(dir, "arm64", "nbdroot-init"), armInit); err != nil {
		t.Fatal(err)
	}
	if got, _ := DefaultInit(exe, arm64); got != filepath.Join(dir, "arm64", "nbdroot-init") {
		t.Errorf("DefaultInit(arm64) = %q", got)
	}
}

// TestDefaultInitInstalled: an installed nbdroot (PREFIX/bin/nbdroot) finds its init in
// PREFIX/lib/nbdroot, where make install and the Debian package put it; one beside the
// program (a build directory) comes first.
func TestDefaultInitInstalled(t *testing.T) {
	prefix := t.TempDir()
	exe := filepath.Join(prefix, "bin", "nbdroot")
	installed := filepath.Join(prefix, "lib", "nbdroot", "nbdroot-init")
	os.MkdirAll(filepath.Dir(installed), 0o755)
	os.MkdirAll(filepath.Dir(exe), 0o755)
	if err := inittest.Write(installed, inittest.Init); err != nil {
		t.Fatal(err)
	}
	amd64, _ := ParseArch("amd64")
	if got, _ := DefaultInit(exe, amd64); got != installed {
		t.Errorf("DefaultInit = %q, want %q", got, installed)
	}
	beside := filepath.Join(prefix, "bin", "nbdroot-init")
	if err := inittest.Write(beside, inittest.Init); err != nil {
		t.Fatal(err)
	}
	if got, _ := DefaultInit(exe, amd64); got != beside {
		t.Errorf("DefaultInit with both = %q, want %q", got, beside)
	}
}

// TestDefaultTLSInit: images with TLS files take nbdroot-init-tls, found where nbdroot-init
// is (beside the program, in ARCH/, in the installed place); the plain init is not it.
func TestDefaultTLSInit(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "nbdroot")
	amd64, _ := ParseArch("amd64")
	if err := inittest.Write(filepath.Join(dir, "nbdroot-init"), inittest.Init); err != nil {
		t.Fatal(err)
	}
	if got, tried := DefaultTLSInit(exe, amd64); got != "" || len(tried) != 4 {
		t.Errorf("DefaultTLSInit with only nbdroot-init = %q (tried %q)", got, tried)
	}
	tlsInit := filepath.Join(dir, TLSInitName)
	if err := inittest.Write(tlsInit, inittest.Init); err != nil {
		t.Fatal(err)
	}
	if got, _ := DefaultTLSInit(exe, amd64); got != tlsInit {
		t.Errorf("DefaultTLSInit = %q, want %q", got, tlsInit)
	}
	if got, _ := DefaultInit(exe, amd64); got != filepath.Join(dir, "nbdroot-init") {
		t.Errorf("DefaultInit = %q, want the plain init", got)
	}
}
