package depmod

import (
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/kmod/kmodtest"
)

// openTree writes tree into a fresh modules directory and opens it.
func openTree(t *testing.T, tree kmodtest.Tree) *Dir {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib", "modules", "6.1.0-test")
	if err := tree.Write(dir); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestDirLookup(t *testing.T) {
	d := openTree(t, kmodtest.Debian61())
	if d.KVer != "6.1.0-test" {
		t.Errorf("KVer = %q", d.KVer)
	}
	tests := []struct {
		name        string
		wantMods    []string
		wantBuiltin bool
	}{
		{"nbd", []string{"nbd"}, false},
		{"dm-crypt", []string{"dm_crypt"}, false},
		{"crc32c", []string{"crc32c_generic", "crc32c_intel"}, false},
		{"crypto-crc32c", []string{"crc32c_generic", "crc32c_intel"}, false},
		{"crypto_crc32c", []string{"crc32c_generic", "crc32c_intel"}, false},
		{"fs-ext4", []string{"ext4"}, false},
		{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}, false},
		{"af_packet", nil, true},
		{"net-pf-17", nil, true},
		{"crypto-cbc", nil, true},
		{"no-such-thing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mods, builtin := d.Lookup(tt.name)
			if diff := cmp.Diff(tt.wantMods, mods); diff != "" || builtin != tt.wantBuiltin {
				t.Errorf("Lookup(%q) = %v, %v; want %v, %v (-want +got mods):\n%s", tt.name, mods, builtin, tt.wantMods, tt.wantBuiltin, diff)
			}
		})
	}
}

// names returns the module names of a closure.
func names(c *Closure) []string {
	var out []string
	for _, m := range c.Modules {
		out = append(out, m.Name)
	}
	return out
}

// checkOrder fails unless every module of c comes after its Deps and Soft.
func checkOrder(t *testing.T, c *Closure) {
	t.Helper()
	pos := map[string]int{}
	for i, m := range c.Modules {
		pos[m.Name] = i
	}
	for i, m := range c.Modules {
		for _, d := range append(append([]string{}, m.Deps...), m.Soft...) {
			j, ok := pos[d]
			if !ok || j >= i {
				t.Errorf("%s (at %d) depends on %s (at %d, present %v)", m.Name, i, d, j, ok)
			}
		}
	}
}

