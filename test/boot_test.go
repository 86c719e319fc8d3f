// Package test holds nbdroot's QEMU boot tests: the Debian test kernel boots an initramfs
// built by `nbdroot initramfs`, whose init attaches a root served by `nbdroot serve` on the
// host's loopback, and switches into it.
//
// They run in `make test` (which fetches the kernel and sets NBDROOT_KERNEL); without a
// kernel they skip, unless NBDROOT_REQUIRE_PEERS=1.
package test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

var env *vm.Env

func TestMain(m *testing.M) {
	e, err := vm.NewEnv()
	if err != nil {
		fmt.Fprintln(os.Stderr, "boot tests:", err)
		os.Exit(1)
	}
	env = e
	code := m.Run()
	if e != nil {
		e.Close()
	}
	os.Exit(code)
}

// needEnv skips a boot test when there is no kernel (plain `go test ./...`).
func needEnv(t *testing.T) *vm.Env {
	t.Helper()
	if env == nil {
		if vm.RequirePeers() {
			t.Fatal("NBDROOT_KERNEL is not set: run `make test` (it fetches the test kernel)")
		}
		t.Skip("no test kernel: set NBDROOT_KERNEL (make test does)")
	}
	return env
}

// bootTimeout bounds one boot under TCG, generously for slow CI machines.
const bootTimeout = 150 * time.Second

// seedHooks is the seed's HOOKS line for an unencrypted root.
const seedHooks = "base udev net nbd filesystems"

// assertRootMounted checks the root's marker and that / is the NBD device.
func assertRootMounted(t *testing.T, v *vm.VM, dev, fstype string) {
	t.Helper()
	assertRootMountedWithin(t, v, dev, fstype, bootTimeout)
}

// assertRootMountedWithin is assertRootMounted for a guest that may take longer to boot.
func assertRootMountedWithin(t *testing.T, v *vm.VM, dev, fstype string, boot time.Duration) {
	t.Helper()
	v.Expect(vm.Marker, boot)
	mounts, _ := v.ExpectAfter(0, `--- /proc/mounts\r?\n((?:.*\r?\n)*?)--- uptime`, 30*time.Second)
	want := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(dev) + ` / ` + fstype + ` `)
	if !want.MatchString(mounts[1]) {
		t.Fatalf("root is not %s (%s); /proc/mounts:\n%s", dev, fstype, mounts[1])
	}
	t.Logf("timeline:\n%s", timeline(v.Console()))
}

// timeline returns the init's console lines.
func timeline(console string) string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		if strings.HasPrefix(strings.TrimLeft(l, "\r"), "nbdroot: ") {
			out = append(out, strings.TrimRight(l, "\r"))
		}
	}
	return strings.Join(out, "\n")
}

// TestDirectBoot boots the kernel and our initramfs directly with the seed's cmdline.
func TestDirectBoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 console=ttyS0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + time.Minute,
	})
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	// Every stage printed its timeline line.
	for _, stage := range []string{"base", "udev", "net", "nbd", "filesystems"} {
		v.Expect(`stage `+stage+` +\d+\.\d+s`, time.Second)
	}
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
	if strings.Contains(v.Console(), "Kernel panic") {
		t.Error("kernel panic on the console")
	}
}

// TestPXEBoot is the seed's flow, literally: the client PXE-boots pxelinux from TFTP, which
// loads vmlinuz26 and kernel26.img with the seed's append line.
func TestPXEBoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{})
	srv := e.StartServer(t, 0, "--export", "root="+img)

	tftp := t.TempDir()
	for src, dst := range map[string]string{
		"/usr/lib/PXELINUX/pxelinux.0":               "pxelinux.0",
		"/usr/lib/syslinux/modules/bios/ldlinux.c32": "ldlinux.c32",
		e.Vmlinuz():               "vmlinuz26",
		e.Initramfs(t, seedHooks): "kernel26.img",
	} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tftp, dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.MkdirAll(filepath.Join(tftp, "pxelinux.cfg"), 0o755)
	cfg := "default linux\nlabel linux\nkernel vmlinuz26\nappend initrd=kernel26.img ip=::::::dhcp nbd_server=" +
		vm.GuestServerIP + ":10809 root=/dev/nbd0 console=ttyS0\n"
	if err := os.WriteFile(filepath.Join(tftp, "pxelinux.cfg/default"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	v := vm.Start(t, vm.Options{
		PXE: true, TFTPDir: tftp, BootFile: "pxelinux.0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + 2*time.Minute,
	})
	// pxelinux prints its banner on VGA only; the kernel's command line shows it was pxelinux
	// that loaded vmlinuz26 and kernel26.img over TFTP.
	v.Expect(`Command line: BOOT_IMAGE=vmlinuz26 initrd=kernel26.img ip=::::::dhcp`, bootTimeout)
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}
