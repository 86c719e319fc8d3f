package depmod

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/kmod/kmodtest"
)

// depmodTime is when the synthetic trees' depmod "ran"; their module files are older.
var depmodTime = time.Date(2025, 5, 20, 12, 0, 0, 0, time.UTC)

// writeIndexes writes modules.dep, modules.alias and modules.softdep for tree into dir the
// way depmod(8) does: every module with its full depends= closure, every alias= and every
// softdep= of every module. File times are set so that depmod ran after the modules were
// written.
func writeIndexes(t *testing.T, dir string, tree kmodtest.Tree) {
	t.Helper()
	type mod struct {
		path           string
		depends, soft  []string
		aliases        []string
		softdepStrings []string
	}
	mods := map[string]*mod{}
	for _, m := range tree.Modules {
		name, _ := ModuleFileName(m.Path)
		mi, err := ParseModinfo(kmodtest.ModinfoSection(m.Modinfo))
		if err != nil {
			t.Fatal(err)
		}
		x := &mod{path: m.Path, depends: mi.Depends, aliases: mi.Aliases}
		for _, kv := range m.Modinfo {
			if v, ok := strings.CutPrefix(kv, "softdep="); ok {
				x.softdepStrings = append(x.softdepStrings, v)
			}
		}
		mods[name] = x
	}
	var closure func(n string, seen map[string]bool, out *[]string)
	closure = func(n string, seen map[string]bool, out *[]string) {
		for _, d := range mods[n].depends {
			if !seen[d] && mods[d] != nil {
				seen[d] = true
				*out = append(*out, mods[d].path)
				closure(d, seen, out)
			}
		}
	}
	names := make([]string, 0, len(mods))
	for n := range mods {
		names = append(names, n)
	}
	sort.Strings(names)
	var dep, alias, soft strings.Builder
	alias.WriteString("# Aliases extracted from modules themselves.\n")
	soft.WriteString("# Soft dependencies extracted from modules themselves.\n")
	for _, n := range names {
		var ds []string
		closure(n, map[string]bool{}, &ds)
		fmt.Fprintf(&dep, "%s:", mods[n].path)
		for _, d := range ds {
			fmt.Fprintf(&dep, " %s", d)
		}
		dep.WriteString("\n")
		for _, a := range mods[n].aliases {
			fmt.Fprintf(&alias, "alias %s %s\n", a, n)
		}
		for _, s := range mods[n].softdepStrings {
			fmt.Fprintf(&soft, "softdep %s %s\n", n, s)
		}
	}
	for file, text := range map[string]string{modulesDep: dep.String(), modulesAlias: alias.String(), modulesSoftdep: soft.String()} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	setTimes(t, dir)
}

// setTimes dates every module file of dir an hour before depmodTime and the indexes at it.
func setTimes(t *testing.T, dir string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		when := depmodTime
		if _, ok := ModuleFileName(p); ok {
			when = depmodTime.Add(-time.Hour)
		}
		return os.Chtimes(p, when, when)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// compressed returns tree with every module stored as .ko.xz, as Debian 13 ships them.
func compressed(tree kmodtest.Tree) kmodtest.Tree {
	out := tree
	out.Modules = nil
	for _, m := range tree.Modules {
		m.Path += ".xz"
		out.Modules = append(out.Modules, m)
	}
	return out
}

// indexedTree writes tree with depmod's indexes and returns its directory.
func indexedTree(t *testing.T, tree kmodtest.Tree) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "lib", "modules", "6.12.0-test")
	if err := tree.Write(dir); err != nil {
		t.Fatal(err)
	}
	writeIndexes(t, dir, tree)
	return dir
}

// aliasPairs returns a directory's whole alias table as sorted "pattern module" lines.
func aliasPairs(d *Dir) []string {
	tab := d.loadAliases()
	var out []string
	for p, mods := range tab.exact {
		for _, m := range mods {
			out = append(out, p+" "+m)
		}
	}
	for _, g := range tab.globs {
		out = append(out, g.Pattern+" "+g.Module)
	}
	sort.Strings(out)
	return out
}

