package test

// The install path: `make install` into a DESTDIR, `make deb` and the package installed
// with dpkg into a scratch root, checked and purged; in the distribution tier, the package
// installed with dpkg inside a Debian client root, where its postinst builds the initramfs.

import (
	"bufio"
	"compress/gzip"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/test/vm"
)

// needTools skips a test unless it runs as root with the named programs, or fails it under
// NBDROOT_REQUIRE_PEERS=1.
func needTools(t *testing.T, tools ...string) {
	t.Helper()
	missing := ""
	if os.Geteuid() != 0 {
		missing = "root"
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = tool
		}
	}
	if missing == "" {
		return
	}
	if vm.RequirePeers() {
		t.Fatalf("this test needs %s and NBDROOT_REQUIRE_PEERS=1 says it must run", missing)
	}
	t.Skipf("this test needs %s", missing)
}

// repo is the source checkout (the test runs in its test/ directory).
func repo(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// command runs a program and returns its standard output; a failure ends the test with
// what it printed.
func command(t *testing.T, dir string, argv ...string) string {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = dir
	cmd.Env = cleanEnv()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s%s", strings.Join(argv, " "), err, out, stderr.String())
	}
	return string(out)
}

// cleanEnv is the environment without what a `make` running the tests (make test) passes
// to its children: a nested make must not join its jobserver or see its variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES":
		default:
			env = append(env, kv)
		}
	}
	return env
}

// buildVersion is what `make` stamps into the binaries.
func buildVersion(t *testing.T, deb bool) string {
	args := []string{"scripts/version.sh"}
	if deb {
		args = append(args, "--deb")
	}
	return strings.TrimSpace(command(t, repo(t), args...))
}

// checkFiles fails the test for each path (relative to dir) that is not a regular file with
// the mode given.
func checkFiles(t *testing.T, dir string, files map[string]fs.FileMode) {
	t.Helper()
	for p, mode := range files {
		fi, err := os.Stat(filepath.Join(dir, p))
		if err != nil {
			t.Errorf("%s: %v", p, err)
			continue
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), mode)
		}
	}
}

// checkInstalledPrograms runs the installed programs: both print the build's version, and
// nbdroot finds its installed init (install --destdir --dry-run copies it).
func checkInstalledPrograms(t *testing.T, bin, init string) {
	t.Helper()
	want := buildVersion(t, false)
	for _, p := range []struct{ path, name string }{{bin, "nbdroot"}, {init, "nbdroot-init"}} {
		out := command(t, "", p.path, "--version")
		if !strings.HasPrefix(out, p.name+" "+want+" (go") {
			t.Errorf("%s --version: %q, want %s %s", p.path, out, p.name, want)
		}
	}
	out := command(t, "", bin, "install", "--destdir", t.TempDir(), "--dry-run")
	if !strings.Contains(out, "/lib/nbdroot/nbdroot-init") {
		t.Errorf("installed nbdroot does not find its init:\n%s", out)
	}
}

