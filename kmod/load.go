package kmod

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Loader inserts one module file into the kernel. The real one calls finit_module(2)
// (FinitLoader on Linux); tests use a fake. An error satisfying errors.Is(err,
// fs.ErrExist) — EEXIST — means the module is already loaded, which is success.
type Loader interface {
	Load(path, params string) error
}

// ModuleError reports a module that could not be loaded: the module, its file and why.
type ModuleError struct {
	Module string
	Path   string
	Err    error
}

func (e *ModuleError) Error() string {
	return fmt.Sprintf("load module %s (%s): %v", e.Module, e.Path, e.Err)
}

func (e *ModuleError) Unwrap() error { return e.Err }

// DependencyError is the reason of a ModuleError when a module was not attempted because
// a module it depends on failed.
type DependencyError struct {
	Dep string
}

func (e *DependencyError) Error() string { return "dependency " + e.Dep + " failed" }

// Boot loads the modules of an image's index at boot, in parallel where dependencies
// allow: a module starts as soon as every module it depends on is loaded, and at most
// Parallel finit_module calls run at once. When more modules are ready than may load, the
// network drivers (and what they need) go first, then each hook's modules in boot order:
// the network is on every nbdroot boot's critical path, ext4 is not needed until the end.
// Boot remembers what it loaded, so hooks, coldplug and modprobe requests share the work;
// it is safe for concurrent use. Outcomes are final, a cancelled load included: at boot a
// cancellation means the init gave up, and a retry from the rescue shell is a modprobe
// process with a Boot of its own.
type Boot struct {
	ix     *Index
	dir    string
	loader Loader
	logf   func(format string, args ...any)
	sem    *prioSem
	prio   map[string]int // lower loads first; absent = last
	// cpuAliases are the cpu: modalias patterns of modules that drive a CPU feature
	// (crc32c_intel, aesni_intel…); cpu is this machine's CPU modalias, "" when unknown.
	cpuAliases map[string][]string
	cpu        string

	mu    sync.Mutex
	state map[string]*loadState
}

// loadState is one module's load, started once and awaited by everyone who needs it.
type loadState struct {
	done chan struct{}
	err  error // set before done is closed
}

// BootOptions configure a Boot.
type BootOptions struct {
	// Parallel bounds concurrent finit_module calls; 0 means max(4, number of CPUs):
	// module init often sleeps (device probing, firmware), so more loads than CPUs help.
	Parallel int
	// Logf receives one line per module loaded or failed; nil discards.
	Logf func(format string, args ...any)
	// CPUModalias is this machine's CPU modalias (/sys/devices/system/cpu/modalias). When
	// set, a module whose only purpose is a CPU feature (it has cpu: aliases) is skipped
	// with ErrCPUFeature unless one of them matches: the kernel would refuse it with ENODEV
	// anyway, after reading and checking the signature of the whole module.
	CPUModalias string
}

// ErrCPUFeature reports a module for a CPU feature this machine does not have.
var ErrCPUFeature = errors.New("the CPU lacks the feature this module accelerates (skipped)")

// NewBoot returns a Boot that loads modules of ix from dir (the directory the index's
// paths are relative to, /lib/modules/VER) through loader.
func NewBoot(ix *Index, dir string, loader Loader, opts BootOptions) *Boot {
	n := opts.Parallel
	if n <= 0 {
		n = max(4, runtime.NumCPU())
	}
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	b := &Boot{ix: ix, dir: dir, loader: loader, logf: logf, sem: newPrioSem(n),
		prio: priorities(ix), state: make(map[string]*loadState), cpu: NormalizeAlias(opts.CPUModalias)}
	if b.cpu != "" {
		b.cpuAliases = map[string][]string{}
		for _, a := range ix.Aliases {
			if strings.HasPrefix(a.Pattern, "cpu:") {
				b.cpuAliases[a.Module] = append(b.cpuAliases[a.Module], a.Pattern)
			}
		}
	}
	return b
}

// cpuCapable reports whether this machine's CPU can run module name: true unless the
// module has cpu: aliases and none matches.
func (b *Boot) cpuCapable(name string) bool {
	pats, ok := b.cpuAliases[name]
	if !ok {
		return true
	}
	for _, p := range pats {
		if Match(p, b.cpu) {
			return true
		}
	}
	return false
}

// priorities ranks the modules of ix for loading: the NIC drivers and their dependencies 0,
// then the modules of the i-th hook (with dependencies) i+1; a module keeps its best rank.
func priorities(ix *Index) map[string]int {
	prio := map[string]int{}
	rank := func(names []string, p int) {
		all, _ := ix.Closure(names)
		for _, m := range all {
			if old, ok := prio[m]; !ok || p < old {
				prio[m] = p
			}
		}
	}
	rank(ix.NICs, 0)
	for i, h := range ix.Hooks {
		rank(append(append([]string{}, h.Modules...), h.Optional...), i+1)
	}
	return prio
}

// Index returns the index b loads from.
func (b *Boot) Index() *Index { return b.ix }

// Loaded reports whether b has loaded (or found already loaded) the module called name.
func (b *Boot) Loaded(name string) bool {
	b.mu.Lock()
	st := b.state[name]
	b.mu.Unlock()
	if st == nil {
		return false
	}
	select {
	case <-st.done:
		return st.err == nil
	default:
		return false
	}
}

