package test

import (
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestKeymapPassphrase proves that the image's console keymap is loaded before the
// passphrase prompt, with keys pressed on the guest's PS/2 keyboard (QEMU's send-key) and
// read on its virtual terminal — the serial console bypasses keymaps, so typing there
// would prove nothing.
//
// The LUKS volume has two keyslots: 0 opens with "Zebra-yak", 1 with "Zebra-yak-ö". The
// first try presses the keys a US layout needs for "Zebra-yak" (Shift+Z e b r a minus y a
// k): with the German keymap loaded they type "Yebraßzak", which opens nothing — had the
// keymap not been loaded, keyslot 0 would open here and the test fail. The second try
// presses the keys a German layout needs for "Zebra-yak-ö" (Shift+Y … the slash key for
// '-', Z for 'y', the semicolon key for 'ö'): only the German table, with its Unicode 'ö'
// sent as UTF-8, opens keyslot 1.
func TestKeymapPassphrase(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.LUKSRootImage(t, vm.LUKSOptions{Passphrase: "Zebra-yak", MorePassphrases: []string{"Zebra-yak-ö"}})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	initrd := e.Initramfs(t, "base udev net nbd keyboard keymap encrypt filesystems", "--keymap", "de-latin1")
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: initrd, QMP: true,
		// tty0 first, ttyS0 last: the prompt goes to both, /dev/console (the log) is serial.
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt console=tty0 console=ttyS0",
		Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + 2*time.Minute,
	})
	_, off := v.ExpectAfter(0, `stage keymap .*de-latin1 loaded \(\d+ keys`, bootTimeout)
	_, off = v.ExpectAfter(off, prompt, time.Minute)
	// What a US layout needs for "Zebra-yak".
	v.SendKeys("shift-z", "e", "b", "r", "a", "minus", "y", "a", "k", "ret")
	_, off = v.ExpectAfter(off, `encrypt: wrong passphrase, 2 tries left|keyslot \d opened`, time.Minute)
	if strings.Contains(v.Console()[off-40:off], "opened") {
		t.Fatal("the US key presses opened the volume: the keymap was not applied")
	}
	_, off = v.ExpectAfter(off, prompt, 30*time.Second)
	// What a German layout needs for "Zebra-yak-ö".
	v.SendKeys("shift-y", "e", "b", "r", "a", "slash", "z", "a", "k", "slash", "semicolon", "ret")
	v.ExpectAfter(off, `encrypt: keyslot 1 opened`, time.Minute)
	assertRootMounted(t, v, "/dev/mapper/nbdcrypt", "ext4")
}
