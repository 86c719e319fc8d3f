package test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// cowCheck is a root init for the copy-on-write restart tests. It writes a file of fresh
// random data and syncs it (COW-SYNCED and its checksum), then waits for a line on the
// console: the test kills the server meanwhile. Then it reads the file back past the page
// cache (O_DIRECT: the read goes to the server, and waits for the keeper while the server is
// away) and prints COW-READ with the checksum read, or COW-READ-FAILED; writes and syncs a
// second file (COW-WRITE-OK or COW-WRITE-FAILED); and prints the keeper's kernel log lines
// raw, with their priority (KMSG <11>… is LOG_USER at KERN_ERR). The caches are never
// dropped, so the tools keep running from the page cache even when the root failed.
const cowCheck = `echo "` + vm.Marker + ` init=$0"
if ! dd if=/dev/urandom of=/data.1 bs=64k count=16 conv=fsync 2>/run/err; then echo "COW-IOERR $(cat /run/err)"; fi
sync
want=$(md5sum < /data.1)
echo "COW-SYNCED ${want%% *}"
read -r go
echo "COW-CHECKING"
if dd if=/data.1 of=/run/copy bs=64k iflag=direct 2>/run/err; then
	got=$(md5sum < /run/copy); echo "COW-READ ${got%% *}"
else
	echo "COW-READ-FAILED $(cat /run/err)"
fi
if dd if=/dev/urandom of=/data.2 bs=64k count=4 conv=fsync 2>/run/err; then echo COW-WRITE-OK; else echo "COW-WRITE-FAILED $(cat /run/err)"; fi
dmesg -r | grep nbdroot-keeper | while read -r l; do echo "KMSG $l"; done
echo COW-DONE
poweroff -f
`

// guestMAC is QEMU's default MAC address of the first NIC: the guest's client identity.
const guestMAC = "52:54:00:12:34:56"

// TestCowServerRestart boots a client from a copy-on-write export (temporary overlays in the
// state directory, or persistent ones in cowdir=), has it write and sync a file, kills the
// server (SIGKILL) and restarts it on the same state: the keeper resumes its overlay by ID
// and the synced file reads back intact, past the page cache. When an administrator removed
// the overlay while the server was down (nbdroot overlays rm), the keeper refuses the
// server's answer: the kernel log says why at KERN_ERR, and I/O on the device fails with
// EIO at once — long before the dead-connection timeout — instead of showing the file system
// another view of its disk.
func TestCowServerRestart(t *testing.T) {
	e := needEnv(t)
	for _, tc := range cowCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cowRestart(t, e, tc, e.Vmlinuz(), e.Initramfs(t, seedHooks))
		})
	}
}

// cowCase is one copy-on-write restart: the export (of the image, with a scratch directory
// for overlays), the connections, and whether the overlay is removed while the server is down.
type cowCase struct {
	name    string
	export  func(img, dir string) string
	conns   int
	removed bool
}

var cowCases = []cowCase{
	{"cow", func(img, _ string) string { return "root=" + img + ",cow" }, 1, false},
	{"cow with 2 connections", func(img, _ string) string { return "root=" + img + ",cow" }, 2, false},
	{"cowdir", func(img, dir string) string { return "root=" + img + ",cowdir=" + filepath.Join(dir, "cow") }, 1, false},
	{"cow overlay removed", func(img, _ string) string { return "root=" + img + ",cow" }, 1, true},
	{"cowdir overlay removed", func(img, dir string) string { return "root=" + img + ",cowdir=" + filepath.Join(dir, "cow") }, 1, true},
}

