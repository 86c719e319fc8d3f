package install

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/initramfs"
)

// fakeBuilder stands in for `nbdroot initramfs`: the image it writes to -o is the build's
// arguments other than -o, so a changed configuration changes the image and the same one
// gives the same bytes, as with the real, reproducible builder.
type fakeBuilder struct {
	calls [][]string
	fail  map[string]bool // kernel releases whose build fails
}

func (b *fakeBuilder) build(args []string) (*initramfs.Summary, error) {
	b.calls = append(b.calls, args)
	var out, kver string
	var rest []string
	for _, a := range args {
		switch {
		case strings.HasPrefix(a, "-o="):
			out = strings.TrimPrefix(a, "-o=")
		case strings.HasPrefix(a, "--kver="):
			kver = strings.TrimPrefix(a, "--kver=")
			rest = append(rest, a)
		default:
			rest = append(rest, a)
		}
	}
	if b.fail[kver] {
		return nil, fmt.Errorf("module ext4 not found for %s", kver)
	}
	content := []byte(strings.Join(rest, "\n") + "\n")
	if err := os.WriteFile(out, content, 0o644); err != nil {
		return nil, err
	}
	return &initramfs.Summary{Output: out, KVer: kver, ImageSize: int64(len(content))}, nil
}

// tree writes files (path → content; "→TARGET" makes a symbolic link, a trailing / a
// directory) below dir.
func tree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case strings.HasPrefix(c, "→"):
			err = os.Symlink(strings.TrimPrefix(c, "→"), full)
		case strings.HasSuffix(p, "/"):
			err = os.MkdirAll(full, 0o755)
		default:
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// debianRoot is a root as debootstrap makes one, reduced to what install looks at: a
// merged /usr, dpkg, one kernel.
func debianRoot(t *testing.T) string {
	dir := t.TempDir()
	tree(t, dir, map[string]string{
		"etc/os-release": "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n",
		"usr/lib/modules/6.1.0-18-amd64/modules.order": "",
		"lib":                            "→usr/lib",
		"var/lib/dpkg/status":            "",
		"boot/vmlinuz-6.1.0-18-amd64":    "kernel 6.1.0-18",
		"boot/initrd.img-6.1.0-18-amd64": "Debian's own initramfs",
	})
	return dir
}

// binaries are stand-ins for nbdroot and nbdroot-init on this machine.
func binaries(t *testing.T) (bin, init string) {
	dir := t.TempDir()
	bin, init = filepath.Join(dir, "nbdroot"), filepath.Join(dir, "nbdroot-init")
	os.WriteFile(bin, []byte("nbdroot binary"), 0o755)
	os.WriteFile(init, []byte("init binary"), 0o755)
	return bin, init
}

func installer(t *testing.T, root string, b *fakeBuilder) *Installer {
	bin, init := binaries(t)
	return &Installer{Root: root, Bin: bin, Init: init, Build: b.build, Known: knownOption}
}

// snapshot is every path below dir with its mode and content, to see what changed.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		v := fi.Mode().String()
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			v += " " + string(b)
		}
		m[strings.TrimPrefix(p, dir)] = v
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func actions(rep *Report) map[string]Action {
	m := map[string]Action{}
	for _, s := range rep.Steps {
		m[s.Path] = s.Action
	}
	return m
}

