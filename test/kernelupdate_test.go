package test

import (
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestDistroKernelUpdate is the kernel update from inside a running client, with nothing
// done on the server: `nbdroot install --root` puts nbdroot into a Debian 12 root; the image
// boots over HTTP from `nbdroot serve --http` (QEMU's iPXE given the script's URL by slirp);
// inside the guest, dpkg installs a second kernel (Debian's rt-flavour package, copied into
// the image beforehand: the guest has no network; rebuilt with dpkg-deb with only the
// modules an nbdroot image needs, or its unpacking and initramfs-tools' build take most of
// an hour under TCG) and its postinst runs the kernel hooks, initramfs-tools' and ours; after a power-off the next boot through the server runs the new
// kernel. Then dpkg purges that kernel, and the server no longer offers it: the next boot
// runs the first one again.
func TestDistroKernelUpdate(t *testing.T) {
	e := needDistro(t)
	full, newRelease := vm.DebianKernelPackage(t, "rt-amd64")
	deb := vm.TrimKernelPackage(t, full, e.Tool("nbdroot-init"), t.TempDir())
	oldRelease, _ := vm.DebianKernel(t, vm.DebianRoot(t, "bookworm"))
	if oldRelease == newRelease {
		t.Fatalf("the second kernel is the root's own (%s)", oldRelease)
	}
	debInGuest := "/root/" + filepath.Base(deb)
	img := e.DebianImage(t, "bookworm", vm.DebianImageOptions{SizeMB: 3072, Prepare: func(tree string) error {
		out, err := exec.Command(e.Tool("nbdroot"), "install", "--root", tree).CombinedOutput()
		t.Logf("nbdroot install --root:\n%s", out)
		if err != nil {
			return fmt.Errorf("nbdroot install: %v", err)
		}
		return exec.Command("cp", deb, filepath.Join(tree, debInGuest)).Run()
	}})
	srv := e.StartServer(t, 0, "--export", "root="+img, "--http", "127.0.0.1:0", "--boot-append", "console=ttyS0 rw")
	port := httpPort(t, srv)
	script := func() string {
		t.Helper()
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/root/boot.ipxe", port))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	boot := func(mac, wantRelease string) *vm.VM {
		t.Helper()
		if s := script(); !strings.Contains(s, "/root/vmlinuz-"+wantRelease+" ") {
			t.Fatalf("the server's script does not boot %s:\n%s", wantRelease, s)
		}
		v := vm.Start(t, vm.Options{
			PXE: true, BootFile: fmt.Sprintf("http://%s:%d/root/boot.ipxe", vm.GuestServerIP, port),
			MACs:     []string{mac},
			Forwards: map[int]int{port: port, srv.Port: srv.Port},
			MemoryMB: 1024,
			Timeout:  distroTimeout + 20*time.Minute,
		})
		v.Expect(`Command line: .*initrd=nbdroot\.img-`+regexp.QuoteMeta(wantRelease)+` `, bootTimeout)
		v.Expect(vm.DebianShellPrompt, distroTimeout)
		if got := strings.TrimSpace(plain(shell(t, v, "uname -r", time.Minute))); got != wantRelease {
			t.Fatalf("uname -r: %q, want %q", got, wantRelease)
		}
		if mounts := shell(t, v, "cat /proc/mounts", time.Minute); !regexp.MustCompile(`(?m)^/dev/nbd0 / ext4 rw`).MatchString(mounts) {
			t.Fatalf("/ is not /dev/nbd0 read-write:\n%s", mounts)
		}
		return v
	}
	powerOff := func(v *vm.VM) {
		t.Helper()
		v.Send("poweroff\n")
		if err := v.Wait(3 * time.Minute); err != nil {
			t.Fatalf("guest did not power off: %v", err)
		}
	}

	// 1. The root's own kernel, with the initramfs nbdroot install built on the host.
	v := boot("52:54:00:4e:42:11", oldRelease)
	start := time.Now()
	out := shell(t, v, "DEBIAN_FRONTEND=noninteractive dpkg --install "+debInGuest+" 2>&1", 20*time.Minute)
	t.Logf("dpkg --install in the guest (%.0fs):\n%s", time.Since(start).Seconds(), out)
	if !strings.Contains(out, "nbdroot install: / (Debian GNU/Linux 12 (bookworm))") ||
		!regexp.MustCompile(`built +/boot/nbdroot\.img-`+regexp.QuoteMeta(newRelease)).MatchString(out) {
		t.Errorf("our kernel hook did not build the new kernel's initramfs:\n%s", out)
	}
	if !strings.Contains(out, "nbdroot serve boots this root with kernel "+newRelease) {
		t.Errorf("the hook does not say the new kernel boots next:\n%s", out)
	}
	powerOff(v)

	// 2. The next boot through the server runs the kernel dpkg installed.
	v = boot("52:54:00:4e:42:12", newRelease)
	if !strings.Contains(srv.Log(), "netboot: http 127.0.0.1 /root/vmlinuz-"+newRelease) {
		t.Errorf("the new kernel did not come from our HTTP server:\n%s", srv.Log())
	}
	out = shell(t, v, "DEBIAN_FRONTEND=noninteractive dpkg --purge linux-image-"+newRelease+" 2>&1", 10*time.Minute)
	t.Logf("dpkg --purge in the guest:\n%s", out)
	if !regexp.MustCompile(`removed +/boot/nbdroot\.img-` + regexp.QuoteMeta(newRelease)).MatchString(out) {
		t.Errorf("our kernel hook did not remove the kernel's initramfs:\n%s", out)
	}
	powerOff(v)

	// 3. A removed kernel is no longer offered.
	v = boot("52:54:00:4e:42:13", oldRelease)
	powerOff(v)
	if strings.Contains(v.Console(), "Kernel panic") {
		t.Fatal("kernel panic on the console")
	}
}

// terminalControl matches the control sequences a shell writes around its output (bash's
// bracketed paste mode, colours).
var terminalControl = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]|\r`)

// plain is console output without terminal control sequences.
func plain(s string) string { return terminalControl.ReplaceAllString(s, "") }
