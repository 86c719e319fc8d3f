package depmod

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// realRequestSets are requestSets plus the universal NIC policy's requests: every module
// under kernel/drivers/net/ethernet/ of d, as the builder asks for them.
func realRequestSets(t *testing.T, dir string) map[string][]Request {
	t.Helper()
	d, err := OpenWith(dir, OpenOptions{IgnoreIndexes: true})
	if err != nil {
		t.Fatal(err)
	}
	sets := map[string][]Request{}
	for k, v := range requestSets {
		sets[k] = v
	}
	var nics []string
	for _, n := range d.Names() {
		if f, _ := d.File(n); strings.HasPrefix(f, "kernel/drivers/net/ethernet/") {
			nics = append(nics, n)
		}
	}
	sets["universal NICs"] = reqs(true, nics...)
	return sets
}

// wantInRealClosures are modules every real x86 distribution kernel's closures hold.
var wantInRealClosures = []string{"nbd", "dm_crypt", "dm_mod", "ext4", "jbd2", "xts", "e1000", "r8169", "usbhid"}

// TestIndexedEqualsScannedDebian12 runs depmod(8) over the cached Debian 12 kernel's
// modules (its package has no indexes) and checks that the image's modules come out the
// same through modules.alias as through every module's .modinfo.
func TestIndexedEqualsScannedDebian12(t *testing.T) {
	mods := testKernelModules(t)
	depmodBin, err := exec.LookPath("depmod")
	if err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatal("depmod not installed (scripts/deps.sh installs kmod)")
		}
		t.Skip("depmod not installed")
	}
	real, err := filepath.EvalSymlinks(mods)
	if err != nil {
		t.Fatal(err)
	}
	kver := filepath.Base(real)
	base := t.TempDir()
	dir := filepath.Join(base, "lib", "modules", kver)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		t.Fatal(err)
	}
	// Hard links where the cache and the temporary directory share a file system; a copy
	// where they do not.
	if out, err := exec.Command("cp", "-al", real, dir).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		if out, err := exec.Command("cp", "-a", real, dir).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v: %s", err, out)
		}
		_ = out
	}
	if out, err := exec.Command(depmodBin, "-b", base, kver).CombinedOutput(); err != nil {
		t.Fatalf("depmod -b %s %s: %v: %s", base, kver, err, out)
	}
	got := checkEquivalent(t, dir, realRequestSets(t, dir))
	for _, m := range wantInRealClosures {
		if !got[m] {
			t.Errorf("no closure has %s", m)
		}
	}
}

// TestIndexedEqualsScannedCachedRoots does the same for the kernels of the distribution
// roots cached under NBDROOT_CACHE/roots (the distribution tests' debootstrapped Debian 12
// and 13, whose modules are .ko.xz, once a ROOT.done stamp says they are complete), whose
// depmod ran at install. Reading every module's .modinfo
// there means decompressing ~500 MB: about 15 s of CPU, so -short skips it.
func TestIndexedEqualsScannedCachedRoots(t *testing.T) {
	cache := os.Getenv("NBDROOT_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "nbdroot")
	}
	dirs, _ := filepath.Glob(filepath.Join(cache, "roots", "*", "lib", "modules", "*", modulesDep))
	if len(dirs) == 0 {
		t.Skipf("no distribution root with depmod's indexes under %s/roots", cache)
	}
	if testing.Short() {
		t.Skip("-short: reading every module of a distribution kernel takes a while")
	}
	seen := map[string]bool{} // one run per kernel: several roots may hold the same one
	for _, dep := range dirs {
		dir := filepath.Dir(dep)
		root := filepath.Dir(filepath.Dir(filepath.Dir(dir)))
		if _, err := os.Stat(root + ".done"); err != nil {
			continue // still being made (or abandoned): only finished roots count
		}
		kver := filepath.Base(dir)
		if seen[kver] {
			continue
		}
		seen[kver] = true
		t.Run(strings.TrimPrefix(dir, cache+"/roots/"), func(t *testing.T) {
			got := checkEquivalent(t, dir, realRequestSets(t, dir))
			for _, m := range wantInRealClosures {
				if !got[m] {
					t.Errorf("no closure has %s", m)
				}
			}
		})
	}
}