func TestInstallDebianRoot(t *testing.T) {
	root := debianRoot(t)
	b := &fakeBuilder{}
	in := installer(t, root, b)
	rep, err := in.Install()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]Action{
		"/usr/bin/nbdroot":                                 Installed,
		"/usr/lib/nbdroot/nbdroot-init":                    Installed,
		"/etc/kernel/postinst.d/nbdroot":                   Installed,
		"/etc/kernel/postrm.d/nbdroot":                     Installed,
		"/usr/share/libalpm/hooks/90-nbdroot-install.hook": Skipped,
		"/usr/share/libalpm/hooks/60-nbdroot-remove.hook":  Skipped,
		"/usr/share/libalpm/scripts/nbdroot":               Skipped,
		"/usr/lib/kernel/install.d/60-nbdroot.install":     Skipped,
		ConfPath:                           Installed,
		"/boot/nbdroot.img-6.1.0-18-amd64": Built,
	}
	if got := actions(rep); !mapsEqual(got, want) {
		t.Errorf("actions (-want +got):\n-%v\n+%v", want, got)
	}
	for p, mode := range map[string]fs.FileMode{"usr/bin/nbdroot": 0o755, "usr/lib/nbdroot/nbdroot-init": 0o755,
		"etc/kernel/postinst.d/nbdroot": 0o755, "etc/kernel/postrm.d/nbdroot": 0o755, "etc/nbdroot/initramfs.conf": 0o644,
		"boot/nbdroot.img-6.1.0-18-amd64": 0o644} {
		fi, err := os.Stat(filepath.Join(root, p))
		if err != nil || fi.Mode().Perm() != mode {
			t.Errorf("%s: %v, mode %v, want %v", p, err, fi.Mode().Perm(), mode)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "usr/bin/nbdroot")); string(b) != "nbdroot binary" {
		t.Errorf("/usr/bin/nbdroot holds %q", b)
	}
	// The build ran with the configuration's options, paths inside the root, for the
	// kernel's release, into a temporary file beside the image.
	if len(b.calls) != 1 {
		t.Fatalf("%d builds, want 1", len(b.calls))
	}
	wantArgs := []string{"--hooks=base udev net nbd encrypt filesystems", "--compression=zstd",
		"--init=" + root + "/usr/lib/nbdroot/nbdroot-init", "--root=" + root, "--kver=6.1.0-18-amd64",
		"-o=" + root + "/boot/.nbdroot-install.nbdroot.img-6.1.0-18-amd64"}
	if !slices.Equal(b.calls[0], wantArgs) {
		t.Errorf("build arguments (-want +got):\n-%q\n+%q", wantArgs, b.calls[0])
	}
	if rep.Boots == nil || rep.Boots.Version != "6.1.0-18-amd64" {
		t.Errorf("boots %+v, want 6.1.0-18-amd64", rep.Boots)
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, line := range []string{
		"nbdroot install: " + root + " (Debian GNU/Linux 12 (bookworm))",
		"skipped       /usr/lib/kernel/install.d/60-nbdroot.install",
		"no kernel-install in this root (no /usr/bin/kernel-install)",
		"built         /boot/nbdroot.img-6.1.0-18-amd64",
		"nbdroot serve boots this root with kernel 6.1.0-18-amd64 (/boot/vmlinuz-6.1.0-18-amd64, /boot/nbdroot.img-6.1.0-18-amd64)",
	} {
		if !strings.Contains(text.String(), line) {
			t.Errorf("summary lacks %q:\n%s", line, text.String())
		}
	}

	// A second run changes nothing: not a file, not a time stamp.
	before := snapshot(t, root)
	rep, err = in.Install()
	if err != nil {
		t.Fatal(err)
	}
	if rep.Changed() {
		t.Errorf("second run changed something: %+v", rep.Steps)
	}
	if after := snapshot(t, root); !mapsEqual(before, after) {
		t.Errorf("second run changed the tree")
	}
	if a := actions(rep); a[ConfPath] != Kept || a["/boot/nbdroot.img-6.1.0-18-amd64"] != Unchanged {
		t.Errorf("second run: %v", a)
	}

	// An edited configuration is kept and rebuilds the image with it.
	conf := filepath.Join(root, "etc/nbdroot/initramfs.conf")
	os.WriteFile(conf, []byte("hooks base udev net nbd filesystems\n"), 0o644)
	rep, err = in.Install()
	if err != nil {
		t.Fatal(err)
	}
	if a := actions(rep); a[ConfPath] != Kept || a["/boot/nbdroot.img-6.1.0-18-amd64"] != Updated {
		t.Errorf("after editing the configuration: %v", a)
	}
	if img, _ := os.ReadFile(filepath.Join(root, "boot/nbdroot.img-6.1.0-18-amd64")); !strings.Contains(string(img), "--hooks=base udev net nbd filesystems\n") {
		t.Errorf("image not rebuilt with the edited configuration:\n%s", img)
	}
	if c, _ := os.ReadFile(conf); string(c) != "hooks base udev net nbd filesystems\n" {
		t.Errorf("configuration replaced: %q", c)
	}
	noTemporaries(t, root)
}

