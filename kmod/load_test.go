package kmod

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fakeLoader records loads. Modules named in fail return that error; exist lists modules
// that report EEXIST. When gate is set, each load waits on it, which lets a test hold
// loads in flight to observe concurrency.
type fakeLoader struct {
	mu       sync.Mutex
	fail     map[string]error
	exist    map[string]bool
	started  []string
	ended    map[string]bool
	params   map[string]string
	inFlight int
	maxIn    int
	// violations records loads that started before one of their dependencies ended.
	violations []string
	deps       map[string][]string // module → Deps+Soft, to check ordering
	gate       chan struct{}
	onLoad     func(name string) // called after a successful load
}

func newFakeLoader(ix *Index) *fakeLoader {
	f := &fakeLoader{fail: map[string]error{}, exist: map[string]bool{}, ended: map[string]bool{},
		params: map[string]string{}, deps: map[string][]string{}}
	for _, m := range ix.Modules {
		f.deps[m.Name] = append(append([]string{}, m.Deps...), m.Soft...)
	}
	return f
}

func modName(path string) string {
	return strings.ReplaceAll(strings.TrimSuffix(filepath.Base(path), ".ko"), "-", "_")
}

func (f *fakeLoader) Load(path, params string) error {
	name := modName(path)
	f.mu.Lock()
	f.started = append(f.started, name)
	for _, d := range f.deps[name] {
		if !f.ended[d] {
			f.violations = append(f.violations, fmt.Sprintf("%s started before %s ended", name, d))
		}
	}
	f.params[name] = params
	f.inFlight++
	f.maxIn = max(f.maxIn, f.inFlight)
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		<-gate
	}
	f.mu.Lock()
	f.inFlight--
	f.ended[name] = true
	err := f.fail[name]
	exist := f.exist[name]
	f.mu.Unlock()
	if exist {
		return os.NewSyscallError("finit_module", syscall.EEXIST)
	}
	if err == nil && f.onLoad != nil {
		f.onLoad(name)
	}
	return err
}

// waitInFlight waits until n loads are held at the gate. The deadline only turns a hang
// into a failure; nothing is measured.
func (f *fakeLoader) waitInFlight(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		f.mu.Lock()
		in := f.inFlight
		f.mu.Unlock()
		if in == n {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%d loads in flight, want %d", in, n)
		case <-time.After(time.Millisecond):
		}
	}
}

func (f *fakeLoader) startedSorted() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := append([]string{}, f.started...)
	sort.Strings(s)
	return s
}

func validIndex(t *testing.T) *Index {
	t.Helper()
	ix := testIndex()
	if err := ix.Validate(); err != nil {
		t.Fatal(err)
	}
	return ix
}

func TestLoadOrderUnderConcurrency(t *testing.T) {
	ix := validIndex(t)
	// Run many times: the scheduler interleaves differently each time, and the ordering
	// check must hold for every interleaving.
	for i := range 50 {
		fl := newFakeLoader(ix)
		b := NewBoot(ix, "/lib/modules/x", fl, BootOptions{Parallel: 3})
		if err := b.Load(context.Background(), "ext4", "dm_crypt", "xts", "virtio_net", "virtio_pci", "nbd"); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		if len(fl.violations) > 0 {
			t.Fatalf("run %d: dependency order violated: %v", i, fl.violations)
		}
		want := []string{"crc32c_generic", "crc32c_intel", "dm_crypt", "dm_mod", "ecb", "ext4", "jbd2", "mbcache",
			"nbd", "virtio", "virtio_net", "virtio_pci", "virtio_ring", "xts"}
		if diff := cmp.Diff(want, fl.startedSorted()); diff != "" {
			t.Fatalf("run %d: loaded (-want +got):\n%s", i, diff)
		}
		if fl.maxIn > 3 {
			t.Fatalf("run %d: %d loads in flight, bound is 3", i, fl.maxIn)
		}
	}
}