// closureSummary is what of a Closure an image depends on, comparable with cmp.
type closureSummary struct {
	Modules  []string
	Deps     map[string][]string
	Soft     map[string][]string
	Files    map[string]string
	Resolved map[string][]string
	Builtin  []string
	Skipped  []string
	Warnings []string
}

func summarize(c *Closure) closureSummary {
	s := closureSummary{Deps: map[string][]string{}, Soft: map[string][]string{}, Files: map[string]string{},
		Resolved: c.Resolved, Builtin: c.Builtin, Warnings: c.Warnings}
	for _, m := range c.Modules {
		s.Modules = append(s.Modules, m.Name)
		s.Deps[m.Name] = m.Deps
		s.Soft[m.Name] = m.Soft
		s.Files[m.Name] = m.File
	}
	for _, r := range c.Skipped {
		s.Skipped = append(s.Skipped, r.Name)
	}
	return s
}

// requestSets are module requests as the builder makes them: the default hooks' modules,
// the keyboard hooks', the NIC policies', aliases and device modaliases.
var requestSets = map[string][]Request{
	"default image": reqs(false, "nbd", "dm_mod", "dm_crypt", "xts", "ecb", "ext4").
		and(reqs(true, "virtio_pci", "af_packet", "aesni_intel", "essiv", "sha512_generic", "cbc", "sha256_generic",
			"virtio_net", "e1000", "e1000e", "igc", "r8169")),
	"keyboard hooks": reqs(true, "usbhid", "hid_generic", "xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd", "atkbd", "i8042"),
	"aliases":        reqs(true, "crypto-crc32c", "crc32c", "fs-ext4", "crypto-xts", "net-pf-17", "crypto-aes", "dm-crypt"),
	"modaliases": reqs(true, "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00", "pci:v000010ECd00008168sv00001043sd00008677bc02sc00i00",
		"cpu:type:x86,ven0000fam0006mod003C:feature:,0000,0001,0094,0099"),
}

type reqList []Request

func reqs(optional bool, names ...string) reqList {
	var out reqList
	for _, n := range names {
		out = append(out, Request{Name: n, Optional: optional, By: "test"})
	}
	return out
}

func (a reqList) and(b reqList) reqList { return append(slices.Clone(a), b...) }

// checkEquivalent opens dir through its indexes and by reading every module's .modinfo,
// and fails unless both give the same alias table and the same closures for sets. It
// returns every module of those closures.
func checkEquivalent(t *testing.T, dir string, sets map[string][]Request) map[string]bool {
	t.Helper()
	all := map[string]bool{}
	indexed, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !indexed.Indexed() {
		t.Fatalf("%s: no depmod indexes read", dir)
	}
	if u := indexed.Unindexed(); len(u) != 0 {
		t.Errorf("modules the index does not cover: %v", u)
	}
	scanned, err := OpenWith(dir, OpenOptions{IgnoreIndexes: true})
	if err != nil {
		t.Fatal(err)
	}
	if scanned.Indexed() {
		t.Fatal("IgnoreIndexes: indexes read anyway")
	}
	if diff := cmp.Diff(aliasPairs(scanned), aliasPairs(indexed)); diff != "" {
		t.Errorf("alias table: .modinfo (-) vs modules.alias (+):\n%s", diff)
	}
	for name, reqs := range sets {
		t.Run(name, func(t *testing.T) {
			a, errA := scanned.Resolve(reqs)
			b, errB := indexed.Resolve(reqs)
			if (errA == nil) != (errB == nil) {
				t.Fatalf("errors differ: .modinfo %v, indexes %v", errA, errB)
			}
			if errA != nil {
				return
			}
			if diff := cmp.Diff(summarize(a), summarize(b)); diff != "" {
				t.Errorf("closure: .modinfo (-) vs indexes (+):\n%s", diff)
			}
			for _, m := range b.Modules {
				all[m.Name] = true
			}
		})
	}
	return all
}

