package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestMkinitcpioConfig builds an image from a mkinitcpio.conf with every hook of Arch's
// stock HOOKS line (plus net and nbd), MODULES, BINARIES and FILES, with CPU microcode in
// the firmware directory, and boots it: the early microcode archive in front of the
// compressed one is accepted by the kernel, a module only MODULES names is loaded, a file
// FILES names is there, and a dynamically linked program BINARIES added runs from the
// rescue shell with the libraries the builder found for it.
func TestMkinitcpioConfig(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "mkinitcpio.conf")
	hostname := filepath.Join(dir, "hostname")
	os.WriteFile(hostname, []byte("from-FILES\n"), 0o644)
	os.WriteFile(conf, []byte(`# Arch's stock mkinitcpio.conf, with the netboot hooks
MODULES=(e1000e vfat)
BINARIES=(mkfs.ext4)
FILES=(`+hostname+`)
HOOKS=(base udev autodetect microcode modconf kms keyboard keymap consolefont block net nbd filesystems fsck)
COMPRESSION="zstd"
`), 0o644)
	fw := filepath.Join(dir, "firmware")
	for name, data := range map[string]string{"intel-ucode/06-55-04": "not a real update", "amd-ucode/microcode_amd_fam17h.bin": "nor this"} {
		os.MkdirAll(filepath.Dir(filepath.Join(fw, name)), 0o755)
		os.WriteFile(filepath.Join(fw, name), []byte(data), 0o644)
	}
	initrd := filepath.Join(dir, "kernel26.img")
	out, err := exec.Command(e.Tool("nbdroot"), "initramfs", "--modules", e.Modules(), "--config", conf,
		"--firmware", fw, "--init", e.Tool("nbdroot-init"), "-o", initrd).CombinedOutput()
	if err != nil {
		t.Fatalf("nbdroot initramfs: %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, want := range []string{"    microcode    uncompressed early archive", "    fsck         not run at boot", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2", "/usr/sbin/mkfs.ext4"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	img := e.RootImage(t, vm.RootOptions{})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: initrd,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rd.break=switch_root console=ttyS0",
		Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + time.Minute,
	})
	_, off := v.ExpectAfter(0, `nbdroot# `, bootTimeout)
	v.Send("mkfs.ext4 -V\n")
	_, off = v.ExpectAfter(off, `mke2fs \d+\.\d+`, 30*time.Second)
	// vfat is in no hook's list: only MODULES puts it in the image and loads it at the start.
	v.Send("cat /proc/modules\n")
	_, off = v.ExpectAfter(off, `(?m)^vfat \d+ \d+ `, 30*time.Second)
	v.Send("cat " + hostname + "\n")
	_, off = v.ExpectAfter(off, `from-FILES`, 30*time.Second)
	v.Send("exit\n")
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	if m := regexp.MustCompile(`Kernel panic|Initramfs unpacking failed`).FindString(v.Console()); m != "" {
		t.Errorf("console shows %q", m)
	}
}