// TestMakeInstall: `make install DESTDIR=… PREFIX=/usr/local` puts the programs, the kernel
// hooks, the systemd units naming the installed program, the manual page and the
// documentation where they belong, and the installed programs work.
func TestMakeInstall(t *testing.T) {
	needTools(t, "make", "go")
	dest := t.TempDir()
	command(t, repo(t), "make", "--no-print-directory", "install", "BUILD="+t.TempDir(), "DESTDIR="+dest, "PREFIX=/usr/local")
	checkFiles(t, dest, map[string]fs.FileMode{
		"usr/local/bin/nbdroot": 0o755, "usr/local/lib/nbdroot/nbdroot-init": 0o755,
		"usr/local/lib/nbdroot/nbdroot-init-tls": 0o755,
		"etc/kernel/postinst.d/nbdroot":          0o755, "etc/kernel/postrm.d/nbdroot": 0o755,
		"etc/kernel/install.d/60-nbdroot.install": 0o755, "etc/pacman.d/hooks/90-nbdroot-install.hook": 0o644,
		"usr/local/share/libalpm/scripts/nbdroot":            0o755,
		"usr/local/lib/systemd/system/nbdroot-serve.service": 0o644, "usr/local/lib/systemd/system/nbdroot-serve.socket": 0o644,
		"usr/local/share/man/man8/nbdroot.8": 0o644, "usr/local/share/doc/nbdroot/README.md": 0o644,
		"usr/local/share/doc/nbdroot/docs/netboot.md": 0o644,
	})
	unit, _ := os.ReadFile(filepath.Join(dest, "usr/local/lib/systemd/system/nbdroot-serve.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/local/bin/nbdroot serve ") || strings.Contains(string(unit), "@") {
		t.Errorf("the unit does not run the installed program:\n%s", unit)
	}
	if hook, _ := os.ReadFile(filepath.Join(dest, "etc/kernel/postinst.d/nbdroot")); !strings.Contains(string(hook), "exec /usr/local/bin/nbdroot install --root / --kernel") {
		t.Errorf("the kernel hook does not run the installed program:\n%s", hook)
	}
	if _, err := os.Stat(filepath.Join(dest, "etc/nbdroot/initramfs.conf")); err == nil {
		t.Error("make install wrote the client configuration: every machine it is installed on would become a client")
	}
	checkInstalledPrograms(t, filepath.Join(dest, "usr/local/bin/nbdroot"), filepath.Join(dest, "usr/local/lib/nbdroot/nbdroot-init"))
}

// makeDeb runs `make deb` into a scratch build directory and returns the package (gzip:
// three times faster to make than xz, the default).
func makeDeb(t *testing.T) string {
	t.Helper()
	build := t.TempDir()
	command(t, repo(t), "make", "--no-print-directory", "deb", "BUILD="+build, "DEB_COMPRESSION=gzip")
	debs, _ := filepath.Glob(filepath.Join(build, "nbdroot_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %q", debs)
	}
	return debs[0]
}

// debFiles are the package's files and their modes.
var debFiles = map[string]fs.FileMode{
	"usr/bin/nbdroot": 0o755, "usr/lib/nbdroot/nbdroot-init": 0o755, "usr/lib/nbdroot/nbdroot-init-tls": 0o755,
	"etc/kernel/postinst.d/nbdroot": 0o755, "etc/kernel/postrm.d/nbdroot": 0o755,
	"usr/lib/kernel/install.d/60-nbdroot.install":  0o755,
	"usr/lib/systemd/system/nbdroot-serve.service": 0o644, "usr/lib/systemd/system/nbdroot-serve.socket": 0o644,
	"usr/share/man/man8/nbdroot.8.gz": 0o644, "usr/share/doc/nbdroot/README.md": 0o644,
	"usr/share/doc/nbdroot/docs/server.md": 0o644,
}

// TestDeb: `make deb` builds a package with the build's version; dpkg installs it into a
// scratch root (dpkg --root, maintainer scripts run chrootless with DPKG_ROOT, as the
// package supports), where its files are in place and its programs run; a purge removes
// every file, conffiles included.
func TestDeb(t *testing.T) {
	needTools(t, "make", "go", "dpkg", "dpkg-deb", "dpkg-query")
	deb := makeDeb(t)
	fields := command(t, "", "dpkg-deb", "--field", deb, "Package", "Version", "Architecture")
	if want := "Package: nbdroot\nVersion: " + buildVersion(t, true) + "\n"; !strings.HasPrefix(fields, want) {
		t.Errorf("control fields:\n%s\nwant %q", fields, want)
	}
	if conffiles := command(t, "", "dpkg-deb", "--info", deb, "conffiles"); conffiles != "/etc/kernel/postinst.d/nbdroot\n/etc/kernel/postrm.d/nbdroot\n" {
		t.Errorf("conffiles: %q", conffiles)
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644)
	dpkg := func(args ...string) string {
		return command(t, "", append([]string{"dpkg", "--root=" + root, "--force-script-chrootless", "--log=/dev/null"}, args...)...)
	}
	dpkg("--install", deb)
	checkFiles(t, root, debFiles)
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/nbdroot-serve.service"))
	if !strings.Contains(string(unit), "\nExecStart=/usr/bin/nbdroot serve ") {
		t.Errorf("the unit does not run /usr/bin/nbdroot:\n%s", unit)
	}
	if man := gunzip(t, filepath.Join(root, "usr/share/man/man8/nbdroot.8.gz")); !strings.HasPrefix(man, `.\" Generated by nbdroot`) || !strings.Contains(man, `.SH "nbdroot install"`) {
		t.Errorf("manual page:\n%.400s", man)
	}
	for _, p := range []string{"etc/nbdroot/initramfs.conf", "usr/share/libalpm"} {
		if _, err := os.Stat(filepath.Join(root, p)); err == nil {
			t.Errorf("the package installed %s", p)
		}
	}
	checkInstalledPrograms(t, filepath.Join(root, "usr/bin/nbdroot"), filepath.Join(root, "usr/lib/nbdroot/nbdroot-init"))
	if status := command(t, "", "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "--show", "--showformat=${db:Status-Status} ${Version}", "nbdroot"); status != "installed "+buildVersion(t, true) {
		t.Errorf("dpkg-query: %q", status)
	}

	dpkg("--purge", "nbdroot")
	left := 0
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err == nil && !d.IsDir() && !strings.HasPrefix(rel, "var/lib/dpkg/") {
			t.Errorf("left after the purge: %s", rel)
			left++
		}
		return nil
	})
	out, _ := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "--show", "--showformat=${db:Status-Status}", "nbdroot").Output()
	if s := string(out); s != "" && s != "not-installed" {
		t.Errorf("dpkg-query after the purge: %q", s)
	}
}