func mapsEqual[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// noTemporaries fails when an installation left a temporary file behind.
func noTemporaries(t *testing.T, root string) {
	t.Helper()
	for p := range snapshot(t, root) {
		if strings.Contains(p, ".nbdroot-install.") || strings.Contains(p, ".tmp") {
			t.Errorf("temporary file left: %s", p)
		}
	}
}

func TestInstallDryRun(t *testing.T) {
	root := debianRoot(t)
	b := &fakeBuilder{}
	in := installer(t, root, b)
	in.DryRun = true
	before := snapshot(t, root)
	rep, err := in.Install()
	if err != nil {
		t.Fatal(err)
	}
	if after := snapshot(t, root); !mapsEqual(before, after) {
		t.Errorf("a dry run changed the tree")
	}
	if len(b.calls) != 0 {
		t.Errorf("a dry run built %d images", len(b.calls))
	}
	var text bytes.Buffer
	rep.WriteText(&text)
	for _, want := range []string{": dry run, nothing is changed", "would install /usr/bin/nbdroot",
		"would build   /boot/nbdroot.img-6.1.0-18-amd64",
		"nbdroot initramfs '--hooks=base udev net nbd encrypt filesystems' --compression=zstd --init=" + root + "/usr/lib/nbdroot/nbdroot-init --root=" + root + " --kver=6.1.0-18-amd64 -o=" + root + "/boot/nbdroot.img-6.1.0-18-amd64",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("dry run summary lacks %q:\n%s", want, text.String())
		}
	}
}

