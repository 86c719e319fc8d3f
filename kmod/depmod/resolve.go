package depmod

import (
	"fmt"
	"sort"
	"strings"
)

// Request is one module the image needs, by module name or alias.
type Request struct {
	// Name is a module name or an alias (crc32c, crypto-xts, fs-ext4).
	Name string
	// Optional requests are skipped when the kernel has no such module (hardware drivers,
	// accelerated variants); a missing required one fails the resolution.
	Optional bool
	// By says who asked, for messages: "hook nbd", "--add-module", "NIC policy".
	By string
}

// Module is one module of a resolved closure.
type Module struct {
	// Name is the module name with underscores.
	Name string
	// File is the module file relative to the modules directory.
	File string
	// Info is the module's .modinfo.
	Info *Modinfo
	// Deps are the modules of the closure this one needs loaded first (depends=).
	Deps []string
	// Soft are the modules its softdep pre: entries resolved to: loaded first when they
	// can be, but not required.
	Soft []string
}

// Closure is the result of Resolve: every module needed, each after its dependencies.
type Closure struct {
	// Modules in dependency order.
	Modules []*Module
	// Resolved maps each requested name to the modules it resolved to (empty when built
	// in or skipped).
	Resolved map[string][]string
	// Builtin lists requested names, dependencies and softdeps the kernel has built in,
	// sorted; a request for them at boot is satisfied without loading anything.
	Builtin []string
	// Skipped lists optional requests the kernel has neither as module nor built in.
	Skipped []Request
	// Warnings describe soft dependencies that could not be satisfied.
	Warnings []string
}

// MissingError reports a required module that is neither a module file nor built in.
type MissingError struct {
	// Name is the missing module or alias.
	Name string
	// By says who needed it: a request's By, or "MODULE (depends=)".
	By string
	// Dir is the modules directory searched.
	Dir string
}

func (e *MissingError) Error() string {
	return fmt.Sprintf("module %s (needed by %s) is neither in %s nor built into the kernel", e.Name, e.By, e.Dir)
}

type visitState uint8

const (
	unvisited visitState = iota
	visiting
	visited
	failed
)

type resolver struct {
	d        *Dir
	c        *Closure
	state    map[string]visitState
	mods     map[string]*Module
	builtins map[string]bool
}

// Resolve computes the closure of reqs over depends= and softdep= (pre: and post:), the
// way modprobe would load them. Soft dependencies are best effort, as in modprobe: one
// that is missing or fails to resolve adds a warning, not an error. The dependency order
// is deterministic: requests in the order given, dependencies depth-first in .modinfo
// order.
func (d *Dir) Resolve(reqs []Request) (*Closure, error) {
	r := &resolver{d: d, c: &Closure{Resolved: map[string][]string{}}, state: map[string]visitState{},
		mods: map[string]*Module{}, builtins: map[string]bool{}}
	d.prefetch(reqs)
	for _, req := range reqs {
		if _, done := r.c.Resolved[req.Name]; done {
			continue
		}
		mods, builtin := d.Lookup(req.Name)
		if builtin {
			r.builtins[kmodName(req.Name)] = true
		}
		if len(mods) == 0 {
			if builtin {
				r.c.Resolved[req.Name] = nil
				continue
			}
			if req.Optional {
				r.c.Resolved[req.Name] = nil
				r.c.Skipped = append(r.c.Skipped, req)
				continue
			}
			return nil, &MissingError{Name: req.Name, By: req.By, Dir: d.Path}
		}
		var got []string
		for _, m := range mods {
			ok, err := r.visit(m)
			if err != nil {
				if req.Optional {
					r.c.Warnings = append(r.c.Warnings, fmt.Sprintf("optional module %s (for %s) skipped: %v", m, req.By, err))
					continue
				}
				return nil, fmt.Errorf("%s (for %s): %w", req.Name, req.By, err)
			}
			if ok {
				got = append(got, m)
			}
		}
		r.c.Resolved[req.Name] = got
	}
	for b := range r.builtins {
		r.c.Builtin = append(r.c.Builtin, b)
	}
	sort.Strings(r.c.Builtin)
	return r.c, nil
}

