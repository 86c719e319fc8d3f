package vm

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/nbdroot/nbdroot/initramfs"
	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// DebianSuites are the releases the distribution tests boot: Debian 12 (kernel 6.1, plain
// .ko modules) and Debian 13 (6.12, .ko.xz).
var DebianSuites = []string{"bookworm", "trixie"}

// DebianPackages is what a thin client's root needs on top of debootstrap's minbase: an init,
// udev, modules, the ip tool and the distribution's own kernel.
var DebianPackages = []string{"systemd-sysv", "udev", "kmod", "iproute2", "linux-image-amd64"}

// DebianMirror is where debootstrap fetches packages (NBDROOT_DEBIAN_MIRROR overrides it).
func DebianMirror() string {
	if m := os.Getenv("NBDROOT_DEBIAN_MIRROR"); m != "" {
		return m
	}
	return "http://deb.debian.org/debian"
}

// CacheDir is where expensive artefacts (kernels, debootstrapped roots) are kept between
// runs on one machine: NBDROOT_CACHE, else ~/.cache/nbdroot.
func CacheDir() string {
	if d := os.Getenv("NBDROOT_CACHE"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "nbdroot")
}

// DebianRoot returns a debootstrapped root tree of suite (minbase + DebianPackages), built
// once per machine under CacheDir()/roots and reused by later runs: about two minutes the
// first time. Concurrent callers (parallel tests, several test binaries) build it once: the
// build holds a lock file, and a tree is only used once its ".done" stamp exists. The tree is
// shared: callers must not modify it (DebianImage copies what it changes).
func DebianRoot(t TB, suite string) string {
	t.Helper()
	dir, err := debianRoot(suite)
	if err != nil {
		t.Fatalf("debian %s root: %v", suite, err)
	}
	return dir
}

func debianRoot(suite string) (string, error) {
	base := filepath.Join(CacheDir(), "roots")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", err
	}
	key := suite + "-" + strings.Join(DebianPackages, ",")
	dir := filepath.Join(base, suite)
	stamp := dir + ".done"
	if b, err := os.ReadFile(stamp); err == nil && string(b) == key+"\n" {
		return dir, nil
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	// Another process may have built it while this one waited for the lock.
	if b, err := os.ReadFile(stamp); err == nil && string(b) == key+"\n" {
		return dir, nil
	}
	if _, err := exec.LookPath("debootstrap"); err != nil {
		return "", fmt.Errorf("debootstrap is not installed (scripts/deps.sh installs it): %w", err)
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	os.Remove(stamp)
	cmd := exec.Command("debootstrap", "--variant=minbase", "--include="+strings.Join(DebianPackages, ","),
		suite, tmp, DebianMirror())
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("debootstrap %s: %v\n%s", suite, err, tail(string(out), 30))
	}
	// The distribution's own initramfs is never used here; dropping it keeps images small.
	if olds, _ := filepath.Glob(filepath.Join(tmp, "boot", "initrd.img-*")); len(olds) > 0 {
		for _, o := range olds {
			os.Remove(o)
		}
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, os.WriteFile(stamp, []byte(key+"\n"), 0o644)
}

// DebianKernel returns the root's kernel release (the only one under lib/modules, or the
// newest) and the path of its vmlinuz.
func DebianKernel(t TB, root string) (release, vmlinuz string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "lib", "modules"))
	if err != nil {
		t.Fatal(err)
	}
	var rels []string
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(root, "boot", "vmlinuz-"+e.Name())); err == nil {
			rels = append(rels, e.Name())
		}
	}
	if len(rels) == 0 {
		t.Fatalf("%s: no kernel in /boot with modules in /lib/modules", root)
	}
	sort.Strings(rels)
	rel := rels[len(rels)-1]
	return rel, filepath.Join(root, "boot", "vmlinuz-"+rel)
}

