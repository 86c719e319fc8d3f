package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"sort"
	"strconv"
	"strings"
)

// IndexName is the file name of the module index inside /lib/modules/VER of the image.
const IndexName = "nbdroot.modidx"

// IndexVersion is the format version this package writes and the only one it reads. A
// reader refuses other versions instead of guessing: the index and the init that reads it
// are built together, so a mismatch means a broken image, not an old one to tolerate.
const IndexVersion = 1

// indexMagic starts the first line of every index.
const indexMagic = "nbdroot-modidx"

// maxIndexLine bounds one line of the index; alias patterns are short, a dependency list of
// a few hundred names fits easily.
const maxIndexLine = 1 << 20

// Index is the boot-time module database of an image: the modules it carries with their
// dependencies already resolved (depends= plus softdep pre:), their aliases, the names the
// kernel has built in, and which modules each hook loads.
//
// On disk it is a small text file (tab-separated records, one per line) so that it can be
// read from the rescue shell with cat:
//
//	nbdroot-modidx 1
//	kver	6.1.0-56-amd64
//	mod	NAME	PATH	DEP,DEP…	SOFT,SOFT…  (dependency order: every DEP and SOFT is on an earlier mod line)
//	alias	PATTERN	NAME
//	builtin	NAME
//	options	NAME	PARAMS               (modprobe.d's "options NAME PARAMS", modconf)
//	blacklist	NAME                     (modprobe.d's "blacklist NAME": coldplug skips it)
//	hook	HOOK	NAME,NAME…	OPTIONAL,OPTIONAL…  (modules the hook loads, without their dependencies)
//	nics	NAME,NAME…               (network drivers, loaded by coldplug when a device matches)
//
// Lines starting with '#' and records of unknown types are skipped, so later versions of
// the same format number can add record types.
type Index struct {
	// KVer is the kernel release the modules were built for (uname -r).
	KVer string
	// Modules are the modules in the image, each after all of its dependencies.
	Modules []Module
	// Aliases map alias patterns (normalised with NormalizeAlias) to module names.
	Aliases []Alias
	// Builtin lists module names and aliases the kernel has built in: a request for one of
	// them is satisfied without loading anything.
	Builtin []string
	// Hooks lists, per hook, the modules it loads at boot.
	Hooks []Hook
	// NICs are the network drivers of the image (NIC policy of the builder).
	NICs []string
	// Options are module parameters from modprobe.d (options NAME PARAMS), passed to
	// finit_module when the module loads, before any given on a modprobe command line.
	Options []ModuleOptions
	// Blacklist names modules coldplug does not load for a device (modprobe.d's blacklist,
	// as udev's modprobe -b honours it); a request by name still loads them.
	Blacklist []string

	byName  map[string]int
	exact   map[string][]string
	globs   map[string][]Alias // keyed by the bus prefix before the first ':'
	anyGlob []Alias            // patterns whose bus prefix is itself a glob
	builtin map[string]bool
	options map[string]string
	blocked map[string]bool
}

// ModuleOptions are the parameters modprobe.d gives one module.
type ModuleOptions struct {
	Module string
	// Params is the parameter string, as finit_module takes it ("nbds_max=4 max_part=8").
	Params string
}

// Module is one module file of an image.
type Module struct {
	// Name is the module name with underscores.
	Name string
	// Path is the module file relative to the modules directory (kernel/fs/ext4/ext4.ko).
	Path string
	// Deps are the modules that must be loaded first (depends=): if one fails, this one
	// cannot load.
	Deps []string
	// Soft are the softdep pre: modules the image carries: loaded first when they can be,
	// but their failure does not stop this module (crc32c_intel refuses CPUs without
	// SSE4.2 with ENODEV; ext4 still loads, with crc32c_generic).
	Soft []string
}

// Alias maps one alias pattern to the module that answers to it.
type Alias struct {
	Pattern string
	Module  string
}

// Hook lists the modules one boot hook loads; their dependencies come from the Module
// records.
type Hook struct {
	Name string
	// Modules are the modules the hook needs: if one of them (or one of their depends=)
	// fails to load, the hook fails.
	Modules []string
	// Optional are modules the hook loads when it can (hardware drivers, accelerated
	// variants the machine may lack); their failure is logged, not the hook's failure.
	Optional []string
}

// IndexError reports a malformed index: which line and what is wrong with it.
type IndexError struct {
	Line int
	Msg  string
}

func (e *IndexError) Error() string {
	if e.Line == 0 {
		return "module index: " + e.Msg
	}
	return fmt.Sprintf("module index line %d: %s", e.Line, e.Msg)
}