func TestLoadRunsIndependentModulesInParallel(t *testing.T) {
	ix := validIndex(t)
	fl := newFakeLoader(ix)
	fl.gate = make(chan struct{})
	b := NewBoot(ix, "/m", fl, BootOptions{Parallel: 3})
	done := make(chan error, 1)
	go func() { done <- b.Load(context.Background(), "nbd", "dm_mod", "ecb", "mbcache") }()
	// Four independent modules, bound 3: three must get in flight together.
	fl.waitInFlight(t, 3)
	close(fl.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if fl.maxIn != 3 {
		t.Errorf("max in flight = %d, want 3", fl.maxIn)
	}
}

func TestLoadErrors(t *testing.T) {
	ix := validIndex(t)
	fl := newFakeLoader(ix)
	fl.fail["dm_mod"] = os.NewSyscallError("finit_module", syscall.ENOEXEC)
	fl.exist["nbd"] = true
	fl.fail["crc32c_intel"] = os.NewSyscallError("finit_module", syscall.ENODEV)
	var logged []string
	var logMu sync.Mutex
	b := NewBoot(ix, "/lib/modules/x", fl, BootOptions{Logf: func(f string, a ...any) {
		logMu.Lock()
		logged = append(logged, fmt.Sprintf(f, a...))
		logMu.Unlock()
	}})
	err := b.Load(context.Background(), "dm_crypt", "nbd", "ext4", "ghost")

	var failed []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var me *ModuleError
		if errors.As(e, &me) {
			failed = append(failed, me.Module)
		}
	}
	sort.Strings(failed)
	// dm_mod failed; dm_crypt was not attempted; crc32c_intel (a soft dependency of ext4)
	// failed but ext4 loaded; nbd said EEXIST, which is success; ghost is unknown.
	if diff := cmp.Diff([]string{"crc32c_intel", "dm_crypt", "dm_mod"}, failed); diff != "" {
		t.Errorf("failed modules (-want +got):\n%s", diff)
	}
	var dep *DependencyError
	if !errors.As(err, &dep) || dep.Dep != "dm_mod" {
		t.Errorf("want a DependencyError naming dm_mod in %v", err)
	}
	if !errors.Is(err, syscall.ENOEXEC) || !errors.Is(err, ErrUnknownModule) {
		t.Errorf("err %v should wrap ENOEXEC and ErrUnknownModule", err)
	}
	for _, s := range []string{"dm_mod", "kernel/drivers/md/dm-mod.ko", "ghost"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error text lacks %q: %v", s, err)
		}
	}
	for _, m := range []string{"ext4", "jbd2", "nbd", "crc32c_generic"} {
		if !b.Loaded(m) {
			t.Errorf("%s not loaded", m)
		}
	}
	for _, m := range []string{"dm_mod", "dm_crypt", "crc32c_intel"} {
		if b.Loaded(m) {
			t.Errorf("%s reported loaded", m)
		}
	}
	for _, m := range fl.started {
		if m == "dm_crypt" {
			t.Error("dm_crypt was attempted although dm_mod failed")
		}
	}
	if len(logged) == 0 {
		t.Error("nothing logged")
	}
}