func TestResolve(t *testing.T) {
	d := openTree(t, kmodtest.Debian61())
	tests := []struct {
		name        string
		reqs        []Request
		want        []string
		wantBuiltin []string
		wantSkipped []string
	}{
		{
			name: "ext4 pulls crc32c through softdep pre",
			reqs: []Request{{Name: "ext4", By: "hook filesystems"}},
			want: []string{"crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "crc16", "ext4"},
		},
		{
			name: "dm_crypt pulls dm_mod through depends",
			reqs: []Request{{Name: "dm_crypt", By: "hook encrypt"}},
			want: []string{"dm_mod", "dm_crypt"},
		},
		{
			name: "xts pulls ecb through softdep; alias requests",
			reqs: []Request{{Name: "crypto-xts"}},
			want: []string{"ecb", "xts"},
		},
		{
			name:        "built-in name and alias are satisfied",
			reqs:        []Request{{Name: "af_packet"}, {Name: "crypto-sha256"}, {Name: "nbd"}},
			want:        []string{"nbd"},
			wantBuiltin: []string{"af_packet", "crypto_sha256"},
		},
		{
			name:        "optional missing is skipped",
			reqs:        []Request{{Name: "nbd"}, {Name: "usbhid", Optional: true, By: "hook keyboard"}},
			want:        []string{"nbd"},
			wantSkipped: []string{"usbhid"},
		},
		{
			name: "r8169 with softdep on the PHY driver and shared libphy",
			reqs: []Request{{Name: "r8169"}, {Name: "tg3"}},
			want: []string{"libphy", "realtek", "r8169", "tg3"},
		},
		{
			name: "duplicates resolve once",
			reqs: []Request{{Name: "ext4"}, {Name: "fs-ext4"}, {Name: "jbd2"}},
			want: []string{"crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "crc16", "ext4"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := d.Resolve(tt.reqs)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, names(c)); diff != "" {
				t.Errorf("modules (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantBuiltin, c.Builtin); diff != "" {
				t.Errorf("builtin (-want +got):\n%s", diff)
			}
			var skipped []string
			for _, r := range c.Skipped {
				skipped = append(skipped, r.Name)
			}
			if diff := cmp.Diff(tt.wantSkipped, skipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
			checkOrder(t, c)
		})
	}
}

func TestResolveDepsAndSoftSplit(t *testing.T) {
	d := openTree(t, kmodtest.Debian61())
	c, err := d.Resolve([]Request{{Name: "ext4"}})
	if err != nil {
		t.Fatal(err)
	}
	ext4 := c.Modules[len(c.Modules)-1]
	if diff := cmp.Diff([]string{"jbd2", "mbcache", "crc16"}, ext4.Deps); diff != "" {
		t.Errorf("ext4 Deps (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"crc32c_generic", "crc32c_intel"}, ext4.Soft); diff != "" {
		t.Errorf("ext4 Soft (-want +got):\n%s", diff)
	}
}

func TestResolveMissing(t *testing.T) {
	tree := kmodtest.Debian61()
	// A module whose depends= names a module the directory lacks.
	tree.Modules = append(tree.Modules, kmodtest.Module{Path: "kernel/drivers/x/broken.ko",
		Modinfo: []string{"depends=ghost", "name=broken"}})
	d := openTree(t, tree)
	tests := []struct {
		name     string
		reqs     []Request
		wantName string
		wantBy   string
	}{
		{"requested module", []Request{{Name: "nosuch", By: "hook nbd"}}, "nosuch", "hook nbd"},
		{"missing dependency", []Request{{Name: "broken", By: "--add-module"}}, "ghost", "broken (depends=)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := d.Resolve(tt.reqs)
			var me *MissingError
			if !errors.As(err, &me) {
				t.Fatalf("err = %v, want *MissingError", err)
			}
			if me.Name != tt.wantName || me.By != tt.wantBy {
				t.Errorf("MissingError{Name: %q, By: %q}, want {%q, %q}", me.Name, me.By, tt.wantName, tt.wantBy)
			}
			if !strings.Contains(err.Error(), tt.wantName) || !strings.Contains(err.Error(), tt.wantBy) {
				t.Errorf("message %q does not name %q and %q", err, tt.wantName, tt.wantBy)
			}
		})
	}
	// Optional: the same broken module is skipped with a warning instead.
	c, err := d.Resolve([]Request{{Name: "broken", Optional: true, By: "hook x"}, {Name: "nbd"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"nbd"}, names(c)); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "ghost") {
		t.Errorf("warnings = %q, want one naming ghost", c.Warnings)
	}
}

func TestResolveSoftdepCycleAndPost(t *testing.T) {
	tree := kmodtest.Tree{Modules: []kmodtest.Module{
		{Path: "kernel/a.ko", Modinfo: []string{"softdep=pre: b post: c", "depends=", "name=a"}},
		{Path: "kernel/b.ko", Modinfo: []string{"softdep=pre: a", "depends=", "name=b"}},
		{Path: "kernel/c.ko", Modinfo: []string{"depends=", "name=c"}},
		{Path: "kernel/d.ko", Modinfo: []string{"softdep=pre: missing-thing", "depends=", "name=d"}},
	}}
	d := openTree(t, tree)
	c, err := d.Resolve([]Request{{Name: "a"}, {Name: "d"}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"b", "a", "c", "d"}, names(c)); diff != "" {
		t.Errorf("modules (-want +got):\n%s", diff)
	}
	checkOrder(t, c) // the b → a back edge of the cycle is dropped
	if len(c.Warnings) != 1 || !strings.Contains(c.Warnings[0], "missing-thing") {
		t.Errorf("warnings = %q, want one naming missing-thing", c.Warnings)
	}
}

func TestOpenDirCompressedAndPreference(t *testing.T) {
	tree := kmodtest.Tree{Modules: []kmodtest.Module{
		{Path: "kernel/fs/foo-bar.ko.zst", Modinfo: []string{"depends=", "name=foo_bar"}},
		{Path: "kernel/drivers/baz.ko.xz", Modinfo: []string{"depends=", "name=baz"}},
		{Path: "updates/baz.ko", Modinfo: []string{"depends=", "name=baz"}},
	}}
	d := openTree(t, tree)
	if diff := cmp.Diff([]string{"baz", "foo_bar"}, d.Names()); diff != "" {
		t.Errorf("Names (-want +got):\n%s", diff)
	}
	if f, _ := d.File("baz"); f != "updates/baz.ko" {
		t.Errorf("File(baz) = %q, want the updates/ one", f)
	}
	if f, _ := d.File("foo-bar"); f != "kernel/fs/foo-bar.ko.zst" {
		t.Errorf("File(foo-bar) = %q", f)
	}
	if _, err := OpenDir(t.TempDir()); err == nil {
		t.Error("OpenDir of an empty directory: no error")
	}
}

func TestResolveRealKernel(t *testing.T) {
	mods := testKernelModules(t)
	d, err := OpenDir(mods)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Resolve([]Request{{Name: "ext4"}, {Name: "dm_crypt"}, {Name: "xts"}, {Name: "nbd"}, {Name: "af_packet", Optional: true}})
	if err != nil {
		t.Fatal(err)
	}
	got := names(c)
	for _, want := range []string{"ext4", "jbd2", "mbcache", "crc16", "crc32c_generic", "dm_mod", "dm_crypt", "xts", "ecb", "nbd"} {
		if !slices.Contains(got, want) {
			t.Errorf("closure %v lacks %s", got, want)
		}
	}
	if !slices.Contains(c.Builtin, "af_packet") {
		t.Errorf("Builtin = %v, want af_packet (built into Debian's kernel)", c.Builtin)
	}
	checkOrder(t, c)
	if _, err := d.Resolve([]Request{{Name: "no_such_module_x", By: "test"}}); err == nil {
		t.Error("missing module: no error")
	}
}