// ReadIndex reads and validates an index. The index is input to PID 1, so it is checked as
// strictly as the writer promises: every dependency, alias target and hook entry names a
// module listed before it, which also guarantees that the dependency graph has no cycle
// (a cycle would block the parallel loader forever).
func ReadIndex(r io.Reader) (*Index, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxIndexLine)
	ix := &Index{}
	line := 0
	seenHeader := false
	for sc.Scan() {
		line++
		text := sc.Text()
		if !seenHeader {
			magic, ver, ok := strings.Cut(text, " ")
			if !ok || magic != indexMagic {
				return nil, &IndexError{line, "not an nbdroot module index"}
			}
			v, err := strconv.Atoi(ver)
			if err != nil || v != IndexVersion {
				return nil, &IndexError{line, fmt.Sprintf("format version %q, want %d", ver, IndexVersion)}
			}
			seenHeader = true
			continue
		}
		if text == "" || text[0] == '#' {
			continue
		}
		f := strings.Split(text, "\t")
		bad := func(msg string) error { return &IndexError{line, f[0] + ": " + msg} }
		switch f[0] {
		case "kver":
			if len(f) != 2 {
				return nil, bad("want 1 field")
			}
			ix.KVer = f[1]
		case "mod":
			if len(f) < 3 || len(f) > 5 {
				return nil, bad("want NAME PATH [DEPS [SOFT]]")
			}
			m := Module{Name: f[1], Path: f[2]}
			if len(f) >= 4 && f[3] != "" {
				m.Deps = strings.Split(f[3], ",")
			}
			if len(f) == 5 && f[4] != "" {
				m.Soft = strings.Split(f[4], ",")
			}
			ix.Modules = append(ix.Modules, m)
		case "alias":
			if len(f) != 3 {
				return nil, bad("want PATTERN NAME")
			}
			ix.Aliases = append(ix.Aliases, Alias{Pattern: f[1], Module: f[2]})
		case "builtin":
			if len(f) != 2 {
				return nil, bad("want NAME")
			}
			ix.Builtin = append(ix.Builtin, f[1])
		case "hook":
			if len(f) < 2 || len(f) > 4 {
				return nil, bad("want HOOK [NAMES [OPTIONAL]]")
			}
			h := Hook{Name: f[1]}
			if len(f) >= 3 && f[2] != "" {
				h.Modules = strings.Split(f[2], ",")
			}
			if len(f) == 4 && f[3] != "" {
				h.Optional = strings.Split(f[3], ",")
			}
			ix.Hooks = append(ix.Hooks, h)
		case "nics":
			if len(f) != 2 {
				return nil, bad("want NAMES")
			}
			if f[1] != "" {
				ix.NICs = append(ix.NICs, strings.Split(f[1], ",")...)
			}
		case "options":
			if len(f) != 3 {
				return nil, bad("want NAME PARAMS")
			}
			ix.Options = append(ix.Options, ModuleOptions{Module: f[1], Params: f[2]})
		case "blacklist":
			if len(f) != 2 {
				return nil, bad("want NAME")
			}
			ix.Blacklist = append(ix.Blacklist, f[1])
		default:
			// A record type added later under the same version: skip it.
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &IndexError{line + 1, err.Error()}
	}
	if !seenHeader {
		return nil, &IndexError{0, "empty"}
	}
	if err := ix.build(); err != nil {
		return nil, err
	}
	return ix, nil
}

// Validate checks the index the way ReadIndex does and prepares it for lookups. Writers
// call it (WriteTo does) so that an image never carries an index its init would refuse.
func (ix *Index) Validate() error { return ix.build() }

