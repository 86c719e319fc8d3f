package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/nbdroot/nbdroot/kmod"
)

// ImageModules loads the image's modules with kmod at boot. Every hook's modules start loading
// at once (kmod orders them by dependency and runs independent ones in parallel); device
// drivers (NICs above all) come from coldplug, so only the drivers of hardware present are
// loaded; each hook waits only for its own modules.
type ImageModules struct {
	Boot *kmod.Boot
	// Hooks are the image's hooks, in order.
	Hooks []string
	// SysBus is the sysfs bus directory scanned for coldplug (normally /sys/bus).
	SysBus string
	Log    *Logger

	once sync.Once
	mu   sync.Mutex
	done map[string]chan struct{}
	errs map[string]error
}

var _ ModuleLoader = (*ImageModules)(nil)

// maxColdplugRounds bounds the rescans: a driver can create devices another driver binds to
// (virtio_pci creates the virtio devices virtio_net drives); real chains are 2-3 deep.
const maxColdplugRounds = 5

// Start implements ModuleLoader.
func (m *ImageModules) Start(ctx context.Context) {
	m.once.Do(func() {
		m.mu.Lock()
		m.done = map[string]chan struct{}{}
		m.errs = map[string]error{}
		for _, h := range m.Hooks {
			m.done[h] = make(chan struct{})
		}
		m.mu.Unlock()
		// Devices first: udev's own modules (bus drivers), then the drivers of the hardware
		// present; the net hook waits for this chain only. The other hooks' modules
		// (nbd, dm-crypt, ext4…) load after it, while DHCP waits for the network: on a
		// single CPU, loading them alongside would only delay the NIC, which is on the
		// critical path; with more CPUs they start at once.
		nicChain := make(chan struct{})
		go func() {
			defer close(nicChain)
			err := m.Boot.LoadHook(ctx, "udev")
			err = errors.Join(err, m.Boot.LoadHook(ctx, "net"))
			if cerr := m.coldplug(ctx); cerr != nil && m.Log != nil {
				// A device whose driver fails to load is reported, not fatal: the NIC
				// the boot needs may be another one.
				m.Log.Printf("udev: coldplug: %v", cerr)
			}
			m.finish("udev", err)
			m.finish("net", err)
		}()
		serial := runtime.NumCPU() == 1
		for _, h := range m.Hooks {
			if h == "udev" || h == "net" {
				continue
			}
			go func() {
				if serial {
					select {
					case <-nicChain:
					case <-ctx.Done():
					}
				}
				m.finish(h, m.Boot.LoadHook(ctx, h))
			}()
		}
	})
}

func (m *ImageModules) finish(hook string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.done[hook]
	if !ok {
		return
	}
	m.errs[hook] = err
	close(ch)
}

// coldplug loads the modules matching the modalias of every device on the buses, rescanning
// after each round because drivers create devices. It reads /sys/bus/*/devices/*/modalias
// rather than walking all of /sys/devices: a few dozen files instead of thousands, which
// matters on a slow CPU.
func (m *ImageModules) coldplug(ctx context.Context) error {
	seen := map[string]bool{}
	var errs []error
	for range maxColdplugRounds {
		files, _ := filepath.Glob(filepath.Join(m.SysBus, "*", "devices", "*", "modalias"))
		var want []string
		for _, f := range files {
			b, err := os.ReadFile(f)
			alias := strings.TrimSpace(string(b))
			if err != nil || alias == "" || seen[alias] {
				continue
			}
			seen[alias] = true
			want = append(want, m.Boot.Index().Match(kmod.NormalizeAlias(alias))...)
		}
		if len(want) == 0 {
			break
		}
		if err := m.Boot.Load(ctx, want...); err != nil {
			errs = append(errs, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// Wait implements ModuleLoader.
func (m *ImageModules) Wait(ctx context.Context, hook string) error {
	m.mu.Lock()
	ch, ok := m.done[hook]
	m.mu.Unlock()
	if !ok {
		return nil // not started, or a hook without modules of its own
	}
	select {
	case <-ch:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.errs[hook]; err != nil {
		return fmt.Errorf("modules of the %s hook: %w", hook, err)
	}
	return nil
}
