package test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestArm64Boot boots Debian's arm64 kernel on QEMU's virt board (Cortex-A57, TCG) with an
// image `nbdroot initramfs` built for it: the modules of the arm64 kernel tree, and the
// arm64 init the builder finds beside itself (build/arm64/nbdroot-init, from make build)
// because the modules are arm64 — no --init given. The root is an arm64 busybox on NBD, the
// NIC virtio-net-pci. One boot: aarch64 under TCG is slow.
func TestArm64Boot(t *testing.T) {
	e := needEnv(t)
	kernel := os.Getenv("NBDROOT_KERNEL_ARM64")
	if kernel == "" {
		if vm.RequirePeers() {
			t.Fatal("NBDROOT_KERNEL_ARM64 is not set: run `make test` (scripts/deps.sh kernel-arm64 fetches it)")
		}
		t.Skip("no arm64 kernel: set NBDROOT_KERNEL_ARM64 (make test does)")
	}
	if _, err := os.Stat(filepath.Join(e.Build, "arm64", "nbdroot-init")); err != nil {
		t.Fatalf("no arm64 init: %v (make build makes build/arm64/nbdroot-init)", err)
	}
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{Busybox: filepath.Join(kernel, "busybox")})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	initrd := filepath.Join(t.TempDir(), "kernel26-arm64.img")
	out, err := exec.Command(e.Tool("nbdroot"), "initramfs", "--modules", filepath.Join(kernel, "modules"),
		"--hooks", seedHooks, "-o", initrd).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdroot initramfs: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	if !strings.Contains(string(out), "(arm64)") || !strings.Contains(string(out), "arm64/nbdroot-init") {
		t.Errorf("the build did not take the arm64 init:\n%s", out)
	}
	// --arch arm64 names what the modules already say: the same bytes (the build is
	// reproducible). --arch amd64 contradicts them and is refused, naming the flag.
	explicit := filepath.Join(t.TempDir(), "explicit.img")
	if out, err := exec.Command(e.Tool("nbdroot"), "initramfs", "--arch", "arm64", "--modules", filepath.Join(kernel, "modules"),
		"--hooks", seedHooks, "-o", explicit).CombinedOutput(); err != nil {
		t.Errorf("nbdroot initramfs --arch arm64: %v\n%s", err, out)
	} else {
		a, errA := os.ReadFile(initrd)
		b, errB := os.ReadFile(explicit)
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("--arch arm64 gave another image (%d bytes, %v) than the modules' architecture (%d bytes, %v)", len(b), errB, len(a), errA)
		}
	}
	wrong := filepath.Join(t.TempDir(), "wrong.img")
	out, err = exec.Command(e.Tool("nbdroot"), "initramfs", "--arch", "amd64", "--modules", filepath.Join(kernel, "modules"),
		"--hooks", seedHooks, "-o", wrong).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--arch amd64") {
		t.Errorf("--arch amd64 with arm64 modules: err %v, want a refusal naming --arch:\n%s", err, out)
	}
	if _, err := os.Stat(wrong); err == nil {
		t.Errorf("a refused build left %s", wrong)
	}
	v := vm.Start(t, vm.Options{
		Arch: "arm64", Kernel: filepath.Join(kernel, "vmlinuz"), Initrd: initrd,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0",
		Forwards: map[int]int{10809: srv.Port}, Timeout: 3*bootTimeout + time.Minute,
	})
	v.Expect(`Machine model: linux,dummy-virt`, time.Minute)
	assertRootMountedWithin(t, v, "/dev/nbd0", "ext4", 3*bootTimeout)
	if m := v.Expect(`init=/sbin/init pid=1`, time.Second); m == nil {
		t.Error("the root's init did not run")
	}
	if err := v.Wait(time.Minute); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}
