package test

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// needDistro skips the real-distribution boots unless NBDROOT_DISTRO=1 (`make test-distro`,
// part of `make test`): they debootstrap Debian roots (cached between runs) and boot systemd,
// minutes rather than seconds.
func needDistro(t *testing.T) *vm.Env {
	t.Helper()
	e := needEnv(t)
	if os.Getenv("NBDROOT_DISTRO") != "1" {
		t.Skip("real-distribution boots run with NBDROOT_DISTRO=1 (make test-distro)")
	}
	// A TCG guest keeps about one host CPU busy: two distribution boots side by side (go
	// test's -parallel is GOMAXPROCS) take the tier's wall time down by about half.
	t.Parallel()
	return e
}

// distroTimeout bounds a systemd boot of a stock Debian root under TCG.
const distroTimeout = 6 * time.Minute

// bootDebian boots suite's cached root over NBD with its own kernel and an initramfs built
// from the root by `nbdroot initramfs --root`, and waits for root's shell on the serial
// console. extraAppend is added to the seed's command line.
func bootDebian(t *testing.T, e *vm.Env, suite, img string, srv *vm.Server, extraAppend string) *vm.VM {
	t.Helper()
	return bootDebianHooks(t, e, suite, seedHooks, srv, extraAppend)
}

// bootDebianHooks is bootDebian with an initramfs of the given hooks.
func bootDebianHooks(t *testing.T, e *vm.Env, suite, hooks string, srv *vm.Server, extraAppend string) *vm.VM {
	t.Helper()
	root := vm.DebianRoot(t, suite)
	_, vmlinuz := vm.DebianKernel(t, root)
	initrd := e.InitramfsFromRoot(t, root, hooks)
	v := vm.Start(t, vm.Options{
		Kernel:   vmlinuz,
		Initrd:   initrd,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw console=ttyS0 " + extraAppend,
		Forwards: map[int]int{10809: srv.Port},
		MemoryMB: 1024,
		Timeout:  distroTimeout + 2*time.Minute,
	})
	v.Expect(vm.DebianShellPrompt, distroTimeout)
	return v
}

// shell types cmd at the guest's shell and returns what it printed before the next prompt.
func shell(t *testing.T, v *vm.VM, cmd string, timeout time.Duration) string {
	t.Helper()
	start := len(v.Console())
	marker := "END-" + strings.ReplaceAll(time.Now().Format("150405.000000"), ".", "")
	v.Send(cmd + "; echo " + marker + "-$?\n")
	m, _ := v.ExpectAfter(start, `(?s)\n(.*)`+marker+`-(\d+)`, timeout)
	out := m[1]
	// The terminal echoes the command line itself first.
	if i := strings.Index(out, "\n"); i >= 0 && strings.Contains(out[:i], marker) {
		out = out[i+1:]
	}
	if m[2] != "0" {
		t.Fatalf("%q exited with %s:\n%s", cmd, m[2], out)
	}
	return out
}

// TestDistroBoot boots stock Debian 12 and 13 systemd roots through our initramfs to a login
// shell, checks that / is the NBD device, and powers off cleanly.
func TestDistroBoot(t *testing.T) {
	e := needDistro(t)
	for _, suite := range vm.DebianSuites {
		t.Run(suite, func(t *testing.T) {
			img := e.DebianImage(t, suite, vm.DebianImageOptions{})
			srv := e.StartServer(t, 0, "--export", "root="+img)
			v := bootDebian(t, e, suite, img, srv, "")
			mounts := shell(t, v, "cat /proc/mounts", time.Minute)
			if !regexp.MustCompile(`(?m)^/dev/nbd0 / ext4 rw`).MatchString(mounts) {
				t.Fatalf("/ is not /dev/nbd0 read-write:\n%s", mounts)
			}
			if out := shell(t, v, "systemctl is-system-running --wait || true", 3*time.Minute); !strings.Contains(out, "running") && !strings.Contains(out, "degraded") {
				t.Errorf("systemd state: %s", out)
			}
			t.Logf("timeline:\n%s", timeline(v.Console()))
			v.Send("poweroff\n")
			if err := v.Wait(2 * time.Minute); err != nil {
				t.Fatalf("guest did not power off: %v", err)
			}
			if strings.Contains(v.Console(), "Kernel panic") {
				t.Fatal("kernel panic on the console")
			}
			v.Expect(`reboot: Power down`, time.Second)
		})
	}
}
