package hooks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/initramfs/layout"
	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/rescue"
	"golang.org/x/sys/unix"
)

// BootConfig is what PID 1 passes to Boot.
type BootConfig struct {
	Console io.Writer
	Sys     System
	// NewModules returns the image's module loader, once /proc and /sys exist; nil when the
	// image carries no modules.
	NewModules func(s *State) ModuleLoader
	// Rescue opens the rescue shell after a failure (or rd.break) and returns when it exits.
	Rescue func(s *State, failure error)
	// Args and Env are the kernel's leftovers for the root's init.
	Args, Env []string
	// BeforeSwitch runs just before switch_root (the keeper is checked there).
	BeforeSwitch func(ctx context.Context, s *State) error
	// Cmdline is the kernel command line file ("" = /proc/cmdline); HooksFile the image's
	// hook list ("" = layout.HooksPath).
	Cmdline, HooksFile string
}

// Boot is PID 1's whole job: mount the API filesystems, read the plan from the kernel command
// line, run the image's hooks and switch to the real root. It never returns: after a failure
// it opens the rescue shell again and again.
func Boot(cfg BootConfig) {
	log := NewLogger(cfg.Console, cfg.Sys.Machine.Uptime)
	defer catchSignals(log)()
	s, err := run(context.Background(), cfg, log)
	// Only failures get here: a successful switch_root replaced this process.
	for {
		report(log, err)
		if cfg.Rescue != nil {
			cfg.Rescue(s, err)
			log.Printf("the boot cannot continue after a failure: reboot, or fix it and 'exit' for the shell again")
			continue
		}
		log.Printf("no rescue shell in this image; the system is halted (reboot to retry)")
		for {
			time.Sleep(time.Hour)
		}
	}
}

// catchSignals keeps PID 1 alive: Go's default for SIGINT, SIGTERM, SIGHUP… is to exit, and
// PID 1 exiting is a kernel panic (the kernel sends init SIGINT on Ctrl-Alt-Del). They are
// caught, not ignored: an ignored signal stays ignored across exec, a caught one is reset,
// so the root's init and the rescue shell's commands start with normal signal handling.
// The returned function stops catching them.
func catchSignals(log *Logger) (stop func()) {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for sig := range sigs {
			log.Debugf("ignoring %v (PID 1 does not exit)", sig)
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(sigs)
		<-done
	}
}

// run is the boot up to switch_root: the base stage, the plan, then the image's hooks,
// stopping before the Plan's break point for the rescue shell and going on from there when
// it exits. It returns only on failure, with the State for the rescue shell.
func run(ctx context.Context, cfg BootConfig, log *Logger) (*State, error) {
	s := &State{Log: log, Sys: cfg.Sys, Plan: &bootparam.Plan{}}
	log.Printf("nbdroot-init starting (pid %d)", os.Getpid())
	start := time.Now()
	if err := (Base{}).Run(ctx, s); err != nil {
		return s, err
	}
	log.Stage("base", time.Since(start), Base{}.Summary(s))
	if err := s.loadPlan(orPath(cfg.Cmdline, "/proc/cmdline")); err != nil {
		return s, err
	}
	var err error
	if s.Hooks, err = imageHooks(orPath(cfg.HooksFile, layout.HooksPath)); err != nil {
		return s, err
	}
	if err := checkImageHooks(s); err != nil {
		return s, err
	}
	if cfg.NewModules != nil {
		s.Modules = cfg.NewModules(s)
	}
	hooks, err := hookList(s.Hooks, cfg)
	if err != nil {
		return s, err
	}
	for {
		err := Run(ctx, hooks, s)
		var f *Failure
		if !errors.As(err, &f) || !errors.Is(err, ErrBreak) || cfg.Rescue == nil {
			return s, err
		}
		// rd.break: the shell opens before the stage; leaving it resumes the boot there.
		log.Printf("rd.break: stopped before the %s stage; 'exit' resumes the boot", f.Hook)
		cfg.Rescue(s, err)
		s.resumed = true
		hooks = from(hooks, f.Hook)
	}
}

func orPath(p, def string) string {
	if p == "" {
		return def
	}
	return p
}

// from returns the hooks starting at the one called name.
func from(hooks []Hook, name string) []Hook {
	for i, h := range hooks {
		if h.Name() == name {
			return hooks[i:]
		}
	}
	return nil
}

// loadPlan reads the kernel command line (path: /proc/cmdline) into the State's Plan.
func (s *State) loadPlan(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fail("cmdline", "", "read "+path, err)
	}
	p, err := bootparam.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return &Failure{Hook: "cmdline", Tried: "read the kernel command line", Err: err}
	}
	s.Plan = p
	s.Log.SetDebug(p.Debug)
	s.Log.Debugf("cmdline: %s", strings.TrimSpace(string(b)))
	return nil
}