func (ix *Index) build() error {
	ix.byName = make(map[string]int, len(ix.Modules))
	ix.exact = make(map[string][]string)
	ix.globs = make(map[string][]Alias)
	ix.anyGlob = nil
	ix.builtin = make(map[string]bool, len(ix.Builtin))
	if err := checkField("kver", ix.KVer, true); err != nil {
		return err
	}
	for _, m := range ix.Modules {
		if err := checkName(m.Name); err != nil {
			return err
		}
		if _, dup := ix.byName[m.Name]; dup {
			return &IndexError{0, fmt.Sprintf("module %s listed twice", m.Name)}
		}
		if err := checkPath(m.Path); err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		for _, d := range append(append([]string{}, m.Deps...), m.Soft...) {
			if _, ok := ix.byName[d]; !ok {
				return &IndexError{0, fmt.Sprintf("module %s depends on %q, which is not listed before it", m.Name, d)}
			}
		}
		ix.byName[m.Name] = len(ix.byName)
	}
	for _, a := range ix.Aliases {
		if err := checkField("alias", a.Pattern, false); err != nil {
			return err
		}
		if _, ok := ix.byName[a.Module]; !ok {
			return &IndexError{0, fmt.Sprintf("alias %q names unknown module %q", a.Pattern, a.Module)}
		}
		if !hasMeta(a.Pattern) {
			ix.exact[a.Pattern] = append(ix.exact[a.Pattern], a.Module)
			continue
		}
		bus, _, ok := strings.Cut(a.Pattern, ":")
		if !ok || hasMeta(bus) {
			ix.anyGlob = append(ix.anyGlob, a)
			continue
		}
		ix.globs[bus] = append(ix.globs[bus], a)
	}
	for _, b := range ix.Builtin {
		if err := checkField("builtin", b, false); err != nil {
			return err
		}
		ix.builtin[b] = true
	}
	for _, h := range ix.Hooks {
		if err := checkName(h.Name); err != nil {
			return err
		}
		for _, m := range append(append([]string{}, h.Modules...), h.Optional...) {
			if _, ok := ix.byName[m]; !ok {
				return &IndexError{0, fmt.Sprintf("hook %s loads unknown module %q", h.Name, m)}
			}
		}
	}
	for _, m := range ix.NICs {
		if _, ok := ix.byName[m]; !ok {
			return &IndexError{0, fmt.Sprintf("NIC driver %q is not a module of the index", m)}
		}
	}
	ix.options = make(map[string]string, len(ix.Options))
	for _, o := range ix.Options {
		if _, ok := ix.byName[o.Module]; !ok {
			return &IndexError{0, fmt.Sprintf("options for %q, which is not a module of the index", o.Module)}
		}
		if err := checkField("options", o.Params, false); err != nil {
			return err
		}
		if _, dup := ix.options[o.Module]; dup {
			return &IndexError{0, fmt.Sprintf("options for module %s listed twice", o.Module)}
		}
		ix.options[o.Module] = o.Params
	}
	ix.blocked = make(map[string]bool, len(ix.Blacklist))
	for _, m := range ix.Blacklist {
		if err := checkName(m); err != nil {
			return err
		}
		ix.blocked[m] = true
	}
	return nil
}

// ModuleParams returns the modprobe.d parameters of module name ("" when none).
func (ix *Index) ModuleParams(name string) string {
	return ix.options[strings.ReplaceAll(name, "-", "_")]
}

// Blacklisted reports whether modprobe.d blacklists module name.
func (ix *Index) Blacklisted(name string) bool {
	return ix.blocked[strings.ReplaceAll(name, "-", "_")]
}

// checkName accepts a module or hook name: non-empty, no separators of the format.
func checkName(s string) error {
	if s == "" || strings.ContainsAny(s, "\t\n\r ,") {
		return &IndexError{0, fmt.Sprintf("bad name %q", s)}
	}
	return nil
}

// checkField accepts a free-form field: no tab or line break, non-empty unless allowed.
func checkField(what, s string, emptyOK bool) error {
	if (s == "" && !emptyOK) || strings.ContainsAny(s, "\t\n\r") {
		return &IndexError{0, fmt.Sprintf("bad %s %q", what, s)}
	}
	return nil
}

// checkPath accepts a clean relative path to a .ko file below the modules directory.
func checkPath(p string) error {
	if p == "" || strings.ContainsAny(p, "\t\n\r") || path.IsAbs(p) || path.Clean(p) != p ||
		p == ".." || strings.HasPrefix(p, "../") || !strings.HasSuffix(p, ".ko") {
		return &IndexError{0, fmt.Sprintf("bad module path %q", p)}
	}
	return nil
}

