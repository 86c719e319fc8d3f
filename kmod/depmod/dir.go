package depmod

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/nbdroot/nbdroot/kmod"
)

// Dir is a kernel's modules directory (/lib/modules/VER): which module files it has,
// which modules and aliases the kernel has built in, and, read lazily, the .modinfo of
// the modules a build needs.
//
// Which modules an alias names comes from depmod's modules.alias when the directory has
// depmod's indexes (every installed kernel does), else from every module's own .modinfo
// (an unpacked kernel package has no indexes): both give the same answer, but reading
// .modinfo means decompressing every module of a kernel that compresses them. Modules
// the indexes do not cover (added or changed after depmod ran) are read from .modinfo in
// either case.
type Dir struct {
	// Path is the modules directory.
	Path string
	// KVer is the kernel release (the directory's name, symlinks resolved).
	KVer string

	files   map[string]string // module name → path relative to Path
	builtin map[string]bool   // built-in module names
	// builtinAliases are the aliases of built-in modules (modules.builtin.modinfo),
	// normalised.
	builtinAliases []kmod.Alias
	// index is depmod's output, nil when absent or ignored.
	index *depIndex
	// unindexed are the module files the index does not cover: all of them without one.
	unindexed map[string]bool

	mu      sync.Mutex
	infos   map[string]*Modinfo
	data    map[string][]byte // decompressed modules Resolve read, until ReadModule
	aliases *aliasTable       // nil until the first alias lookup
}

// aliasTable maps alias patterns of every module in the directory to module names.
type aliasTable struct {
	exact map[string][]string
	globs []kmod.Alias
}

// OpenOptions tune OpenWith.
type OpenOptions struct {
	// IgnoreIndexes reads every module's .modinfo even where depmod's indexes are
	// present: slow for compressed modules; for checking an index against the modules.
	IgnoreIndexes bool
}

// OpenDir indexes the module files under path (all of it, not only kernel/: out-of-tree
// modules live in extra/ and updates/), reads modules.builtin and
// modules.builtin.modinfo when present, and depmod's indexes when present. The build and
// source symlinks of a modules directory point into kernel sources and are not followed.
func OpenDir(path string) (*Dir, error) { return OpenWith(path, OpenOptions{}) }

// OpenWith is OpenDir with options.
func OpenWith(path string, opts OpenOptions) (*Dir, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		// EvalSymlinks names the component it stopped at (/usr/lib/modules for
		// /lib/modules/X on a merged-/usr system), not the path the user gave.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("modules directory %s: %w", path, err)
	}
	d := &Dir{Path: real, KVer: filepath.Base(real), files: map[string]string{},
		builtin: map[string]bool{}, infos: map[string]*Modinfo{}, data: map[string][]byte{},
		unindexed: map[string]bool{}}
	if !opts.IgnoreIndexes {
		if d.index, err = readDepIndex(real); err != nil {
			return nil, fmt.Errorf("modules directory: %w", err)
		}
	}
	var newer map[string]bool // module files changed after depmod ran
	if d.index != nil {
		newer = map[string]bool{}
	}
	err = filepath.WalkDir(real, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		name, ok := ModuleFileName(e.Name())
		if !ok {
			return nil
		}
		rel, _ := filepath.Rel(real, p)
		rel = filepath.ToSlash(rel)
		// Two files for one name (updates/ overriding kernel/): keep the one depmod would
		// prefer, updates/ first, then the shortest path.
		if old, dup := d.files[name]; dup && !preferPath(rel, old) {
			return nil
		}
		d.files[name] = rel
		if newer != nil {
			info, err := e.Info()
			if err != nil {
				return err
			}
			newer[name] = info.ModTime().After(d.index.at)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modules directory: %w", err)
	}
	if len(d.files) == 0 {
		return nil, fmt.Errorf("modules directory %s: no kernel modules in it", path)
	}
	for n, rel := range d.files {
		// Not covered: a file depmod did not see, saw at another path (updates/ added
		// later), or saw before it changed.
		if d.index == nil || newer[n] || d.index.paths[n] != rel {
			d.unindexed[n] = true
		}
	}
	if err := d.readBuiltin(); err != nil {
		return nil, err
	}
	return d, nil
}

// Indexed reports whether the directory's aliases come from depmod's indexes
// (modules.dep and modules.alias present, and not ignored).
func (d *Dir) Indexed() bool { return d.index != nil }

