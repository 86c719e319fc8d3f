// Package hooks holds the boot stages of nbdroot-init (base, udev, net, nbd, keymap, encrypt,
// lvm2, filesystems, overlay, switch_root), named like mkinitcpio's hooks, and the runner that
// executes them in the order the image was built with, printing a timeline.
//
// Every stage reads the one Plan made from the kernel command line and the State produced by
// the stages before it; there is no global state. A failing stage returns a *Failure that says
// which hook failed, which parameter was involved and what was tried; the init prints it and
// opens a rescue shell. Nothing here ever exits the process: PID 1 exiting is a kernel panic.
package hooks

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// Hook is one boot stage.
type Hook interface {
	Name() string
	Run(ctx context.Context, s *State) error
}

// State is what the stages share: the Plan, where to log, the kernel-facing System, and what
// earlier stages produced. The Plan is what the command line says and never changes; what
// the stages learn (the DHCP answer, the NBD device, the unlocked mapping) goes here.
type State struct {
	Plan *bootparam.Plan
	// Log receives the timeline and every message meant for the console.
	Log *Logger
	// Sys performs everything that touches the kernel; tests use fakes.
	Sys System
	// Hooks is the list of hooks in this image, in order (what /etc/nbdroot/hooks says).
	Hooks []string

	// Modules loads the modules a hook needs (started by udev, awaited by each hook).
	Modules ModuleLoader

	// Net is filled by the net hook, with what the DHCP answer said (root-path, next-server):
	// the interface the boot uses. Links are every interface it configured, in command line
	// order.
	Net   *NetConfig
	Links []*NetConfig
	// Target is the NBD connection and root the boot uses: the Plan's, completed by the nbd
	// hook with the DHCP answer when the command line leaves the server to DHCP.
	Target *bootparam.Target
	// NBD is the device the nbd hook attached.
	NBD *nbdclient.Attached
	// CryptDevice is the unlocked mapper device (/dev/mapper/NAME), filled by encrypt.
	CryptDevice string
	// LVs are the LVM2 logical volumes lvm2 activated (/dev/mapper/VG-LV).
	LVs []string
	// NewRoot is where the root filesystem was mounted by filesystems.
	NewRoot string
	// Overlay is the overlay the overlay stage put over the root (nbdroot.overlay=).
	Overlay *RootOverlay

	// keeper is the root device's keeper, launched at attach and checked before switch_root.
	keeper *nbdclient.KeeperProcess
	// lvmSummary replaces lvm2's summary when it activated nothing; lvmSkipped are the
	// volumes it could not map.
	lvmSummary string
	lvmSkipped []string
	// keymapSummary is what the keymap stage did.
	keymapSummary string
	// resumed is set once the boot stopped at the Plan's break point and went on: the
	// break is not taken twice.
	resumed bool
}

// Root is the root filesystem to mount: the Target's (the Plan's root, completed with the
// DHCP root-path), read-only when the NBD export is (the kernel makes the device read-only:
// a read-write mount would fail with a less helpful error), and under nbdroot.overlay=
// (the overlay is what is writable; the root is its read-only lower layer).
func (s *State) Root() bootparam.Root {
	r := s.Plan.Root
	if s.Target != nil {
		r = s.Target.Root
	}
	if (s.NBD != nil && s.NBD.ReadOnly()) || s.Plan.Overlay != nil {
		r.RW = false
	}
	return r
}

// NetConfig is the network configuration the net hook applied.
type NetConfig struct {
	Interface string
	MAC       string
	Address   net.IPNet
	Gateway   net.IP
	DNS       []net.IP
	Hostname  string
	Domain    string
	MTU       int
	// Method is "dhcp" or "static".
	Method string
	// ServerID, NextServer and RootPath come from the DHCP answer, when there was one.
	ServerID   net.IP
	NextServer net.IP
	RootPath   string
	LeaseTime  time.Duration
	// Routes are static routes on the interface besides the default route: DHCP's classless
	// static routes (option 121/249).
	Routes []Route
	// Lease is the DHCP answer the configuration came from; nil for a static one.
	Lease *Lease
}