// WriteTo writes the index in its file format. It validates first and writes nothing when
// the index is invalid.
func (ix *Index) WriteTo(w io.Writer) (int64, error) {
	if err := ix.build(); err != nil {
		return 0, err
	}
	bw := bufio.NewWriter(w)
	cw := &countWriter{w: bw}
	fmt.Fprintf(cw, "%s %d\n", indexMagic, IndexVersion)
	fmt.Fprintf(cw, "kver\t%s\n", ix.KVer)
	for _, m := range ix.Modules {
		switch {
		case len(m.Soft) > 0:
			fmt.Fprintf(cw, "mod\t%s\t%s\t%s\t%s\n", m.Name, m.Path, strings.Join(m.Deps, ","), strings.Join(m.Soft, ","))
		case len(m.Deps) > 0:
			fmt.Fprintf(cw, "mod\t%s\t%s\t%s\n", m.Name, m.Path, strings.Join(m.Deps, ","))
		default:
			fmt.Fprintf(cw, "mod\t%s\t%s\n", m.Name, m.Path)
		}
	}
	for _, a := range ix.Aliases {
		fmt.Fprintf(cw, "alias\t%s\t%s\n", a.Pattern, a.Module)
	}
	for _, b := range ix.Builtin {
		fmt.Fprintf(cw, "builtin\t%s\n", b)
	}
	for _, h := range ix.Hooks {
		if len(h.Optional) > 0 {
			fmt.Fprintf(cw, "hook\t%s\t%s\t%s\n", h.Name, strings.Join(h.Modules, ","), strings.Join(h.Optional, ","))
		} else {
			fmt.Fprintf(cw, "hook\t%s\t%s\n", h.Name, strings.Join(h.Modules, ","))
		}
	}
	if len(ix.NICs) > 0 {
		fmt.Fprintf(cw, "nics\t%s\n", strings.Join(ix.NICs, ","))
	}
	for _, o := range ix.Options {
		fmt.Fprintf(cw, "options\t%s\t%s\n", o.Module, o.Params)
	}
	for _, m := range ix.Blacklist {
		fmt.Fprintf(cw, "blacklist\t%s\n", m)
	}
	if cw.err != nil {
		return cw.n, cw.err
	}
	return cw.n, bw.Flush()
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// Module returns the module called name ('-' and '_' are equivalent).
func (ix *Index) Module(name string) (Module, bool) {
	i, ok := ix.byName[strings.ReplaceAll(name, "-", "_")]
	if !ok {
		return Module{}, false
	}
	return ix.Modules[i], true
}

// HookModules returns every module the hook called name loads — its modules, optional
// ones and their dependencies — in dependency order.
func (ix *Index) HookModules(name string) []string {
	h, _ := ix.Hook(name)
	out, _ := ix.Closure(append(append([]string{}, h.Modules...), h.Optional...))
	return out
}

// Hook returns the module list of the hook called name.
func (ix *Index) Hook(name string) (Hook, bool) {
	for _, h := range ix.Hooks {
		if h.Name == name {
			return h, true
		}
	}
	return Hook{}, false
}

// Lookup resolves what modprobe is asked for: a module name, or an alias (crypto-xts,
// fs-ext4, net-pf-17, a device modalias). It returns the modules that answer to it, in
// index order, and whether the kernel has it built in. Neither means it is unknown.
func (ix *Index) Lookup(name string) (modules []string, builtin bool) {
	if m, ok := ix.Module(name); ok {
		return []string{m.Name}, false
	}
	norm := NormalizeAlias(name)
	if ix.builtin[norm] || ix.builtin[strings.ReplaceAll(name, "-", "_")] {
		builtin = true
	}
	return ix.Match(norm), builtin
}

// Match returns the modules with an alias matching the modalias (already normalised), in
// index order without duplicates — like udev's kmod builtin, which loads every module
// matching a device.
func (ix *Index) Match(modalias string) []string {
	seen := map[string]bool{}
	for _, m := range ix.exact[modalias] {
		seen[m] = true
	}
	try := func(as []Alias) {
		for _, a := range as {
			if !seen[a.Module] && Match(a.Pattern, modalias) {
				seen[a.Module] = true
			}
		}
	}
	if bus, _, ok := strings.Cut(modalias, ":"); ok {
		try(ix.globs[bus])
	}
	try(ix.anyGlob)
	if len(seen) == 0 {
		return nil
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return ix.byName[out[i]] < ix.byName[out[j]] })
	return out
}

// ErrUnknownModule is wrapped by errors about names that are neither a module of the index,
// nor an alias of one, nor built in.
var ErrUnknownModule = errors.New("module not found")

// Closure returns the named modules and everything they depend on, in dependency order
// (index order, which the writer made topological). Built-in names are skipped; an
// unknown name is an error wrapping ErrUnknownModule.
func (ix *Index) Closure(names []string) ([]string, error) {
	return ix.closure(names, true)
}

// closure is Closure, following soft dependencies too when soft is set.
func (ix *Index) closure(names []string, soft bool) ([]string, error) {
	want := make([]bool, len(ix.Modules))
	var missing []string
	var add func(i int)
	add = func(i int) {
		if want[i] {
			return
		}
		want[i] = true
		for _, d := range ix.Modules[i].Deps {
			add(ix.byName[d])
		}
		if soft {
			for _, d := range ix.Modules[i].Soft {
				add(ix.byName[d])
			}
		}
	}
	for _, n := range names {
		mods, builtin := ix.Lookup(n)
		if len(mods) == 0 && !builtin {
			missing = append(missing, n)
		}
		for _, m := range mods {
			add(ix.byName[m])
		}
	}
	var out []string
	for i, w := range want {
		if w {
			out = append(out, ix.Modules[i].Name)
		}
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("%s: %w", strings.Join(missing, ", "), ErrUnknownModule)
	}
	return out, nil
}