// ErrUnknownHook reports a hook the index does not list: the image was built with other
// hooks than the init runs, so its modules (if any) are not known.
var ErrUnknownHook = errors.New("hook not in the module index")

// LoadHook loads the modules the index lists for the hook called hook, optional ones
// included. Only failures of the hook's required modules and of what they depend on are
// returned; others — optional modules, soft dependencies — are logged: an accelerated
// variant refusing a CPU without its instructions (ENODEV) does not stop the boot, the
// generic one does the work. A hook the index does not list is an error wrapping
// ErrUnknownHook (the builder lists every hook of the image, those without modules too).
func (b *Boot) LoadHook(ctx context.Context, hook string) error {
	h, ok := b.ix.Hook(hook)
	if !ok {
		return fmt.Errorf("%s: %w", hook, ErrUnknownHook)
	}
	need, _ := b.ix.closure(h.Modules, false)
	needed := map[string]bool{}
	for _, m := range need {
		needed[m] = true
	}
	var errs []error
	for _, err := range b.load(ctx, append(append([]string{}, h.Modules...), h.Optional...), nil) {
		var me *ModuleError
		if errors.As(err, &me) && !needed[me.Module] {
			b.logf("hook %s: module %s not loaded (not required): %v", hook, me.Module, me.Err)
			continue
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Load loads the named modules (names or aliases) and their dependencies, and waits until
// all of them are loaded or failed. Failures do not stop independent modules; the
// returned error joins one *ModuleError per failed module (dependents of a failed module
// fail with a *DependencyError), plus an ErrUnknownModule error for names the index does
// not know. Built-in names are satisfied without loading anything.
func (b *Boot) Load(ctx context.Context, names ...string) error {
	return errors.Join(b.load(ctx, names, nil)...)
}

// load is Load with module parameters, returning the errors one by one: params maps a
// module name to the parameter string given to finit_module when this call is the one that
// loads it (modprobe NAME a=1 b=2).
func (b *Boot) load(ctx context.Context, names []string, params map[string]string) []error {
	order, lookupErr := b.ix.Closure(names)
	states := make([]*loadState, len(order))
	var mine []int
	b.mu.Lock()
	for i, name := range order {
		st := b.state[name]
		if st == nil {
			st = &loadState{done: make(chan struct{})}
			b.state[name] = st
			mine = append(mine, i)
		}
		states[i] = st
	}
	b.mu.Unlock()

	// One goroutine per module this call starts; each waits for its dependencies (whose
	// states exist: dependencies come earlier in the closure, or were started before by
	// another call) and is awaited below before Load returns.
	var wg sync.WaitGroup
	for _, i := range mine {
		m, _ := b.ix.Module(order[i])
		st := states[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			st.err = b.loadOne(ctx, m, joinParams(b.ix.ModuleParams(m.Name), params[m.Name]))
			close(st.done)
		}()
	}
	wg.Wait()

	var errs []error
	if lookupErr != nil {
		errs = append(errs, lookupErr)
	}
	for i, st := range states {
		select {
		case <-st.done:
		case <-ctx.Done():
			// Started by another call that is still running; report, do not wait.
			errs = append(errs, &ModuleError{Module: order[i], Err: ctx.Err()})
			continue
		}
		if st.err != nil {
			errs = append(errs, st.err)
		}
	}
	return errs
}

// joinParams puts modprobe.d's parameters of a module before those of the command line, as
// modprobe does: for a parameter given twice the kernel keeps the last value.
func joinParams(conf, cmdline string) string {
	switch {
	case conf == "":
		return cmdline
	case cmdline == "":
		return conf
	}
	return conf + " " + cmdline
}

// loadOne waits for m's dependencies, then inserts m. Soft dependencies are waited for
// (they should be there first) but their failure is not m's.
func (b *Boot) loadOne(ctx context.Context, m Module, params string) error {
	path := filepath.Join(b.dir, filepath.FromSlash(m.Path))
	fail := func(err error) error { return &ModuleError{Module: m.Name, Path: m.Path, Err: err} }
	wait := func(d string) error {
		b.mu.Lock()
		dst := b.state[d]
		b.mu.Unlock()
		select {
		case <-dst.done:
			return dst.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, d := range m.Soft {
		if wait(d) != nil && ctx.Err() != nil {
			return fail(ctx.Err())
		}
	}
	for _, d := range m.Deps {
		if err := wait(d); err != nil {
			if ctx.Err() != nil {
				return fail(ctx.Err())
			}
			return fail(&DependencyError{Dep: d})
		}
	}
	if !b.cpuCapable(m.Name) {
		return fail(ErrCPUFeature)
	}
	p, ok := b.prio[m.Name]
	if !ok {
		p = len(b.ix.Hooks) + 1
	}
	if err := b.sem.acquire(ctx, p); err != nil {
		return fail(err)
	}
	err := b.loader.Load(path, params)
	b.sem.release()
	switch {
	case err == nil:
		b.logf("module %s loaded", m.Name)
		return nil
	case errors.Is(err, fs.ErrExist):
		// EEXIST: loaded before us (by the kernel's own request_module, or built in
		// under the same name) — the module is there, which is all we want.
		return nil
	default:
		b.logf("module %s: %v", m.Name, err)
		return fail(err)
	}
}