// ModuleLoader loads the kernel modules of the image. Start begins loading everything the
// image's hooks need, in parallel where dependencies allow; Wait blocks until the modules
// of one hook are loaded (or failed).
type ModuleLoader interface {
	Start(ctx context.Context)
	Wait(ctx context.Context, hook string) error
}

// Failure is a failed boot stage, said the way a person at the console needs it.
type Failure struct {
	Hook  string // the stage that failed
	Param string // the cmdline parameter involved, if any (e.g. "nbd_server=10.0.0.1:10809")
	Tried string // what was tried, in a few words
	Err   error
}

func (f *Failure) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s hook failed", f.Hook)
	if f.Tried != "" {
		fmt.Fprintf(&b, ": %s", f.Tried)
	}
	if f.Err != nil {
		fmt.Fprintf(&b, ": %v", f.Err)
	}
	if f.Param != "" {
		fmt.Fprintf(&b, " (parameter %s)", f.Param)
	}
	return b.String()
}

func (f *Failure) Unwrap() error { return f.Err }

// fail wraps err into a Failure of hook unless it is one already.
func fail(hook, param, tried string, err error) error {
	var f *Failure
	if errors.As(err, &f) {
		return err
	}
	return &Failure{Hook: hook, Param: param, Tried: tried, Err: err}
}

// Logger writes the boot's console messages, each prefixed with the uptime, so a boot prints
// its own timeline.
type Logger struct {
	mu     sync.Mutex
	w      io.Writer
	uptime func() time.Duration
	debug  bool
}

// NewLogger returns a Logger writing to w; uptime reports time since boot.
func NewLogger(w io.Writer, uptime func() time.Duration) *Logger {
	return &Logger{w: w, uptime: uptime}
}

// SetDebug turns debug messages on or off.
func (l *Logger) SetDebug(on bool) {
	l.mu.Lock()
	l.debug = on
	l.mu.Unlock()
}

// Printf writes one console line.
func (l *Logger) Printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "nbdroot: [%8.3f] %s\n", l.uptime().Seconds(), fmt.Sprintf(format, args...))
}

// Debugf writes a console line when debugging is on (nbdroot.debug).
func (l *Logger) Debugf(format string, args ...any) {
	l.mu.Lock()
	on := l.debug
	l.mu.Unlock()
	if on {
		l.Printf(format, args...)
	}
}

// Stage writes the timeline line of a finished stage: name, duration, uptime and a summary.
func (l *Logger) Stage(name string, d time.Duration, summary string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "nbdroot: [%8.3f] stage %-12s %7.3fs  %s\n", l.uptime().Seconds(), name, d.Seconds(), summary)
}

// Summarizer is implemented by hooks that can say in a few words what they did.
type Summarizer interface {
	Summary(s *State) string
}

// Run executes hooks in order and returns the first failure as a *Failure. It stops before
// the hook named by the Plan's Break (rd.break) with ErrBreak.
func Run(ctx context.Context, hooks []Hook, s *State) error {
	for _, h := range hooks {
		if s.Plan != nil && s.Plan.Break != "" && s.Plan.Break == h.Name() && !s.resumed {
			return &Failure{Hook: h.Name(), Tried: "stopped before this stage on request", Param: "rd.break", Err: ErrBreak}
		}
		start := time.Now()
		err := runHook(ctx, h, s)
		d := time.Since(start)
		if err != nil {
			s.Log.Stage(h.Name(), d, "FAILED")
			return fail(h.Name(), "", "", err)
		}
		summary := ""
		if sm, ok := h.(Summarizer); ok {
			summary = sm.Summary(s)
		}
		s.Log.Stage(h.Name(), d, summary)
	}
	return nil
}

// runHook runs one hook and turns a panic into a Failure: PID 1 must never die of a bug.
func runHook(ctx context.Context, h Hook, s *State) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &Failure{Hook: h.Name(), Tried: "run", Err: fmt.Errorf("internal error (panic): %v", p)}
		}
	}()
	return h.Run(ctx, s)
}

// ErrBreak is the "error" of a boot stopped on purpose (rd.break, nbdroot.shell).
var ErrBreak = errors.New("boot stopped on request")