func gunzip(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(bufio.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDistroDebInChroot: the package installed with dpkg inside a Debian client root
// (one `nbdroot install` made a client) rebuilds the kernel's initramfs in its postinst,
// and the kernel hooks are the package's conffiles; a purge leaves the client's images and
// configuration, which it still boots with.
func TestDistroDebInChroot(t *testing.T) {
	e := needDistro(t)
	needTools(t, "make", "go", "chroot", "dpkg-deb")
	deb := makeDeb(t)
	tree := clientTree(t, e, "bookworm")
	release, _ := vm.DebianKernel(t, tree)
	image := filepath.Join(tree, "boot", "nbdroot.img-"+release)
	if err := os.Remove(image); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(tree, "tmp"), 0o1777)
	if b, err := os.ReadFile(deb); err != nil || os.WriteFile(filepath.Join(tree, "tmp/nbdroot.deb"), b, 0o644) != nil {
		t.Fatal(err)
	}
	out := command(t, "", "chroot", tree, "dpkg", "--install", "/tmp/nbdroot.deb")
	t.Logf("dpkg --install:\n%s", out)
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("the package's postinst did not rebuild the client's initramfs: %v", err)
	}
	conffiles := command(t, "", "chroot", tree, "dpkg-query", "--show", "--showformat=${Conffiles}", "nbdroot")
	for _, c := range []string{"/etc/kernel/postinst.d/nbdroot", "/etc/kernel/postrm.d/nbdroot"} {
		if !strings.Contains(conffiles, c) {
			t.Errorf("%s is not a conffile: %q", c, conffiles)
		}
	}
	command(t, "", "chroot", tree, "dpkg", "--purge", "nbdroot")
	for _, p := range []string{"usr/bin/nbdroot", "etc/kernel/postinst.d/nbdroot"} {
		if _, err := os.Stat(filepath.Join(tree, p)); err == nil {
			t.Errorf("%s is still there after the purge", p)
		}
	}
	for _, p := range []string{"etc/nbdroot/initramfs.conf", "boot/nbdroot.img-" + release} {
		if _, err := os.Stat(filepath.Join(tree, p)); err != nil {
			t.Errorf("the purge removed %s: %v", p, err)
		}
	}
}

// clientTree is a copy of a cached Debian root made a client by `nbdroot install --root`.
// Only the files nbdroot install and dpkg replace by renaming are shared with the cache
// (hard links); dpkg's database and /etc are real copies.
func clientTree(t *testing.T, e *vm.Env, suite string) string {
	t.Helper()
	cache := vm.DebianRoot(t, suite)
	tree := filepath.Join(t.TempDir(), "root")
	command(t, "", "cp", "-al", cache, tree)
	for _, d := range []string{"etc", "var/lib/dpkg"} {
		os.RemoveAll(filepath.Join(tree, d))
		command(t, "", "cp", "-a", filepath.Join(cache, d), filepath.Join(tree, d))
	}
	out := command(t, "", e.Tool("nbdroot"), "install", "--root", tree)
	t.Logf("nbdroot install --root:\n%s", out)
	return tree
}

// TestDistroKernelInstallPlugin: systemd's kernel-install, run in a Debian client root (it is
// in Debian's systemd package), runs our plugin among its own: `add` builds the kernel's
// initramfs, `remove` removes it.
func TestDistroKernelInstallPlugin(t *testing.T) {
	e := needDistro(t)
	needTools(t, "chroot")
	tree := clientTree(t, e, "bookworm")
	if _, err := os.Stat(filepath.Join(tree, "usr/bin/kernel-install")); err != nil {
		t.Fatalf("the Debian root has no kernel-install: %v", err)
	}
	release, _ := vm.DebianKernel(t, tree)
	image := filepath.Join(tree, "boot", "nbdroot.img-"+release)
	os.Remove(image)
	out := command(t, "", "chroot", tree, "kernel-install", "--verbose", "add", release, "/boot/vmlinuz-"+release)
	if !strings.Contains(out, "60-nbdroot.install add "+release) {
		t.Errorf("kernel-install did not run our plugin:\n%s", out)
	}
	if _, err := os.Stat(image); err != nil {
		t.Fatalf("kernel-install add did not build the initramfs: %v\n%s", err, out)
	}
	out = command(t, "", "chroot", tree, "kernel-install", "--verbose", "remove", release)
	if _, err := os.Stat(image); err == nil {
		t.Errorf("kernel-install remove left %s:\n%s", image, out)
	}
}
