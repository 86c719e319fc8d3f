package hooks

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/nbd"
)

// bootRig runs the boot over fakes: a cmdline and hook list in files, a NIC with a DHCP
// lease, an NBD server, a root device that is ready.
type bootRig struct {
	t       *testing.T
	fakes   *fakes
	cfg     BootConfig
	console syncWriter
	rescues []error
	// resume, when set, says whether the rescue shell returns (rd.break); by default a
	// rescue after a failure ends the test's boot.
	resume func(failure error) bool
}

// noInit is an init= no machine has, so that switch_root always fails before it touches
// the host's mounts.
const noInit = "/nbdroot-unit-test/no-such-init"

func newBootRig(t *testing.T, cmdline, hooks string) *bootRig {
	dir := t.TempDir()
	r := &bootRig{t: t, fakes: newFakes(), console: syncWriter{w: &bytes.Buffer{}}}
	r.fakes.net.nics = []NIC{{Name: "eth0", MAC: mac0, Carrier: true}}
	r.fakes.net.carrier["eth0"] = true
	r.fakes.net.answers["eth0"] = []dhcpAnswer{{lease: lease("10.0.2.15", 24, "10.0.2.2")}}
	r.fakes.nbd.dial = nbdDialer(t, nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags})
	r.cfg = BootConfig{Console: &r.console, Sys: r.fakes.system(),
		Cmdline: filepath.Join(dir, "cmdline"), HooksFile: filepath.Join(dir, "hooks")}
	r.cfg.Rescue = func(s *State, failure error) {
		r.rescues = append(r.rescues, failure)
		if r.resume != nil && r.resume(failure) {
			return
		}
		runtime.Goexit() // Boot never returns: end its goroutine here
	}
	if cmdline != "" {
		r.write(r.cfg.Cmdline, cmdline)
	}
	if hooks != "" {
		r.write(r.cfg.HooksFile, hooks)
	}
	return r
}

func (r *bootRig) write(path, content string) {
	r.t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		r.t.Fatal(err)
	}
}

// run runs the boot's core with fast network waits.
func (r *bootRig) run() (*State, error) {
	log := NewLogger(&r.console, r.fakes.machine.Uptime)
	return run(context.Background(), r.cfg, log)
}

// stages returns the stages of the timeline, with their summaries.
func (r *bootRig) stages() []string {
	var out []string
	for _, m := range regexp.MustCompile(`(?m)^nbdroot: \[ +1\.500\] stage (\S+) +\d+\.\d{3}s  (.*)$`).FindAllStringSubmatch(r.console.String(), -1) {
		out = append(out, m[1]+": "+m[2])
	}
	return out
}

const bootCmdline = "ip=eth0:dhcp nbd_server=10.0.0.1 nbd_export=root root=/dev/nbd0 rootfstype=ext4 init=" + noInit

func TestBootRuns(t *testing.T) {
	r := newBootRig(t, bootCmdline, "# the seed's hooks\nbase\nudev\nnet\n\nnbd\nkeymap\nfilesystems\n")
	s, err := r.run()
	// Everything but the exec of a root's init this machine has not got.
	var f *Failure
	if !errors.As(err, &f) || f.Hook != "switch_root" || f.Param != "init="+noInit {
		t.Fatalf("run = %v; want switch_root to fail on the missing init", err)
	}
	want := []string{
		"base: /proc /sys /dev /run mounted",
		"udev: module loading started",
		"net: eth0 10.0.2.15/24 via dhcp, gateway 10.0.2.2",
		"nbd: /dev/nbd0 ← 10.0.0.1:10809/root (64.0 MiB, 1 connection(s))",
		"keymap: no keymap in this image: the kernel's default layout",
		"filesystems: /dev/nbd0 on /newroot (ro)",
		"switch_root: FAILED",
	}
	if diff := cmp.Diff(want, r.stages()); diff != "" {
		t.Errorf("timeline (-want +got):\n%s\n%s", diff, r.console.String())
	}
	if diff := cmp.Diff([]string{"base", "udev", "net", "nbd", "keymap", "filesystems"}, s.Hooks); diff != "" {
		t.Errorf("image hooks (-want +got):\n%s", diff)
	}
	if got := r.fakes.files.callsWith("mount /dev/nbd0"); len(got) != 1 {
		t.Errorf("root mounts: %q", got)
	}
}

func TestBootBreakResumes(t *testing.T) {
	r := newBootRig(t, bootCmdline+" nbdroot.break=filesystems", "base\nudev\nnet\nnbd\nfilesystems\n")
	r.resume = func(failure error) bool { return errors.Is(failure, ErrBreak) }
	s, err := r.run()
	var f *Failure
	if !errors.As(err, &f) || f.Hook != "switch_root" {
		t.Fatalf("run = %v; want the boot to resume and reach switch_root", err)
	}
	if len(r.rescues) != 1 || !errors.Is(r.rescues[0], ErrBreak) {
		t.Fatalf("rescue shells: %v; want one, for the break", r.rescues)
	}
	if !strings.Contains(r.console.String(), "rd.break: stopped before the filesystems stage; 'exit' resumes the boot") {
		t.Errorf("the break is not announced:\n%s", r.console.String())
	}
	if got := r.stages(); !slices.Contains(got, "filesystems: /dev/nbd0 on /newroot (ro)") {
		t.Errorf("filesystems did not run after the break: %q", got)
	}
	if s.Plan.Break != "filesystems" {
		t.Errorf("the Plan's break was changed to %q", s.Plan.Break)
	}
}