func TestLoadSharesWorkBetweenCalls(t *testing.T) {
	ix := validIndex(t)
	fl := newFakeLoader(ix)
	b := NewBoot(ix, "/m", fl, BootOptions{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := b.Load(context.Background(), "ext4", "virtio_net"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for _, m := range fl.started {
		seen[m]++
	}
	for m, n := range seen {
		if n != 1 {
			t.Errorf("%s loaded %d times", m, n)
		}
	}
	if len(fl.violations) > 0 {
		t.Errorf("dependency order violated: %v", fl.violations)
	}
}

func TestLoadHookOptional(t *testing.T) {
	ix := validIndex(t)
	ix.Hooks = append(ix.Hooks, Hook{Name: "x", Modules: []string{"nbd"}, Optional: []string{"virtio_pci", "e1000"}})
	fl := newFakeLoader(ix)
	fl.fail["virtio_ring"] = syscall.ENODEV
	fl.fail["crc32c_intel"] = syscall.ENODEV
	b := NewBoot(ix, "/m", fl, BootOptions{})
	// virtio_pci fails through its dependency, but it is optional: no error.
	if err := b.LoadHook(context.Background(), "x"); err != nil {
		t.Errorf("LoadHook(x) = %v, want nil (only optional modules failed)", err)
	}
	if !b.Loaded("e1000") || !b.Loaded("nbd") {
		t.Error("e1000 and nbd should be loaded")
	}
	// crc32c_intel is a soft dependency of ext4: not the filesystems hook's failure.
	if err := b.LoadHook(context.Background(), "filesystems"); err != nil {
		t.Errorf("LoadHook(filesystems) = %v, want nil", err)
	}
	// A required module's failure is.
	fl.fail["dm_mod"] = syscall.ENOEXEC
	if err := b.LoadHook(context.Background(), "encrypt"); err == nil || !strings.Contains(err.Error(), "dm_mod") {
		t.Errorf("LoadHook(encrypt) = %v, want an error naming dm_mod", err)
	}
	// A hook the index lists without modules loads nothing.
	ix.Hooks = append(ix.Hooks, Hook{Name: "keymap"})
	if err := b.LoadHook(context.Background(), "keymap"); err != nil {
		t.Errorf("LoadHook(keymap) = %v", err)
	}
	// A hook the index does not list is an error: the image was built for other hooks.
	if err := b.LoadHook(context.Background(), "base"); !errors.Is(err, ErrUnknownHook) || !strings.Contains(err.Error(), "base") {
		t.Errorf("LoadHook(base) = %v, want ErrUnknownHook naming base", err)
	}
}

func TestLoadCancelled(t *testing.T) {
	ix := validIndex(t)
	fl := newFakeLoader(ix)
	fl.gate = make(chan struct{})
	b := NewBoot(ix, "/m", fl, BootOptions{Parallel: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Load(ctx, "ext4") }()
	// Wait until the first load is in flight, cancel, then let it finish.
	fl.waitInFlight(t, 1)
	cancel()
	close(fl.gate)
	err := <-done
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if b.Loaded("ext4") {
		t.Error("ext4 loaded after cancel")
	}
}

func TestLoadPath(t *testing.T) {
	ix := validIndex(t)
	var got []string
	var mu sync.Mutex
	b := NewBoot(ix, "/lib/modules/6.1", loaderFunc(func(path, params string) error {
		mu.Lock()
		got = append(got, path)
		mu.Unlock()
		return nil
	}), BootOptions{})
	if err := b.Load(context.Background(), "nbd"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"/lib/modules/6.1/kernel/drivers/block/nbd.ko"}, got); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}

type loaderFunc func(path, params string) error

func (f loaderFunc) Load(path, params string) error { return f(path, params) }

// TestCPUFeatureModules skips a module for a CPU feature the machine lacks (the kernel would
// refuse it with ENODEV only after reading and hashing it) and loads it when the CPU has it.
func TestCPUFeatureModules(t *testing.T) {
	tests := []struct {
		name       string
		cpu        string
		wantLoaded bool
	}{
		{"feature present", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094,0099", true},
		{"feature absent", "cpu:type:x86,ven0002fam0019mod0011:feature:,0000,0001,0093", false},
		{"CPU unknown: try it", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := testIndex()
			if err := ix.Validate(); err != nil {
				t.Fatal(err)
			}
			fl := newFakeLoader(ix)
			b := NewBoot(ix, "/lib/modules/x", fl, BootOptions{CPUModalias: tt.cpu})
			err := b.LoadHook(context.Background(), "filesystems")
			if err != nil {
				t.Fatalf("LoadHook: %v (a CPU module is optional)", err)
			}
			loaded := slices.Contains(fl.started, "crc32c_intel")
			if loaded != tt.wantLoaded {
				t.Errorf("crc32c_intel loaded = %v, want %v (started %v)", loaded, tt.wantLoaded, fl.started)
			}
			if !slices.Contains(fl.started, "ext4") || !slices.Contains(fl.started, "crc32c_generic") {
				t.Errorf("ext4 and crc32c_generic must load whatever the CPU: %v", fl.started)
			}
			if err := b.Load(context.Background(), "crc32c_intel"); tt.wantLoaded != (err == nil) {
				t.Errorf("Load(crc32c_intel) = %v", err)
			} else if err != nil && !errors.Is(err, ErrCPUFeature) {
				t.Errorf("Load(crc32c_intel) = %v, want ErrCPUFeature", err)
			}
		})
	}
}