// DebianImageOptions shape the root image made from a cached Debian tree.
type DebianImageOptions struct {
	// Files are written into the image's tree (path inside the root → content), replacing
	// what the tree has; modes are 0644, or 0755 for paths under bin/ or ending in .sh.
	Files map[string]string
	// SizeMB defaults to 2048.
	SizeMB int
	// Prepare, when set, changes the tree (a copy of the cache: replace files, never write
	// into them) before the image is made, e.g. `nbdroot install --root TREE`.
	Prepare func(tree string) error
	// Root is the tree to image instead of DebianRoot(suite): one of DebianRootWith.
	Root string
}

// autologin logs root in on the serial console, so that tests type commands at a shell.
const autologin = `[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
`

// DebianShellPrompt matches the root shell's prompt on the serial console after autologin.
const DebianShellPrompt = `root@[^:\s]+:[^#\r\n]*# `

// DebianImage builds an ext4 image (4 KiB blocks) of the cached tree of suite, with root
// logged in automatically on ttyS0 and opts.Files added. The tree is copied with hard links,
// so only the files written here are new.
func (e *Env) DebianImage(t TB, suite string, o DebianImageOptions) string {
	t.Helper()
	root := o.Root
	if root == "" {
		root = DebianRoot(t, suite)
	}
	tree := filepath.Join(t.TempDir(), "tree")
	if out, err := exec.Command("cp", "-al", root, tree).CombinedOutput(); err != nil {
		t.Fatalf("copy %s: %v\n%s", root, err, out)
	}
	files := map[string]string{
		"etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf": autologin,
		"etc/hostname": "nbdroot-" + suite + "\n",
		"etc/fstab":    "# the root is mounted by the initramfs\n",
	}
	for k, v := range o.Files {
		files[k] = v
	}
	for rel, content := range files {
		p := filepath.Join(tree, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		// Never write through a hard link into the shared cache.
		os.Remove(p)
		mode := os.FileMode(0o644)
		if strings.HasPrefix(rel, "bin/") || strings.HasPrefix(rel, "usr/local/bin/") || strings.HasSuffix(rel, ".sh") {
			mode = 0o755
		}
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	if o.Prepare != nil {
		if err := o.Prepare(tree); err != nil {
			t.Fatalf("prepare %s: %v", tree, err)
		}
	}
	size := o.SizeMB
	if size == 0 {
		size = 2048
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if err := MkfsExt4(img, tree, size, 4096); err != nil {
		t.Fatal(err)
	}
	return img
}

// InitramfsFromRoot builds an image with `nbdroot initramfs --root ROOT` (the modules of the
// root's own kernel); args are extra builder flags. Built once per distinct argument list.
func (e *Env) InitramfsFromRoot(t TB, root, hooks string, args ...string) string {
	t.Helper()
	key := "initramfs --root " + root + " " + hooks + " " + strings.Join(args, " ")
	return e.cached(t, key, func(path string) error {
		a := append([]string{"initramfs", "--root", root, "--hooks", hooks,
			"--init", e.Tool("nbdroot-init"), "-o", path}, args...)
		out, err := exec.Command(e.Tool("nbdroot"), a...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
}

// DebianKernelPackage returns Debian's kernel package of a flavour (linux-image-FLAVOUR, e.g.
// "rt-amd64": a kernel whose release differs from the generic one's by its suffix) as the
// host's apt finds it, and its kernel release. The .deb is fetched once per machine with
// `apt-get download` into CacheDir()/debs and reused by later runs.
func DebianKernelPackage(t TB, flavour string) (deb, release string) {
	t.Helper()
	deb, release, err := debianKernelPackage(flavour)
	if err != nil {
		t.Fatalf("Debian kernel package linux-image-%s: %v", flavour, err)
	}
	return deb, release
}

func debianKernelPackage(flavour string) (string, string, error) {
	dir := filepath.Join(CacheDir(), "debs")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	// linux-image-RELEASE_VERSION_ARCH.deb, RELEASE ending in the flavour.
	glob := filepath.Join(dir, "linux-image-*-"+flavour+"_*.deb")
	if found, _ := filepath.Glob(glob); len(found) > 0 {
		sort.Strings(found)
		deb := found[len(found)-1]
		return deb, debRelease(deb), nil
	}
	tmp, err := os.MkdirTemp(dir, "download-")
	if err != nil {
		return "", "", err
	}
	defer os.RemoveAll(tmp)
	download := func(pkg string) error {
		cmd := exec.Command("apt-get", "download", pkg)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, tail(string(out), 10))
		}
		return nil
	}
	meta := "linux-image-" + flavour
	if err := download(meta); err != nil {
		return "", "", err
	}
	metas, _ := filepath.Glob(filepath.Join(tmp, meta+"_*.deb"))
	if len(metas) != 1 {
		return "", "", fmt.Errorf("apt-get download %s gave %v", meta, metas)
	}
	depends, err := exec.Command("dpkg-deb", "--field", metas[0], "Depends").Output()
	if err != nil {
		return "", "", fmt.Errorf("dpkg-deb --field %s Depends: %w", metas[0], err)
	}
	pkg, _, _ := strings.Cut(strings.TrimSpace(string(depends)), " ")
	pkg = strings.TrimSuffix(pkg, ",")
	if !strings.HasPrefix(pkg, "linux-image-") || !strings.HasSuffix(pkg, "-"+flavour) {
		return "", "", fmt.Errorf("%s depends on %q, not a kernel of that flavour", meta, depends)
	}
	if err := download(pkg); err != nil {
		return "", "", err
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return "", "", fmt.Errorf("apt-get download %s gave %v", pkg, debs)
	}
	deb := filepath.Join(dir, filepath.Base(debs[0]))
	if err := os.Rename(debs[0], deb); err != nil {
		return "", "", err
	}
	return deb, debRelease(deb), nil
}

// debRelease is the kernel release of a linux-image-RELEASE_VERSION_ARCH.deb.
func debRelease(deb string) string {
	name, _, _ := strings.Cut(filepath.Base(deb), "_")
	return strings.TrimPrefix(name, "linux-image-")
}

// TrimKernelPackage makes a smaller copy of a Debian kernel package: the same package (name,
// version, kernel, maintainer scripts — whose postinst runs depmod and the kernel hooks in
// /etc/kernel/postinst.d), with only the modules an nbdroot initramfs of the default hooks
// takes from it (found by building one with init). Installing 400 MB of modules under TCG
// takes most of a test's time and proves nothing more. The package is written to dir.
func TrimKernelPackage(t TB, deb, init, dir string) string {
	t.Helper()
	pkg := filepath.Join(dir, "pkg")
	if out, err := exec.Command("dpkg-deb", "--raw-extract", deb, pkg).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --raw-extract %s: %v\n%s", deb, err, out)
	}
	release := debRelease(deb)
	var mods string
	for _, d := range []string{"lib/modules", "usr/lib/modules"} {
		if st, err := os.Stat(filepath.Join(pkg, d, release)); err == nil && st.IsDir() {
			mods = filepath.Join(pkg, d, release)
		}
	}
	if mods == "" {
		t.Fatalf("%s has no modules directory for %s", deb, release)
	}
	sum, err := initramfs.Build(initramfs.Options{ModulesDir: mods, Init: init, Output: filepath.Join(dir, "probe.img")})
	if err != nil {
		t.Fatalf("initramfs for %s: %v", release, err)
	}
	keep := map[string]bool{}
	for _, m := range sum.Modules {
		keep[depmod.Normalize(m)] = true
	}
	err = filepath.WalkDir(filepath.Join(mods, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if name, ok := depmod.ModuleFileName(d.Name()); ok && !keep[name] {
			return os.Remove(p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// dpkg -V and debsums read md5sums: keep the lines of the files that stay.
	md5 := filepath.Join(pkg, "DEBIAN", "md5sums")
	b, err := os.ReadFile(md5)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if _, file, ok := strings.Cut(l, "  "); ok {
			if _, err := os.Stat(filepath.Join(pkg, file)); err == nil {
				lines = append(lines, l)
			}
		}
	}
	if err := os.WriteFile(md5, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(deb))
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-Zgzip", "--build", pkg, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb --build: %v\n%s", err, b)
	}
	os.RemoveAll(pkg)
	return out
}