func TestIndexedEqualsScanned(t *testing.T) {
	for name, tree := range map[string]kmodtest.Tree{
		"plain .ko": kmodtest.Debian61(),
		".ko.xz":    compressed(kmodtest.Debian61()),
	} {
		t.Run(name, func(t *testing.T) {
			got := checkEquivalent(t, indexedTree(t, tree), requestSets)
			for _, m := range []string{"ext4", "crc32c_intel", "xts", "ecb", "virtio_pci", "e1000", "r8169", "realtek", "aesni_intel"} {
				if !got[m] {
					t.Errorf("no closure has %s: the request sets test less than they should", m)
				}
			}
		})
	}
}

// TestIndexedDecompressesOnlyTheClosure checks the point of the indexes: resolving the
// default image's modules reads the .modinfo of the modules it needs (and of those
// predicted from modules.dep and modules.softdep) and of no other, and keeps the
// decompressed modules for ReadModule.
func TestIndexedDecompressesOnlyTheClosure(t *testing.T) {
	dir := indexedTree(t, compressed(kmodtest.Debian61()))
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Resolve(reqs(false, "ext4", "dm_crypt", "xts"))
	if err != nil {
		t.Fatal(err)
	}
	var read []string
	for n := range d.infos {
		read = append(read, n)
	}
	sort.Strings(read)
	want := names(c)
	sort.Strings(want)
	if diff := cmp.Diff(want, read); diff != "" {
		t.Errorf(".modinfo read (-closure +read):\n%s", diff)
	}
	for _, m := range c.Modules {
		got, err := d.ReadModule(m.Name)
		if err != nil {
			t.Fatal(err)
		}
		fromFile, err := ReadModuleFile(filepath.Join(dir, m.File))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, fromFile) {
			t.Errorf("ReadModule(%s) differs from the file's contents", m.Name)
		}
	}
	if len(d.data) != 0 {
		t.Errorf("kept after ReadModule: %d modules", len(d.data))
	}
	// A second read, and a module Resolve did not keep, come from the file.
	for _, n := range []string{"ext4", "tg3"} {
		if b, err := d.ReadModule(n); err != nil || len(b) < 4 || string(b[:4]) != "\x7fELF" {
			t.Errorf("ReadModule(%s) = %d bytes, %v", n, len(b), err)
		}
	}
	if _, err := d.ReadModule("nosuch"); err == nil {
		t.Error("ReadModule of a missing module: no error")
	}
}

// TestIndexIsRead checks that aliases come from modules.alias when it is there: an alias
// only the index has is found, through the index only.
func TestIndexIsRead(t *testing.T) {
	dir := indexedTree(t, kmodtest.Debian61())
	f, err := os.OpenFile(filepath.Join(dir, modulesAlias), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "alias only-in-the-index nbd")
	f.Close()
	setTimes(t, dir)
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if mods, _ := d.Lookup("only-in-the-index"); !cmp.Equal(mods, []string{"nbd"}) {
		t.Errorf("indexed Lookup = %v, want [nbd]", mods)
	}
	scanned, err := OpenWith(dir, OpenOptions{IgnoreIndexes: true})
	if err != nil {
		t.Fatal(err)
	}
	if mods, _ := scanned.Lookup("only-in-the-index"); mods != nil {
		t.Errorf("scanned Lookup = %v, want nothing", mods)
	}
}