// TestInstallArchRoot: Arch keeps the kernel in the modules directory and names /boot's
// files by the package (pkgbase): the kernel is copied to /boot/vmlinuz-linux and the image
// is /boot/nbdroot.img-linux, built for the release; removal takes both.
func TestInstallArchRoot(t *testing.T) {
	root := t.TempDir()
	tree(t, root, map[string]string{
		"usr/lib/os-release":                      "NAME=\"Arch Linux\"\nPRETTY_NAME=\"Arch Linux\"\n",
		"etc/pacman.conf":                         "[options]\n",
		"lib":                                     "→usr/lib",
		"usr/bin/kernel-install":                  "",
		"usr/lib/modules/6.6.1-arch1-1/vmlinuz":   "arch kernel",
		"usr/lib/modules/6.6.1-arch1-1/pkgbase":   "linux\n",
		"usr/lib/modules/6.1.62-1-lts/vmlinuz":    "lts kernel",
		"usr/lib/modules/6.1.62-1-lts/pkgbase":    "linux-lts\n",
		"usr/lib/modules/6.5.0-old/extramodules/": "", // a removed kernel's leftovers
		"boot/": "",
	})
	b := &fakeBuilder{}
	in := installer(t, root, b)
	rep, err := in.Install()
	if err != nil {
		t.Fatal(err)
	}
	a := actions(rep)
	for p, want := range map[string]Action{
		"/usr/share/libalpm/hooks/90-nbdroot-install.hook": Installed, "/usr/share/libalpm/hooks/60-nbdroot-remove.hook": Installed,
		"/usr/share/libalpm/scripts/nbdroot": Installed, "/usr/lib/kernel/install.d/60-nbdroot.install": Installed,
		"/etc/kernel/postinst.d/nbdroot": Skipped, "/boot/vmlinuz-linux": Installed, "/boot/nbdroot.img-linux": Built,
		"/boot/vmlinuz-linux-lts": Installed, "/boot/nbdroot.img-linux-lts": Built,
	} {
		if a[p] != want {
			t.Errorf("%s: %q, want %q", p, a[p], want)
		}
	}
	if k, _ := os.ReadFile(filepath.Join(root, "boot/vmlinuz-linux")); string(k) != "arch kernel" {
		t.Errorf("/boot/vmlinuz-linux holds %q", k)
	}
	if img, _ := os.ReadFile(filepath.Join(root, "boot/nbdroot.img-linux")); !strings.Contains(string(img), "--kver=6.6.1-arch1-1") {
		t.Errorf("nbdroot.img-linux not built for the release:\n%s", img)
	}
	if !strings.Contains(strings.Join(rep.Notes, "\n"), "kernel 6.5.0-old: no kernel image") {
		t.Errorf("notes lack the leftover modules directory: %q", rep.Notes)
	}
	if rep.Boots == nil || rep.Boots.Version != "linux-lts" {
		// Version order: "linux-lts" is "linux" and more.
		t.Errorf("boots %+v", rep.Boots)
	}

	rep, err = in.RemoveKernel("6.6.1-arch1-1")
	if err != nil {
		t.Fatal(err)
	}
	if a := actions(rep); a["/boot/nbdroot.img-linux"] != Removed || a["/boot/vmlinuz-linux"] != Removed {
		t.Errorf("removal: %v", a)
	}
	for _, p := range []string{"boot/nbdroot.img-linux", "boot/vmlinuz-linux"} {
		if _, err := os.Stat(filepath.Join(root, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s still there: %v", p, err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "boot/nbdroot.img-linux-lts")); err != nil {
		t.Errorf("the other kernel's image went too: %v", err)
	}
}

// TestKernelHooksDebian: what dpkg's hooks run — a new kernel gets its image, a removed
// one loses it; the kernel package's own /boot/vmlinuz stays (dpkg removes it).
func TestKernelHooksDebian(t *testing.T) {
	root := debianRoot(t)
	b := &fakeBuilder{}
	in := installer(t, root, b)
	if _, err := in.Install(); err != nil {
		t.Fatal(err)
	}
	tree(t, root, map[string]string{"usr/lib/modules/6.1.0-19-amd64/modules.order": "", "boot/vmlinuz-6.1.0-19-amd64": "kernel 6.1.0-19"})
	rep, err := in.AddKernel("6.1.0-19-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if a := actions(rep); len(a) != 1 || a["/boot/nbdroot.img-6.1.0-19-amd64"] != Built {
		t.Errorf("AddKernel: %v", a)
	}
	if rep.Boots == nil || rep.Boots.Version != "6.1.0-19-amd64" {
		t.Errorf("boots %+v after adding 6.1.0-19", rep.Boots)
	}
	rep, err = in.RemoveKernel("6.1.0-19-amd64")
	if err != nil {
		t.Fatal(err)
	}
	if a := actions(rep); len(a) != 1 || a["/boot/nbdroot.img-6.1.0-19-amd64"] != Removed {
		t.Errorf("RemoveKernel: %v", a)
	}
	if rep.Boots == nil || rep.Boots.Version != "6.1.0-18-amd64" {
		t.Errorf("boots %+v after removing 6.1.0-19", rep.Boots)
	}
	if _, err := os.Stat(filepath.Join(root, "boot/vmlinuz-6.1.0-19-amd64")); err != nil {
		t.Errorf("the package's kernel was removed by nbdroot: %v", err)
	}
	// Removing again (postrm runs for remove, then purge) is not an error.
	if rep, err = in.RemoveKernel("6.1.0-19-amd64"); err != nil || actions(rep)["/boot/nbdroot.img-6.1.0-19-amd64"] != Unchanged {
		t.Errorf("second removal: %v %v", err, actions(rep))
	}
	for _, bad := range []string{"", "..", "a/b", "../../etc"} {
		if _, err := in.AddKernel(bad); err == nil {
			t.Errorf("AddKernel(%q) accepted", bad)
		}
		if _, err := in.RemoveKernel(bad); err == nil {
			t.Errorf("RemoveKernel(%q) accepted", bad)
		}
	}
	if _, err := in.AddKernel("6.9.9-missing"); err == nil || !strings.Contains(err.Error(), "no modules directory /lib/modules/6.9.9-missing") {
		t.Errorf("AddKernel of a kernel not installed: %v", err)
	}
}

// TestHooksOutsideClients: on a machine that is not a client (a server with the package),
// the hooks do nothing and say why.
func TestHooksOutsideClients(t *testing.T) {
	root := debianRoot(t)
	b := &fakeBuilder{}
	in := installer(t, root, b)
	before := snapshot(t, root)
	for name, f := range map[string]func(string) (*Report, error){"add": in.AddKernel, "remove": in.RemoveKernel} {
		rep, err := f("6.1.0-18-amd64")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if a := actions(rep); len(a) != 1 || a[ConfPath] != Skipped {
			t.Errorf("%s: %v", name, a)
		}
	}
	if len(b.calls) != 0 || !mapsEqual(before, snapshot(t, root)) {
		t.Errorf("hooks changed a root without %s", ConfPath)
	}
}

// TestInstallFailedBuild: one kernel whose build fails does not stop the others; the error
// names it and nothing half-written stays.
func TestInstallFailedBuild(t *testing.T) {
	root := debianRoot(t)
	tree(t, root, map[string]string{"usr/lib/modules/6.1.0-19-amd64/modules.order": "", "boot/vmlinuz-6.1.0-19-amd64": "kernel 6.1.0-19",
		"boot/nbdroot.img-6.1.0-2-amd64": "an old kernel's image"})
	b := &fakeBuilder{fail: map[string]bool{"6.1.0-18-amd64": true}}
	rep, err := installer(t, root, b).Install()
	if err == nil || !strings.Contains(err.Error(), "initramfs for kernel 6.1.0-18-amd64: module ext4 not found") {
		t.Fatalf("error %v", err)
	}
	a := actions(rep)
	if a["/boot/nbdroot.img-6.1.0-18-amd64"] != Failed || a["/boot/nbdroot.img-6.1.0-19-amd64"] != Built || a["/boot/nbdroot.img-6.1.0-2-amd64"] != Removed {
		t.Errorf("actions: %v", a)
	}
	noTemporaries(t, root)
}

func TestNotARoot(t *testing.T) {
	file := filepath.Join(t.TempDir(), "root.img")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		name  string
		files map[string]string
		dir   string
		want  string
	}{
		{"missing", nil, "/nonexistent/root", "no such file or directory"},
		{"image file", nil, file, "not a directory (an image file is made from the root's directory afterwards"},
		{"empty directory", map[string]string{}, "", "it has no /etc directory"},
		{"no /usr", map[string]string{"etc/os-release": "NAME=x\n"}, "", "it has no /usr directory"},
		{"no os-release", map[string]string{"etc/hostname": "x", "usr/bin/": ""}, "", "it has no /etc/os-release or /usr/lib/os-release"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir
			if dir == "" {
				dir = t.TempDir()
				tree(t, dir, tc.files)
			}
			var before map[string]string
			if tc.files != nil {
				before = snapshot(t, dir)
			}
			for _, run := range []func(in *Installer) error{
				func(in *Installer) error { _, err := in.Install(); return err },
				func(in *Installer) error { _, err := in.AddKernel("6.1"); return err },
				func(in *Installer) error { _, err := in.RemoveKernel("6.1"); return err },
			} {
				err := run(installer(t, dir, &fakeBuilder{}))
				if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--root") {
					t.Errorf("error %v, want one naming --root with %q", err, tc.want)
				}
			}
			if tc.files != nil && !mapsEqual(before, snapshot(t, dir)) {
				t.Errorf("something was written")
			}
		})
	}
}