// imageHooks reads the image's hook list (path: layout.HooksPath), one name per line; an
// image without one runs the default list (catalog.Default). A list that exists but cannot
// be read is a failure: running other hooks than the image was built with would fail later,
// less clearly.
func imageHooks(path string) ([]string, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return append([]string(nil), catalog.Default...), nil
	}
	if err != nil {
		return nil, &Failure{Hook: "init", Tried: "read the image's hook list", Err: err}
	}
	defer f.Close()
	var hooks []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if h := strings.TrimSpace(sc.Text()); h != "" && !strings.HasPrefix(h, "#") {
			hooks = append(hooks, h)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, &Failure{Hook: "init", Tried: "read the image's hook list", Err: fmt.Errorf("%s: %w", path, err)}
	}
	return hooks, nil
}

// stageCode maps the hooks that run (catalog.Spec.Runs) to their code: the one place the
// init turns the hook table's names into stages. base is not here: Boot runs it before the
// plan can be read (it mounts /proc); switch_root ends every image.
var stageCode = map[string]func(cfg BootConfig) Hook{
	"udev":        func(BootConfig) Hook { return Udev{} },
	"net":         func(BootConfig) Hook { return Net{} },
	"nbd":         func(BootConfig) Hook { return NBD{} },
	"keymap":      func(BootConfig) Hook { return Keymap{} },
	"encrypt":     func(BootConfig) Hook { return Encrypt{} },
	"lvm2":        func(BootConfig) Hook { return LVM2{} },
	"filesystems": func(BootConfig) Hook { return Filesystems{} },
	"overlay":     func(BootConfig) Hook { return Overlay{} },
}

// hookList turns the image's hook names into the stages to run after base, then
// switch_root; names accepted for mkinitcpio compatibility that do nothing here are skipped,
// and a hook that maps to others (systemd → base udev; the builder writes the mapped names,
// an image written by hand may not) runs those, each stage once.
func hookList(names []string, cfg BootConfig) ([]Hook, error) {
	var out []Hook
	seen := map[string]bool{}
	var add func(n string, depth int) error
	add = func(n string, depth int) error {
		spec, ok := catalog.Lookup(n)
		if !ok || depth > 1 {
			return &Failure{Hook: "init", Tried: "read the image's hook list", Err: fmt.Errorf("unknown hook %q", n)}
		}
		for _, m := range spec.MapsTo {
			if err := add(m, depth+1); err != nil {
				return err
			}
		}
		if code := stageCode[n]; spec.Runs && code != nil && !seen[n] {
			seen[n] = true
			out = append(out, code(cfg))
		}
		return nil
	}
	for _, n := range names {
		if err := add(n, 0); err != nil {
			return nil, err
		}
	}
	return append(out, SwitchRoot{Args: cfg.Args, Env: cfg.Env, BeforeExec: cfg.BeforeSwitch}), nil
}

// report prints a failure the way a person at the console needs it.
func report(log *Logger, err error) {
	var f *Failure
	if errors.As(err, &f) {
		log.Printf("BOOT FAILED in the %s stage", f.Hook)
		if f.Tried != "" {
			log.Printf("  tried:     %s", f.Tried)
		}
		if f.Param != "" {
			log.Printf("  parameter: %s", f.Param)
		}
		if f.Err != nil {
			log.Printf("  error:     %v", f.Err)
		}
	} else {
		log.Printf("BOOT FAILED: %v", err)
	}
	log.Printf("dropping to the rescue shell")
}

// DefaultConfig is the configuration of a real boot: the console, the running kernel, the
// image's module index.
func DefaultConfig(console io.Writer, args, env []string) BootConfig {
	return BootConfig{
		Console: console,
		Sys:     NewSystem(),
		Args:    args,
		Env:     env,
		// The keeper of the root's NBD device outlives the initramfs (keeper_linux.go).
		BeforeSwitch: StartKeeper,
		Rescue: func(s *State, failure error) {
			sh := rescue.Shell{In: os.Stdin, Out: console, Err: console,
				Banner: "\nnbdroot rescue shell: 'help' lists the commands, 'exit' leaves.\n"}
			err := sh.Run(context.Background())
			if errors.Is(err, rescue.ErrInputClosed) {
				// Nobody can type here: stay up (PID 1 must not exit), quietly.
				s.Log.Printf("rescue shell: %v; halted (reboot to retry)", err)
				for {
					// Not select{}: with no other goroutine the runtime would call that a
					// deadlock and exit, and PID 1 exiting is a kernel panic.
					time.Sleep(time.Hour)
				}
			}
			if err != nil {
				s.Log.Printf("rescue shell: %v", err)
				time.Sleep(time.Second) // no busy loop on a console that keeps failing
			}
		},
		NewModules: func(s *State) ModuleLoader {
			dir, err := kmod.ModulesDir("/")
			if err != nil {
				s.Log.Debugf("udev: %v (no modules in this image)", err)
				return nil
			}
			ix, err := kmod.OpenIndex(dir)
			if err != nil {
				s.Log.Printf("udev: %v", err)
				return nil
			}
			cpu, _ := os.ReadFile("/sys/devices/system/cpu/modalias")
			b := kmod.NewBoot(ix, dir, kmod.FinitLoader{}, kmod.BootOptions{Logf: s.Log.Debugf,
				CPUModalias: strings.TrimSpace(string(cpu))})
			return &ImageModules{Boot: b, Hooks: s.Hooks, SysDevices: "/sys/devices", Log: s.Log}
		},
	}
}
