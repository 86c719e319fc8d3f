package hooks

import (
	"context"
	"fmt"
	"sync"

	"github.com/nbdroot/nbdroot/kmod"
)

// ImageModules loads the image's modules with kmod at boot: every hook's modules start
// loading at once (kmod orders them by dependency and runs independent ones in parallel),
// NIC drivers come from coldplug (only the drivers of hardware present are loaded), and each
// hook waits only for its own.
type ImageModules struct {
	Boot *kmod.Boot
	// Hooks are the image's hooks, in order.
	Hooks []string
	// SysDevices is scanned for coldplug (normally /sys/devices).
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
		for _, h := range m.Hooks {
			go func() {
				var err error
				if h == "net" || h == "udev" {
					// Devices first: a NIC driver is only loaded when its hardware is
					// present, and virtio devices only appear once virtio_pci is loaded.
					err = m.Boot.LoadHook(ctx, h)
					if _, cerr := m.Boot.Coldplug(ctx, m.SysDevices); cerr != nil && m.Log != nil {
						m.Log.Printf("udev: coldplug: %v", cerr)
					}
				} else {
					err = m.Boot.LoadHook(ctx, h)
				}
				m.mu.Lock()
				m.errs[h] = err
				close(m.done[h])
				m.mu.Unlock()
			}()
		}
	})
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
