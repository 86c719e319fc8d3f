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

// initramfsFixture writes a chroot with a synthetic kernel's modules and a fake init.
func initramfsFixture(t *testing.T) (root, init string) {
	t.Helper()
	root = t.TempDir()
	if err := kmodtest.Debian61().Write(filepath.Join(root, "lib", "modules", "6.1.0-test")); err != nil {
		t.Fatal(err)
	}
	init = filepath.Join(root, "nbdroot-init")
	if err := inittest.Write(init, inittest.Init); err != nil {
		t.Fatal(err)
	}
	return root, init
}

func TestInitramfsCLI(t *testing.T) {
	root, init := initramfsFixture(t)
	out := filepath.Join(t.TempDir(), "kernel26.img")
	conf := filepath.Join(root, "mkinitcpio.conf")
	if err := os.WriteFile(conf, []byte("HOOKS=(base udev net nbd filesystems)\nMODULES=(tg3)\nCOMPRESSION=\"gzip\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		args       []string
		wantStatus int
		wantStdout []string
		wantStderr []string
	}{
		{name: "help", args: []string{"--help"}, wantStdout: []string{"--modules", "--root", "--hooks", "--config", "--add-module", "--file", "--keyfile", "--nics", "--compression", "--init", "--arch", "--binary", "--keymap", "--autodetect-from", "-o"}},
		{name: "Makefile invocation", args: []string{"--modules", filepath.Join(root, "lib/modules/6.1.0-test"), "--hooks", "base udev net nbd encrypt filesystems", "--init", init, "-o", out},
			wantStdout: []string{out, "zstd", "base udev net nbd encrypt filesystems", "ext4"}},
		{name: "chroot and mkinitcpio config", args: []string{"--root", root, "--config", conf, "--init", init, "-o", out},
			wantStdout: []string{"gzip", "base udev net nbd filesystems", "tg3"}},
		{name: "hooks line form", args: []string{"--root", root, "--kver", "6.1.0-test", "--hooks", `HOOKS="base nbd"`, "--nics", "e1000", "--compression", "none", "--init", init, "-o", out},
			wantStdout: []string{"none", "base nbd"}},
		{name: "unknown hooks", args: []string{"--root", root, "--hooks", "base resume udev shutdown", "--init", init, "-o", out}, wantStatus: 1,
			wantStderr: []string{`unknown hooks "resume", "shutdown"`, "filesystems"}},
		{name: "stock Arch HOOKS line", args: []string{"--root", root, "--hooks", "HOOKS=(base udev autodetect microcode modconf kms keyboard keymap consolefont block net nbd encrypt filesystems fsck)", "--init", init, "-o", out},
			wantStdout: []string{"    autodetect   nothing left out", "    fsck         not run at boot", "    consolefont  accepted"}},
		{name: "init is not an executable", args: []string{"--root", root, "--init", conf, "-o", out}, wantStatus: 1,
			wantStderr: []string{"--init " + conf + ": not an ELF executable"}},
		{name: "init for another architecture", args: []string{"--root", root, "--arch", "arm64", "--init", init, "-o", out}, wantStatus: 1,
			wantStderr: []string{"--arch arm64, but the modules"}},
		{name: "bad arch", args: []string{"--root", root, "--arch", "vax", "--init", init, "-o", out}, wantStatus: 2,
			wantStderr: []string{"--arch", "vax"}},
		{name: "autodetect-from without the hook", args: []string{"--root", root, "--autodetect-from", conf, "--init", init, "-o", out}, wantStatus: 1,
			wantStderr: []string{"--autodetect-from needs the autodetect hook"}},
		{name: "missing module", args: []string{"--root", root, "--add-module", "zfs", "--init", init, "-o", out}, wantStatus: 1,
			wantStderr: []string{"zfs", "--add-module"}},
		{name: "no output", args: []string{"--root", root, "--init", init}, wantStatus: 2, wantStderr: []string{"-o OUT"}},
		{name: "no modules", args: []string{"--init", init, "-o", out}, wantStatus: 2, wantStderr: []string{"--modules DIR or --root CHROOT"}},
		{name: "both sources", args: []string{"--root", root, "--modules", root, "--init", init, "-o", out}, wantStatus: 2},
		{name: "bad compression", args: []string{"--root", root, "--compression", "bzip2", "--init", init, "-o", out}, wantStatus: 2, wantStderr: []string{"bzip2"}},
		{name: "bad file spec", args: []string{"--root", root, "--file", "/etc/hosts:relative", "--init", init, "-o", out}, wantStatus: 2, wantStderr: []string{"not an absolute path"}},
		{name: "no kernel under root", args: []string{"--root", t.TempDir(), "--init", init, "-o", out}, wantStatus: 1, wantStderr: []string{"--root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			status := run(append([]string{"initramfs"}, tt.args...), &stdout, &stderr)
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
		})
	}
}

func TestInitramfsSourceDateEpoch(t *testing.T) {
	root, init := initramfsFixture(t)
	dir := t.TempDir()
	build := func(name string) []byte {
		out := filepath.Join(dir, name)
		var stdout, stderr bytes.Buffer
		if status := run([]string{"initramfs", "--root", root, "--init", init, "-o", out}, &stdout, &stderr); status != 0 {
			t.Fatalf("status %d: %s", status, stderr.String())
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := build("a.img")
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	b := build("b.img")
	c := build("c.img")
	if bytes.Equal(a, b) {
		t.Error("SOURCE_DATE_EPOCH did not change the image")
	}
	if !bytes.Equal(b, c) {
		t.Error("two builds with the same SOURCE_DATE_EPOCH differ")
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	var stderr bytes.Buffer
	if status := run([]string{"initramfs", "--root", root, "--init", init, "-o", filepath.Join(dir, "d.img")}, &bytes.Buffer{}, &stderr); status != 2 {
		t.Errorf("bad SOURCE_DATE_EPOCH: status %d, want 2", status)
	}
}
