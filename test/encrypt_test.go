package test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// encHooks is the seed's encrypted HOOKS line, minus the keyboard hooks a serial console
// does not need (they are accepted: see TestSeedEncryptedHooksLine).
const encHooks = "base udev net nbd encrypt filesystems"

// seedCrypt is the seed's encrypted append line.
const seedCrypt = "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt console=ttyS0"

const prompt = `Enter passphrase for /dev/nbd0 \(nbdcrypt\): `

func TestEncryptedRoot(t *testing.T) {
	e := needEnv(t)
	tests := []struct {
		name  string
		luks  vm.LUKSOptions
		hooks string
		wrong bool
	}{
		{name: "LUKS2 argon2id 4096-byte sectors and a wrong passphrase first", luks: vm.LUKSOptions{PBKDF: "argon2id"}, wrong: true},
		{name: "LUKS1 pbkdf2", luks: vm.LUKSOptions{Type: "luks1"}},
		{name: "seed HOOKS line with usbinput and keymap", luks: vm.LUKSOptions{},
			hooks: "base udev net nbd usbinput keymap encrypt filesystems"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img := e.LUKSRootImage(t, tt.luks)
			srv := e.StartServer(t, 0, "--export", "root="+img)
			hooks := tt.hooks
			if hooks == "" {
				hooks = encHooks
			}
			v := vm.Start(t, vm.Options{
				Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, hooks), Append: seedCrypt,
				Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + time.Minute,
			})
			_, off := v.ExpectAfter(0, prompt, bootTimeout)
			if tt.wrong {
				v.Send("not-the-passphrase\n")
				_, off = v.ExpectAfter(off, `wrong passphrase, 2 tries left`, time.Minute)
				_, off = v.ExpectAfter(off, prompt, 30*time.Second)
			}
			v.Send("nbdroot-test\n")
			v.ExpectAfter(off, `stage encrypt .*/dev/nbd0 unlocked as /dev/mapper/nbdcrypt`, time.Minute)
			assertRootMounted(t, v, "/dev/mapper/nbdcrypt", "ext4")
		})
	}
}

// TestEncryptedRootKeyfile unlocks with a keyfile the builder put in the image
// (cryptkey=rootfs:PATH): no prompt at all.
func TestEncryptedRootKeyfile(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.LUKSRootImage(t, vm.LUKSOptions{})
	key := filepath.Join(t.TempDir(), "nbdcrypt.key")
	if err := os.WriteFile(key, []byte("nbdroot-test"), 0o400); err != nil {
		t.Fatal(err)
	}
	srv := e.StartServer(t, 0, "--export", "root="+img)
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, encHooks, "--keyfile", key+":/etc/nbdroot/nbdcrypt.key"),
		Append:   seedCrypt + " cryptkey=rootfs:/etc/nbdroot/nbdcrypt.key",
		Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + time.Minute,
	})
	assertRootMounted(t, v, "/dev/mapper/nbdcrypt", "ext4")
	if m := vm.Match(v.Console(), prompt); m {
		t.Error("asked for a passphrase although the keyfile opens the volume")
	}
}