// Unindexed returns the module files depmod's indexes do not cover, sorted: every one
// when the directory has no indexes, else those added or changed after depmod ran. The
// first alias lookup reads (and decompresses) their .modinfo to learn their aliases.
func (d *Dir) Unindexed() []string {
	var out []string
	for n := range d.unindexed {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func preferPath(a, b string) bool {
	au, bu := strings.HasPrefix(a, "updates/"), strings.HasPrefix(b, "updates/")
	if au != bu {
		return au
	}
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// readBuiltin reads modules.builtin (one kernel/…/name.ko line per built-in module) and
// modules.builtin.modinfo (the .modinfo strings of built-in modules, each prefixed with
// "name.", NUL-separated), both optional: a kernel without CONFIG_MODULES builtin info
// simply has no built-ins to report.
func (d *Dir) readBuiltin() error {
	if b, err := os.ReadFile(filepath.Join(d.Path, "modules.builtin")); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if n, ok := ModuleFileName(strings.TrimSpace(sc.Text())); ok {
				d.builtin[n] = true
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	b, err := os.ReadFile(filepath.Join(d.Path, "modules.builtin.modinfo"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, s := range bytes.Split(b, []byte{0}) {
		key, val, ok := strings.Cut(string(s), "=")
		if !ok {
			continue
		}
		mod, field, ok := strings.Cut(key, ".")
		if !ok {
			continue
		}
		mod = Normalize(mod)
		d.builtin[mod] = true
		if field == "alias" && val != "" {
			d.builtinAliases = append(d.builtinAliases, kmod.Alias{Pattern: kmod.NormalizeAlias(val), Module: mod})
		}
	}
	return nil
}

// Names returns the names of all module files, sorted.
func (d *Dir) Names() []string {
	out := make([]string, 0, len(d.files))
	for n := range d.files {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// File returns the path of module name's file relative to the directory.
func (d *Dir) File(name string) (string, bool) {
	rel, ok := d.files[Normalize(name)]
	return rel, ok
}

// Builtin reports whether the kernel has the module name built in.
func (d *Dir) Builtin(name string) bool { return d.builtin[Normalize(name)] }

// Modinfo returns the .modinfo of module name, reading it once.
func (d *Dir) Modinfo(name string) (*Modinfo, error) { return d.load(Normalize(name), false) }

// load returns the .modinfo of module name (normalised), reading it once. With keep, the
// ELF decompressed to read it is kept for ReadModule.
func (d *Dir) load(name string, keep bool) (*Modinfo, error) {
	d.mu.Lock()
	mi := d.infos[name]
	d.mu.Unlock()
	if mi != nil {
		return mi, nil
	}
	rel, ok := d.files[name]
	if !ok {
		return nil, fmt.Errorf("module %s: %w", name, fs.ErrNotExist)
	}
	mi, data, err := readModule(filepath.Join(d.Path, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	if mi.Name == "" {
		mi.Name = name
	}
	d.mu.Lock()
	d.infos[name] = mi
	if keep && data != nil {
		d.data[name] = data
	}
	d.mu.Unlock()
	return mi, nil
}

// ReadModule returns the uncompressed ELF contents of module name, as an image stores
// it. Resolve keeps the compressed modules of its closure, which it decompressed to read
// their .modinfo; ReadModule hands each of those out once, without decompressing it
// again, and forgets it (so the memory goes as the image is written). Otherwise it reads
// the file.
func (d *Dir) ReadModule(name string) ([]byte, error) {
	name = Normalize(name)
	d.mu.Lock()
	data, ok := d.data[name]
	delete(d.data, name)
	d.mu.Unlock()
	if ok {
		return data, nil
	}
	rel, ok := d.files[name]
	if !ok {
		return nil, fmt.Errorf("module %s: %w", name, fs.ErrNotExist)
	}
	return ReadModuleFile(filepath.Join(d.Path, filepath.FromSlash(rel)))
}

// parallel calls fn(i) for every i in [0, n) on one goroutine per CPU and returns when
// all calls have: decompressing modules is CPU bound.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range min(n, max(1, runtime.NumCPU())) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				fn(i)
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// loadAliases builds the alias table: modules.alias's entries for the modules the index
// covers, and the aliases in the .modinfo of the others (read in parallel). Unreadable
// modules are skipped: one broken out-of-tree module must not stop an image build that
// does not need it.
func (d *Dir) loadAliases() *aliasTable {
	d.mu.Lock()
	t := d.aliases
	d.mu.Unlock()
	if t != nil {
		return t
	}
	t = &aliasTable{exact: map[string][]string{}}
	add := func(a kmod.Alias) {
		if kmod.IsPattern(a.Pattern) {
			t.globs = append(t.globs, a)
		} else {
			t.exact[a.Pattern] = append(t.exact[a.Pattern], a.Module)
		}
	}
	if d.index != nil {
		for _, a := range d.index.aliases {
			// An alias of a module whose file is gone, or whose .modinfo is read below,
			// is not the index's to give.
			if _, ok := d.files[a.Module]; ok && !d.unindexed[a.Module] {
				add(a)
			}
		}
	}
	scan := d.Unindexed()
	infos := make([]*Modinfo, len(scan))
	parallel(len(scan), func(i int) { infos[i], _ = d.load(scan[i], false) })
	for i, mi := range infos {
		if mi == nil {
			continue
		}
		for _, a := range mi.Aliases {
			add(kmod.Alias{Pattern: kmod.NormalizeAlias(a), Module: scan[i]})
		}
	}
	d.mu.Lock()
	d.aliases = t
	d.mu.Unlock()
	return t
}

// Lookup resolves a module name or alias the way modprobe does: a module file of that
// name, else a built-in module of that name, else every module with a matching alias
// (crc32c → crc32c_generic and crc32c_intel). builtin reports that the kernel has it built
// in (by name or alias); modules then lists loadable modules that also match, which
// modprobe would load too.
func (d *Dir) Lookup(name string) (modules []string, builtin bool) {
	n := Normalize(name)
	if _, ok := d.files[n]; ok {
		return []string{n}, false
	}
	if d.builtin[n] {
		return nil, true
	}
	a := kmod.NormalizeAlias(name)
	for _, ba := range d.builtinAliases {
		if kmod.Match(ba.Pattern, a) {
			builtin = true
			break
		}
	}
	t := d.loadAliases()
	seen := map[string]bool{}
	for _, m := range t.exact[a] {
		if !seen[m] {
			seen[m] = true
			modules = append(modules, m)
		}
	}
	for _, g := range t.globs {
		if !seen[g.Module] && kmod.Match(g.Pattern, a) {
			seen[g.Module] = true
			modules = append(modules, g.Module)
		}
	}
	sort.Strings(modules)
	return modules, builtin
}