// cowRestart runs one cowCase with a kernel and an initramfs.
func cowRestart(t *testing.T, e *vm.Env, tc cowCase, kernel, initrd string) {
	img := e.RootImage(t, vm.RootOptions{Init: cowCheck})
	state := t.TempDir()
	args := []string{"--export", tc.export(img, state), "--state-dir", state}
	srv := e.StartServer(t, 0, args...)
	port := srv.Port
	v := vm.Start(t, vm.Options{
		Kernel: kernel,
		Initrd: initrd,
		Append: "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw nbdroot.connections=" +
			strconv.Itoa(tc.conns) + " console=ttyS0",
		Forwards: map[int]int{10809: port},
		Timeout:  bootTimeout + 3*time.Minute,
	})
	m := v.Expect(`nbd: client `+regexp.QuoteMeta(guestMAC)+` has overlay ([0-9a-f]{32}) on `, bootTimeout)
	overlay := m[1]
	v.Expect(keeperLine(`keeping /dev/nbd0 connected to \S+ \(netlink, `+strconv.Itoa(tc.conns)+
		` connection\(s\), dead-connection timeout 2m0s, client `+regexp.QuoteMeta(guestMAC)+`, overlay `+overlay+`\)`), 30*time.Second)
	synced, off := v.ExpectAfter(0, `COW-SYNCED ([0-9a-f]{32})`, bootTimeout)
	if !strings.Contains(srv.Log(), "client "+guestMAC) {
		t.Errorf("the server did not log the client's identity:\n%s", srv.Log())
	}
	srv.Kill()
	t.Logf("server killed after the guest synced; overlay %s", overlay)
	_, off = v.ExpectAfter(off, keeperLine(`nbd0: .*reconnecting to`), 60*time.Second)
	if tc.removed {
		out, err := exec.Command(e.Tool("nbdroot"), "overlays", "rm", overlay, "--state-dir", state).CombinedOutput()
		if err != nil {
			t.Fatalf("nbdroot overlays rm %s: %v\n%s", overlay, err, out)
		}
		t.Logf("nbdroot overlays rm: %s", strings.TrimSpace(string(out)))
	}
	// The read the guest starts now waits for the keeper: the server is away.
	v.Send("go\n")
	_, off = v.ExpectAfter(off, `COW-CHECKING`, 30*time.Second)
	time.Sleep(3 * time.Second)
	srv = e.StartServer(t, port, args...)
	t.Logf("server restarted on port %d with the same state", port)
	if !tc.removed {
		m, _ := v.ExpectAfter(off, keeperLine(`nbd0: reconnected to \S+ after \S+ \(\d+ attempt\(s\), (\d+) socket`), 60*time.Second)
		if m[1] != strconv.Itoa(tc.conns) {
			t.Errorf("the keeper handed %s socket(s) to the kernel, want %d", m[1], tc.conns)
		}
		got, _ := v.ExpectAfter(off, `COW-READ(-FAILED)? ([^\r\n]*)\r?\n`, 60*time.Second)
		if got[2] != synced[1] {
			t.Errorf("the synced file reads back as %q after the restart, want checksum %s", got[0], synced[1])
		}
		v.ExpectAfter(off, `COW-WRITE-OK`, 60*time.Second)
		v.ExpectAfter(off, `COW-DONE`, 60*time.Second)
		if out := v.Console(); strings.Contains(out, "I/O error") {
			t.Errorf("the kernel reported I/O errors:\n%s", grepLines(out, "error"))
		}
		if err := v.Wait(60 * time.Second); err != nil {
			t.Errorf("guest did not power off: %v", err)
		}
		return
	}
	refusal := `nbd0: refusing to attach another view of the disk: NBD server 10\.0\.2\.100:10809, client ` + regexp.QuoteMeta(guestMAC) +
		`: expected overlay ` + overlay + `, offered no overlay: the server answered NBD_REP_ERR_NBDROOT_OVERLAY_GONE`
	_, refusedAt := v.ExpectAfter(off, keeperLine(refusal), 60*time.Second)
	refused := time.Now()
	v.ExpectAfter(off, keeperLine(`nbd0: no server serves client `+regexp.QuoteMeta(guestMAC)+` the disk this device was attached with \(overlay `+
		overlay+`\) any more \(last: 10\.0\.2\.100:10809\): failing I/O on /dev/nbd0 with EIO`), 30*time.Second)
	// EIO at once: the read waited since before the restart, and the dead-connection
	// timeout (2 minutes) is far from expired.
	failed, _ := v.ExpectAfter(off, `COW-READ(-FAILED)? ([^\r\n]*)\r?\n`, 30*time.Second)
	if failed[1] == "" {
		t.Fatalf("the guest read its file after the overlay was removed: %q", failed[0])
	}
	t.Logf("the read failed %s after the keeper's refusal: %s", time.Since(refused).Round(100*time.Millisecond), failed[2])
	if !strings.Contains(failed[2], "Input/output error") {
		t.Errorf("the read failed with %q, want EIO", failed[2])
	}
	v.ExpectAfter(refusedAt, `I/O error, dev nbd0`, 30*time.Second)
	v.ExpectAfter(off, `COW-WRITE-FAILED`, 60*time.Second)
	// The kernel log has the refusal at KERN_ERR (LOG_USER|LOG_ERR = <11>).
	v.ExpectAfter(off, `KMSG <11>\[[ 0-9.]+\] nbdroot-keeper\[\d+\]: `+refusal, 30*time.Second)
	v.ExpectAfter(off, `COW-DONE`, 30*time.Second)
	if strings.Contains(v.Console()[off:], "nbd0: reconnected to") {
		t.Error("the keeper reconnected the device to another view")
	}
	t.Logf("kernel and keeper lines:\n%s", grepLines(v.Console(), "nbd0", "keeper"))
}