func TestBootFailures(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		hooks   string
		setup   func(r *bootRig)
		hook    string
		want    string
	}{
		{name: "no cmdline", hook: "cmdline", want: "no such file or directory"},
		{name: "bad cmdline", cmdline: "nbd_server=10.0.0.1:notaport root=/dev/nbd0", hook: "cmdline", want: `nbd_server="10.0.0.1:notaport"`},
		{name: "unknown hook", cmdline: bootCmdline, hooks: "base\nresume\n", hook: "init", want: `unknown hook "resume"`},
		{name: "unreadable hook list", cmdline: bootCmdline, setup: func(r *bootRig) {
			if err := os.Mkdir(r.cfg.HooksFile, 0o755); err != nil {
				r.t.Fatal(err)
			}
		}, hook: "init", want: "is a directory"},
		{name: "base", cmdline: bootCmdline, setup: func(r *bootRig) {
			r.fakes.files.mountErr = func(src, target, fstype string) error {
				if target == "/sys" {
					return errors.New("EPERM")
				}
				return nil
			}
		}, hook: "base", want: "mount sysfs on /sys: EPERM"},
		{name: "nbd", cmdline: bootCmdline + " nbdroot.connect=1", hooks: "base\nnet\nnbd\nfilesystems\n", setup: func(r *bootRig) {
			r.fakes.nbd.dial = nil
		}, hook: "nbd", want: "NBD server 10.0.0.1:10809"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newBootRig(t, tt.cmdline, tt.hooks)
			if tt.setup != nil {
				tt.setup(r)
			}
			_, err := r.run()
			var f *Failure
			if !errors.As(err, &f) || f.Hook != tt.hook || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("run = %v; want a failure of %s with %q", err, tt.hook, tt.want)
			}
		})
	}
}

// TestBoot runs Boot itself: a failure is reported the way the console needs it, then the
// rescue shell opens.
func TestBoot(t *testing.T) {
	r := newBootRig(t, "nbd_server=10.0.0.1:notaport root=/dev/nbd0", "")
	done := make(chan struct{})
	go func() {
		defer close(done)
		Boot(r.cfg)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Boot did not open the rescue shell")
	}
	if len(r.rescues) != 1 {
		t.Fatalf("rescue shells: %v", r.rescues)
	}
	for _, want := range []string{"nbdroot-init starting", "stage base", "BOOT FAILED in the cmdline stage",
		`  error:     nbd_server="10.0.0.1:notaport": port "notaport" is not a number`, "dropping to the rescue shell"} {
		if !strings.Contains(r.console.String(), want) {
			t.Errorf("console does not say %q:\n%s", want, r.console.String())
		}
	}
}

func TestImageHooks(t *testing.T) {
	dir := t.TempDir()
	list := filepath.Join(dir, "hooks")
	os.WriteFile(list, []byte("# built by nbdroot initramfs\nbase\n  udev  \n\nnet\n"), 0o644)
	long := filepath.Join(dir, "long")
	os.WriteFile(long, []byte(strings.Repeat("x", 1<<17)), 0o644)
	tests := []struct {
		name, path string
		want       []string
		wantErr    string
	}{
		{"list", list, []string{"base", "udev", "net"}, ""},
		{"no list: the default image", filepath.Join(dir, "none"), catalog.Default, ""},
		{"not a file", dir, nil, "is a directory"},
		{"a line too long", long, nil, "token too long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := imageHooks(tt.path)
			if tt.wantErr != "" {
				var f *Failure
				if !errors.As(err, &f) || f.Hook != "init" || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("imageHooks = %q, %v; want an init failure with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// TestStageCodeFollowsCatalog: every hook the table says runs has its code, and only those.
func TestStageCodeFollowsCatalog(t *testing.T) {
	for _, s := range catalog.Catalog() {
		_, ok := stageCode[s.Name]
		if want := s.Runs && s.Name != "base"; ok != want {
			t.Errorf("hook %s (runs: %v): has code: %v", s.Name, s.Runs, ok)
		}
	}
	for name := range stageCode {
		if s, ok := catalog.Lookup(name); !ok || !s.Runs {
			t.Errorf("stage %s is not a hook that runs in the catalog", name)
		}
	}
}

// TestHookListMaps: a hand-written hook list with mkinitcpio's systemd hooks runs the
// stages they map to, each once, in order.
func TestHookListMaps(t *testing.T) {
	hooks, err := hookList([]string{"base", "systemd", "autodetect", "sd-vconsole", "net", "nbd", "sd-encrypt", "lvm2", "filesystems", "fsck"}, BootConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range hooks {
		names = append(names, h.Name())
	}
	want := []string{"udev", "keymap", "net", "nbd", "encrypt", "lvm2", "filesystems", "switch_root"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("stages (-want +got):\n%s", diff)
	}
}
