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
// which modules and aliases the kernel has built in, and, read lazily, every module's
// .modinfo. It does not need depmod's output (modules.dep, modules.alias): everything comes
// from the module files themselves and from modules.builtin(.modinfo), which the kernel
// build installs.
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

	mu      sync.Mutex
	infos   map[string]*Modinfo
	aliases *aliasTable // nil until the first alias lookup
}

// aliasTable maps alias patterns of every module in the directory to module names.
type aliasTable struct {
	exact map[string][]string
	globs []kmod.Alias
}

// moduleSuffixes are the module file names the kernel build and distributions install.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

// moduleName returns the module name of a module file name and whether it is one.
func moduleName(file string) (string, bool) {
	for _, s := range moduleSuffixes {
		if strings.HasSuffix(file, s) {
			return Normalize(strings.TrimSuffix(file, s)), true
		}
	}
	return "", false
}

// OpenDir indexes the module files under path (all of it, not only kernel/: out-of-tree
// modules live in extra/ and updates/) and reads modules.builtin and
// modules.builtin.modinfo when present. The build and source symlinks of a modules
// directory point into kernel sources and are not followed.
func OpenDir(path string) (*Dir, error) {
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, fmt.Errorf("modules directory: %w", err)
	}
	d := &Dir{Path: real, KVer: filepath.Base(real), files: map[string]string{},
		builtin: map[string]bool{}, infos: map[string]*Modinfo{}}
	err = filepath.WalkDir(real, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.IsDir() {
			return nil
		}
		name, ok := moduleName(e.Name())
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
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("modules directory: %w", err)
	}
	if len(d.files) == 0 {
		return nil, fmt.Errorf("modules directory %s: no kernel modules in it", path)
	}
	if err := d.readBuiltin(); err != nil {
		return nil, err
	}
	return d, nil
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
			if n, ok := moduleName(filepath.Base(strings.TrimSpace(sc.Text()))); ok {
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
func (d *Dir) Modinfo(name string) (*Modinfo, error) {
	name = Normalize(name)
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
	mi, err := ReadModinfoFile(filepath.Join(d.Path, filepath.FromSlash(rel)))
	if err != nil {
		return nil, err
	}
	if mi.Name == "" {
		mi.Name = name
	}
	d.mu.Lock()
	d.infos[name] = mi
	d.mu.Unlock()
	return mi, nil
}

// loadAliases reads the .modinfo of every module (in parallel: a distribution kernel has
// thousands) and builds the alias table. Unreadable modules are skipped: one broken
// out-of-tree module must not stop an image build that does not need it.
func (d *Dir) loadAliases() *aliasTable {
	d.mu.Lock()
	t := d.aliases
	d.mu.Unlock()
	if t != nil {
		return t
	}
	names := d.Names()
	infos := make([]*Modinfo, len(names))
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(1, runtime.NumCPU()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				infos[i], _ = d.Modinfo(names[i])
			}
		}()
	}
	for i := range names {
		next <- i
	}
	close(next)
	wg.Wait()
	t = &aliasTable{exact: map[string][]string{}}
	for i, mi := range infos {
		if mi == nil {
			continue
		}
		for _, a := range mi.Aliases {
			a = kmod.NormalizeAlias(a)
			if strings.ContainsAny(a, "*?[\\") {
				t.globs = append(t.globs, kmod.Alias{Pattern: a, Module: names[i]})
			} else {
				t.exact[a] = append(t.exact[a], names[i])
			}
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
