package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/initramfs/inittest"
	"github.com/nbdroot/nbdroot/kmod/kmodtest"
)

// installFixture is a client root with a synthetic kernel (its modules and /boot/vmlinuz)
// and dpkg, and a synthetic static init to install.
func installFixture(t *testing.T) (root, init string) {
	t.Helper()
	root = t.TempDir()
	if err := kmodtest.Debian61().Write(filepath.Join(root, "lib", "modules", "6.1.0-test")); err != nil {
		t.Fatal(err)
	}
	for p, c := range map[string]string{"etc/os-release": "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
		"boot/vmlinuz-6.1.0-test": "kernel", "var/lib/dpkg/status": "", "usr/bin/true": ""} {
		os.MkdirAll(filepath.Join(root, filepath.Dir(p)), 0o755)
		if err := os.WriteFile(filepath.Join(root, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	init = filepath.Join(t.TempDir(), "nbdroot-init")
	// The builder refuses an init the kernel could not run: a synthetic static ELF passes.
	if err := inittest.Write(init, inittest.Init); err != nil {
		t.Fatal(err)
	}
	return root, init
}

func TestInstallCLI(t *testing.T) {
	root, init := installFixture(t)
	badConf, _ := installFixture(t)
	os.MkdirAll(filepath.Join(badConf, "etc/nbdroot"), 0o755)
	os.WriteFile(filepath.Join(badConf, "etc/nbdroot/initramfs.conf"), []byte("hooks base udev\nHOOKS=(base)\n"), 0o644)
	for _, tt := range []struct {
		name       string
		args       []string
		wantStatus int
		wantStdout []string
		wantStderr []string
	}{
		{name: "help", args: []string{"--help"}, wantStdout: []string{"usage: nbdroot install --root DIR", "--kernel", "--remove-kernel", "--destdir", "--dry-run"}},
		{name: "help after flags", args: []string{"--root", root, "-h"}, wantStdout: []string{"usage: nbdroot install --root DIR"}},
		{name: "unknown flag", args: []string{"--bogus"}, wantStatus: 2, wantStderr: []string{"flag provided but not defined: -bogus\n'nbdroot install --help' lists the options\n"}},
		{name: "no root", args: nil, wantStatus: 2, wantStderr: []string{"--root DIR is required"}},
		{name: "missing root before binaries", args: []string{"--root", "/nonexistent/root"}, wantStatus: 1, wantStderr: []string{"--root: stat /nonexistent/root"}},
		{name: "both kernel flags", args: []string{"--root", root, "--kernel", "a", "--remove-kernel", "b"}, wantStatus: 2, wantStderr: []string{"exclude each other"}},
		{name: "destdir and root", args: []string{"--root", root, "--destdir", t.TempDir()}, wantStatus: 2, wantStderr: []string{"--destdir"}},
		{name: "argument", args: []string{"--root", root, "extra"}, wantStatus: 2, wantStderr: []string{`unexpected argument "extra"`}},
		{name: "not a root", args: []string{"--root", t.TempDir(), "--init", init}, wantStatus: 1, wantStderr: []string{"is not a root file system: it has no /etc directory"}},
		{name: "dry run", args: []string{"--root", root, "--init", init, "--dry-run"},
			wantStdout: []string{"dry run", "would install /usr/bin/nbdroot", "would build   /boot/nbdroot.img-6.1.0-test", "--kver=6.1.0-test"}},
		{name: "install", args: []string{"--root", root, "--init", init},
			wantStdout: []string{"installed     /etc/kernel/postinst.d/nbdroot", "built         /boot/nbdroot.img-6.1.0-test",
				"nbdroot serve boots this root with kernel 6.1.0-test"}},
		{name: "again", args: []string{"--root", root, "--init", init},
			wantStdout: []string{"kept          /etc/nbdroot/initramfs.conf", "unchanged     /boot/nbdroot.img-6.1.0-test"}},
		{name: "kernel hook", args: []string{"--root", root, "--kernel", "6.1.0-test"}, wantStdout: []string{"unchanged     /boot/nbdroot.img-6.1.0-test"}},
		{name: "kernel not installed", args: []string{"--root", root, "--kernel", "6.9"}, wantStatus: 1, wantStderr: []string{"no modules directory /lib/modules/6.9"}},
		{name: "bad configuration", args: []string{"--root", badConf, "--kernel", "6.1.0-test"}, wantStatus: 1,
			wantStderr: []string{`/etc/nbdroot/initramfs.conf line 2: "HOOKS=(base)": write NAME VALUE`}},
		{name: "removal hook", args: []string{"--root", root, "--remove-kernel", "6.1.0-test"}, wantStdout: []string{"removed       /boot/nbdroot.img-6.1.0-test"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(append([]string{"install"}, tt.args...), &stdout, &stderr)
			if status != tt.wantStatus {
				t.Fatalf("status %d, want %d\nstdout: %s\nstderr: %s", status, tt.wantStatus, stdout.String(), stderr.String())
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
			if strings.HasPrefix(tt.name, "help") && stderr.Len() > 0 {
				t.Errorf("help wrote to stderr: %s", stderr.String())
			}
			if strings.Contains(stderr.String(), "usage:") {
				t.Errorf("the usage went to stderr:\n%s", stderr.String())
			}
		})
	}
}

// TestInstallBuildsRealImage: the image install builds is the builder's, with the
// configuration's options (a compressed cpio with the hooks line).
func TestInstallBuildsRealImage(t *testing.T) {
	root, init := installFixture(t)
	var stdout, stderr bytes.Buffer
	if status := run([]string{"install", "--root", root, "--init", init}, &stdout, &stderr); status != 0 {
		t.Fatalf("status %d: %s%s", status, stdout.String(), stderr.String())
	}
	img, err := os.ReadFile(filepath.Join(root, "boot/nbdroot.img-6.1.0-test"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img, []byte{0x28, 0xb5, 0x2f, 0xfd}) {
		t.Errorf("image is not zstd (the configuration's compression): % x", img[:8])
	}
	// Another compression in the configuration gives another image.
	conf := filepath.Join(root, "etc/nbdroot/initramfs.conf")
	b, _ := os.ReadFile(conf)
	os.WriteFile(conf, bytes.Replace(b, []byte("compression zstd"), []byte("compression gzip"), 1), 0o644)
	stdout.Reset()
	if status := run([]string{"install", "--root", root, "--kernel", "6.1.0-test"}, &stdout, &stderr); status != 0 {
		t.Fatalf("status %d: %s", status, stderr.String())
	}
	if img, _ = os.ReadFile(filepath.Join(root, "boot/nbdroot.img-6.1.0-test")); !bytes.HasPrefix(img, []byte{0x1f, 0x8b}) {
		t.Errorf("image not rebuilt with gzip: % x\n%s", img[:8], stdout.String())
	}
	if !strings.Contains(stdout.String(), "updated       /boot/nbdroot.img-6.1.0-test") {
		t.Errorf("summary:\n%s", stdout.String())
	}
}

func TestVersionFlag(t *testing.T) {
	for _, arg := range []string{"--version", "version"} {
		var stdout, stderr bytes.Buffer
		if status := run([]string{arg}, &stdout, &stderr); status != 0 || !strings.HasPrefix(stdout.String(), "nbdroot ") || stderr.Len() > 0 {
			t.Errorf("%s: status %d, stdout %q, stderr %q", arg, status, stdout.String(), stderr.String())
		}
	}
}
