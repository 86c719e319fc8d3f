package hooks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/rescue"
	"golang.org/x/sys/unix"
)

// HooksFile lists the image's hooks in boot order, one per line (written by the builder).
const HooksFile = "/etc/nbdroot/hooks"

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
	// BeforeSwitch runs just before switch_root (the keeper starts there).
	BeforeSwitch func(ctx context.Context, s *State) error
}

// Boot is PID 1's whole job: mount the API filesystems, read the plan from the kernel command
// line, run the image's hooks and switch to the real root. It never returns: after a failure
// it opens the rescue shell again and again.
func Boot(cfg BootConfig) {
	ctx := context.Background()
	log := NewLogger(cfg.Console, cfg.Sys.Uptime)
	// Go's default for SIGINT, SIGTERM, SIGHUP… is to exit, and PID 1 exiting is a kernel
	// panic (the kernel sends init SIGINT on Ctrl-Alt-Del). Catch them — not ignore them:
	// an ignored signal stays ignored across exec, a caught one is reset, so the root's init
	// and the rescue shell's commands start with normal signal handling.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPIPE)
	go func() {
		for sig := range sigs {
			log.Debugf("ignoring %v (PID 1 does not exit)", sig)
		}
	}()
	s := &State{Log: log, Sys: cfg.Sys, Plan: &bootparam.Plan{}}
	log.Printf("nbdroot-init starting (pid %d)", os.Getpid())

	start := time.Now()
	err := Base{}.Run(ctx, s)
	if err == nil {
		log.Stage("base", time.Since(start), Base{}.Summary(s))
		err = s.loadPlan()
	}
	if err == nil {
		s.Hooks = imageHooks()
		if cfg.NewModules != nil {
			s.Modules = cfg.NewModules(s)
		}
		var hooks []Hook
		hooks, err = hookList(s.Hooks, cfg)
		for err == nil {
			err = Run(ctx, hooks, s)
			var f *Failure
			if !errors.As(err, &f) || !errors.Is(err, ErrBreak) || cfg.Rescue == nil {
				break
			}
			// rd.break: the shell opens before the stage; leaving it resumes the boot there.
			log.Printf("rd.break: stopped before the %s stage; 'exit' resumes the boot", f.Hook)
			cfg.Rescue(s, err)
			s.Plan.Break = ""
			hooks = from(hooks, f.Hook)
			err = nil
		}
	}
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

// from returns the hooks starting at the one called name.
func from(hooks []Hook, name string) []Hook {
	for i, h := range hooks {
		if h.Name() == name {
			return hooks[i:]
		}
	}
	return nil
}

// loadPlan reads /proc/cmdline into the State's Plan.
func (s *State) loadPlan() error {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return fail("cmdline", "", "read /proc/cmdline", err)
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

// imageHooks reads the image's hook list; an image without one runs the default list.
func imageHooks() []string {
	f, err := os.Open(HooksFile)
	if err != nil {
		return append([]string(nil), catalog.Default...)
	}
	defer f.Close()
	var hooks []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if h := strings.TrimSpace(sc.Text()); h != "" && !strings.HasPrefix(h, "#") {
			hooks = append(hooks, h)
		}
	}
	return hooks
}

// hookList turns hook names into the stages to run after base; names accepted for
// mkinitcpio compatibility that do nothing here are skipped.
func hookList(names []string, cfg BootConfig) ([]Hook, error) {
	var out []Hook
	for _, n := range names {
		switch n {
		case "base":
			// Already done: the plan cannot be read before /proc is mounted.
		case "udev":
			out = append(out, Udev{})
		case "net":
			out = append(out, Net{})
		case "nbd":
			out = append(out, NBD{Keeper: LaunchKeeper})
		case "encrypt":
			out = append(out, Encrypt{})
		case "filesystems":
			out = append(out, Filesystems{})
		default:
			if _, ok := catalog.Lookup(n); !ok {
				return nil, &Failure{Hook: "init", Tried: "read " + HooksFile, Err: fmt.Errorf("unknown hook %q", n)}
			}
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

// Reboot powers the machine off or reboots it; it returns only on failure.
func Reboot(powerOff bool) error {
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	if powerOff {
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	}
	return unix.Reboot(cmd)
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