// TestSymlinksStayInside: a root whose /etc/kernel is an absolute link (as in a tree
// copied from a live system) would lead a naive write onto this machine's files; the
// installation refuses instead.
func TestSymlinksStayInside(t *testing.T) {
	outside := t.TempDir()
	root := debianRoot(t)
	tree(t, root, map[string]string{"etc/kernel": "→" + outside})
	_, err := installer(t, root, &fakeBuilder{}).Install()
	if err == nil {
		t.Fatal("installed through an absolute link out of the root")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("wrote outside the root: %v", ents)
	}
}

// TestReplacesHardLinks: a root made with `cp -al` shares its files' inodes with another
// tree; an update replaces the file in this root and leaves the other tree's alone.
func TestReplacesHardLinks(t *testing.T) {
	root := debianRoot(t)
	in := installer(t, root, &fakeBuilder{})
	if _, err := in.Install(); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "postinst")
	if err := os.Link(filepath.Join(root, "etc/kernel/postinst.d/nbdroot"), other); err != nil {
		t.Fatal(err)
	}
	hook := filepath.Join(root, "etc/kernel/postinst.d/nbdroot")
	os.Remove(hook)
	os.WriteFile(other, []byte("an older hook"), 0o755)
	os.Link(other, hook)
	rep, err := in.Install()
	if err != nil {
		t.Fatal(err)
	}
	if actions(rep)["/etc/kernel/postinst.d/nbdroot"] != Updated {
		t.Errorf("hook not updated: %v", actions(rep))
	}
	if b, _ := os.ReadFile(other); string(b) != "an older hook" {
		t.Errorf("the other tree's file was written through: %q", b)
	}
}