// prefetch reads, in parallel, the .modinfo — and keeps the decompressed ELF, for
// ReadModule — of the modules the closure of reqs will hold as depmod's indexes predict
// it: the modules each request names, their modules.dep dependencies and their
// modules.softdep ones. The walk that follows decides from the modules' own .modinfo; the
// prediction only spares it decompressing one module after the other. Without indexes
// only the requested modules are predicted. Errors are left for the walk to report.
func (d *Dir) prefetch(reqs []Request) {
	seen := map[string]bool{}
	var queue []string
	push := func(nameOrAlias string) {
		mods, _ := d.Lookup(nameOrAlias)
		for _, m := range mods {
			if !seen[m] {
				seen[m] = true
				queue = append(queue, m)
			}
		}
	}
	for _, r := range reqs {
		push(r.Name)
	}
	if d.index != nil {
		for i := 0; i < len(queue); i++ {
			if m := queue[i]; !d.unindexed[m] {
				for _, dep := range d.index.deps[m] {
					push(dep)
				}
				for _, s := range d.index.softdeps[m] {
					push(s)
				}
			}
		}
	}
	parallel(len(queue), func(i int) { d.load(queue[i], true) })
}

// kmodName is the form built-in names and aliases take in the boot index.
func kmodName(s string) string { return strings.ReplaceAll(s, "-", "_") }

// visit adds module name (a module file of the directory) and its dependencies to the
// closure. It returns whether the module is complete in the closure — false only when
// the module is already being visited, i.e. a soft-dependency cycle, whose edge the caller
// drops so that the dependency graph stays acyclic.
func (r *resolver) visit(name string) (bool, error) {
	switch r.state[name] {
	case visited:
		return true, nil
	case visiting:
		return false, nil
	case failed:
		return false, fmt.Errorf("module %s failed to resolve", name)
	}
	r.state[name] = visiting
	mi, err := r.d.load(name, true)
	if err != nil {
		r.state[name] = failed
		return false, err
	}
	m := &Module{Name: name, File: r.d.files[name], Info: mi}
	addDep := func(list *[]string, dep string) {
		for _, x := range *list {
			if x == dep {
				return
			}
		}
		*list = append(*list, dep)
	}
	for _, dep := range mi.Depends {
		if _, ok := r.d.files[dep]; !ok {
			if r.d.Builtin(dep) {
				r.builtins[dep] = true
				continue
			}
			r.state[name] = failed
			return false, &MissingError{Name: dep, By: name + " (depends=)", Dir: r.d.Path}
		}
		ok, err := r.visit(dep)
		if err != nil {
			r.state[name] = failed
			return false, err
		}
		if ok {
			addDep(&m.Deps, dep)
		}
	}
	for _, s := range mi.SoftPre {
		for _, dep := range r.soft(name, "pre", s) {
			if !contains(m.Deps, dep) {
				addDep(&m.Soft, dep)
			}
		}
	}
	r.state[name] = visited
	r.mods[name] = m
	r.c.Modules = append(r.c.Modules, m)
	for _, s := range mi.SoftPost {
		r.soft(name, "post", s)
	}
	return true, nil
}

// soft resolves one soft dependency of module name and returns the modules of the closure
// it resolved to; failures become warnings.
func (r *resolver) soft(name, kind, dep string) []string {
	mods, builtin := r.d.Lookup(dep)
	if builtin {
		r.builtins[kmodName(dep)] = true
	}
	if len(mods) == 0 {
		if !builtin {
			r.c.Warnings = append(r.c.Warnings, fmt.Sprintf("%s: softdep %s: %s is neither a module nor built in", name, kind, dep))
		}
		return nil
	}
	var out []string
	for _, m := range mods {
		ok, err := r.visit(m)
		if err != nil {
			r.c.Warnings = append(r.c.Warnings, fmt.Sprintf("%s: softdep %s: %s: %v", name, kind, dep, err))
			continue
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