// TestStaleIndex covers module files the index does not describe: they are read from
// their .modinfo, the index's word about them is dropped.
func TestStaleIndex(t *testing.T) {
	later := depmodTime.Add(time.Hour)
	tests := []struct {
		name          string
		change        func(t *testing.T, dir string)
		wantUnindexed []string
		lookups       map[string][]string
	}{
		{
			name: "module added after depmod",
			change: func(t *testing.T, dir string) {
				writeModule(t, dir, kmodtest.Module{Path: "extra/newnic.ko", Modinfo: []string{"alias=pci:v0000ABCDd*sv*sd*bc*sc*i*", "depends=", "name=newnic"}}, later)
			},
			wantUnindexed: []string{"newnic"},
			lookups:       map[string][]string{"pci:v0000ABCDd00000001sv0sd0bc02sc00i00": {"newnic"}, "fs-ext4": {"ext4"}},
		},
		{
			name: "module rebuilt after depmod",
			change: func(t *testing.T, dir string) {
				writeModule(t, dir, kmodtest.Module{Path: "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
					Modinfo: []string{"alias=pci:v00008086d0000FFFFsv*sd*bc*sc*i*", "depends=", "name=e1000"}}, later)
			},
			wantUnindexed: []string{"e1000"},
			lookups: map[string][]string{
				"pci:v00008086d0000FFFFsv0sd0bc02sc00i00": {"e1000"},
				"pci:v00008086d0000100Esv0sd0bc02sc00i00": nil, // the index's old alias
			},
		},
		{
			name: "module in updates/ added after depmod",
			change: func(t *testing.T, dir string) {
				// Older than the index, but at a path depmod did not see.
				writeModule(t, dir, kmodtest.Module{Path: "updates/e1000.ko",
					Modinfo: []string{"alias=pci:v00008086d0000EEEEsv*sd*bc*sc*i*", "depends=", "name=e1000"}}, depmodTime.Add(-time.Hour))
			},
			wantUnindexed: []string{"e1000"},
			lookups:       map[string][]string{"pci:v00008086d0000EEEEsv0sd0bc02sc00i00": {"e1000"}},
		},
		{
			name: "module file removed after depmod",
			change: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "kernel/drivers/net/ethernet/broadcom/tg3.ko")); err != nil {
					t.Fatal(err)
				}
			},
			lookups: map[string][]string{"pci:v000014E4d00001644sv0sd0bc02sc00i00": nil},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := indexedTree(t, kmodtest.Debian61())
			tt.change(t, dir)
			d, err := OpenDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			if !d.Indexed() {
				t.Fatal("not indexed")
			}
			if diff := cmp.Diff(tt.wantUnindexed, d.Unindexed()); diff != "" {
				t.Errorf("Unindexed (-want +got):\n%s", diff)
			}
			for alias, want := range tt.lookups {
				if got, _ := d.Lookup(alias); !cmp.Equal(got, want) {
					t.Errorf("Lookup(%s) = %v, want %v", alias, got, want)
				}
			}
		})
	}
}

func writeModule(t *testing.T, dir string, m kmodtest.Module, mtime time.Time) {
	t.Helper()
	if err := (kmodtest.Tree{Modules: []kmodtest.Module{m}}).Write(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(dir, m.Path), mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func TestIndexMissingOrBroken(t *testing.T) {
	t.Run("no modules.alias: not indexed", func(t *testing.T) {
		dir := indexedTree(t, kmodtest.Debian61())
		os.Remove(filepath.Join(dir, modulesAlias))
		d, err := OpenDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if d.Indexed() || len(d.Unindexed()) != len(d.Names()) {
			t.Errorf("Indexed = %v, %d of %d unindexed; want false, all", d.Indexed(), len(d.Unindexed()), len(d.Names()))
		}
		if mods, _ := d.Lookup("fs-ext4"); !cmp.Equal(mods, []string{"ext4"}) {
			t.Errorf("Lookup(fs-ext4) = %v", mods)
		}
	})
	t.Run("no modules.softdep: still indexed", func(t *testing.T) {
		dir := indexedTree(t, kmodtest.Debian61())
		os.Remove(filepath.Join(dir, modulesSoftdep))
		checkEquivalent(t, dir, map[string][]Request{"ext4": reqs(false, "ext4")})
	})
	for _, file := range []string{modulesDep, modulesAlias, modulesSoftdep} {
		t.Run("malformed "+file, func(t *testing.T) {
			dir := indexedTree(t, kmodtest.Debian61())
			os.WriteFile(filepath.Join(dir, file), []byte("# header\ngarbage\n"), 0o644)
			_, err := OpenDir(dir)
			if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "line 2") {
				t.Errorf("OpenDir = %v, want an error naming %s and line 2", err, file)
			}
		})
	}
}