// TestStage: the files of a package (make install, make deb) for a prefix: hooks in the
// directories each package manager reads for that prefix, naming the installed program;
// no configuration (a package is installed on servers too).
func TestStage(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		files  []string
	}{
		{"/usr", []string{"/usr/bin/nbdroot", "/usr/lib/nbdroot/nbdroot-init", "/etc/kernel/postinst.d/nbdroot", "/etc/kernel/postrm.d/nbdroot",
			"/usr/share/libalpm/hooks/90-nbdroot-install.hook", "/usr/share/libalpm/hooks/60-nbdroot-remove.hook",
			"/usr/share/libalpm/scripts/nbdroot", "/usr/lib/kernel/install.d/60-nbdroot.install"}},
		{"/usr/local", []string{"/usr/local/bin/nbdroot", "/usr/local/lib/nbdroot/nbdroot-init", "/etc/kernel/postinst.d/nbdroot",
			"/etc/kernel/postrm.d/nbdroot", "/etc/pacman.d/hooks/90-nbdroot-install.hook", "/etc/pacman.d/hooks/60-nbdroot-remove.hook",
			"/usr/local/share/libalpm/scripts/nbdroot", "/etc/kernel/install.d/60-nbdroot.install"}},
	} {
		t.Run(tc.prefix, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "dest")
			bin, init := binaries(t)
			if _, err := Stage(dest, tc.prefix, bin, init, false); err != nil {
				t.Fatal(err)
			}
			var got []string
			for p, v := range snapshot(t, dest) {
				if strings.HasPrefix(v, "-") {
					got = append(got, p)
				}
			}
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tc.files))
			if !slices.Equal(got, want) {
				t.Errorf("files (-want +got):\n-%q\n+%q", want, got)
			}
			hook, _ := os.ReadFile(filepath.Join(dest, "etc/kernel/postinst.d/nbdroot"))
			if !strings.Contains(string(hook), "exec "+tc.prefix+"/bin/nbdroot install --root / --kernel") {
				t.Errorf("hook does not run %s/bin/nbdroot:\n%s", tc.prefix, hook)
			}
		})
	}
}

// elfHeader is the 64-byte header of a little-endian 64-bit ELF executable for machine,
// enough for debug/elf.
func elfHeader(machine elf.Machine) []byte {
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1 // 64-bit, little-endian, version 1
	binary.LittleEndian.PutUint16(h[16:], uint16(elf.ET_EXEC))
	binary.LittleEndian.PutUint16(h[18:], uint16(machine))
	binary.LittleEndian.PutUint32(h[20:], 1)
	binary.LittleEndian.PutUint16(h[52:], 64) // e_ehsize
	binary.LittleEndian.PutUint16(h[54:], 56) // e_phentsize
	binary.LittleEndian.PutUint16(h[58:], 64) // e_shentsize
	return h
}

// TestInstallRefusesOtherArchitecture: an arm64 root gets no x86-64 nbdroot (its hooks could
// not run it, its init would not boot); the same architecture is installed.
func TestInstallRefusesOtherArchitecture(t *testing.T) {
	for _, tc := range []struct {
		name      string
		root, bin elf.Machine
		wantErr   bool
	}{
		{"same", elf.EM_X86_64, elf.EM_X86_64, false},
		{"arm64 root", elf.EM_AARCH64, elf.EM_X86_64, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := debianRoot(t)
			tree(t, root, map[string]string{"usr/bin/dash": string(elfHeader(tc.root)), "bin": "→usr/bin", "usr/bin/sh": "→dash"})
			in := installer(t, root, &fakeBuilder{})
			os.WriteFile(in.Bin, elfHeader(tc.bin), 0o755)
			before := snapshot(t, root)
			_, err := in.Install()
			var ae *ArchError
			if tc.wantErr {
				if !errors.As(err, &ae) || !strings.Contains(err.Error(), "EM_X86_64, the root's programs (/bin/sh) for EM_AARCH64") {
					t.Fatalf("error %v, want an ArchError", err)
				}
				if !mapsEqual(before, snapshot(t, root)) {
					t.Error("files were written for another architecture")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
