package hooks

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
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
	// SysDevices is the sysfs device tree for coldplug (normally /sys/devices; kmod reads
	// the bus directories beside it).
	SysDevices string
	Log        *Logger

	once sync.Once
	mu   sync.Mutex
	done map[string]chan struct{}
	errs map[string]error
}

var _ ModuleLoader = (*ImageModules)(nil)

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
			var err error
			for _, h := range []string{"udev", "net"} {
				if slices.Contains(m.Hooks, h) {
					err = errors.Join(err, m.Boot.LoadHook(ctx, h))
				}
			}
			if _, cerr := m.Boot.Coldplug(ctx, m.SysDevices); cerr != nil && m.Log != nil {
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
