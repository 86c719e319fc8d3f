package test

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	"github.com/nbdroot/nbdroot/nbdserver/objstore/weedtest"
	"github.com/nbdroot/nbdroot/test/vm"
)

// storeLeaseTTL is the writers' lease time of the store tests' servers: a failover waits
// this long after the dead server's last renewal (docs/store.md).
const storeLeaseTTL = 10 * time.Second

// uploadRoot puts a root image into a new bucket of the store and returns its URL.
func uploadRoot(t *testing.T, w *weedtest.Weed, img string) string {
	t.Helper()
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	b := w.NewBucket(t)
	if _, err := b.Put(context.Background(), "roots/root.img", data, objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	return "s3://" + b.Name() + "/roots/root.img"
}

// storeServerArgs are the flags of a server whose exports live in the store.
func storeServerArgs(t *testing.T, w *weedtest.Weed, export string) []string {
	return []string{"--export", export, "--drain-timeout=-1s", "--state-dir", t.TempDir(),
		"--s3-endpoint", w.Endpoint, "--s3-region", "us-east-1", "--s3-credentials", w.CredentialsFile,
		"--s3-lease-ttl", storeLeaseTTL.String()}
}

// TestStoreFailover boots a client from an image in the object store, served by two
// stateless servers (nbd_server=A,B); A is killed (SIGKILL) while the root writes and
// verifies files; the keeper reconnects to B, which takes the writer's lease over once A's
// has run out, and serves what A had flushed from the store. Both kinds of writable export:
// a read-write export (one writer, keyed by address: its writes overlay in the store) and a
// cow export (the client's identity, its overlay resumed by ID on B). The write-verify loop
// must see no I/O error and no checksum mismatch, and the kernel no I/O error.
func TestStoreFailover(t *testing.T) {
	e := needEnv(t)
	w := weedtest.Start(t) // one store, a bucket for each case: a start takes seconds
	for _, tc := range []struct {
		name, opts string
		cow        bool
	}{
		{"read-write", "", false},
		{"cow", ",cow", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			storeFailover(t, e, w, tc.opts, tc.cow)
		})
	}
}

func storeFailover(t *testing.T, e *vm.Env, w *weedtest.Weed, opts string, cow bool) {
	url := uploadRoot(t, w, e.RootImage(t, vm.RootOptions{Init: checksumLoop(8)}))
	a := e.StartServer(t, 0, storeServerArgs(t, w, "root="+url+opts)...)
	b := e.StartServer(t, 0, storeServerArgs(t, w, "root="+url+opts)...)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809," + vm.GuestServerIP + ":10810 root=/dev/nbd0 rw console=ttyS0",
		Forwards: map[int]int{10809: a.Port, 10810: b.Port},
		Timeout:  bootTimeout + 3*time.Minute,
	})
	overlay := ""
	if cow {
		m := v.Expect(`nbd: client `+regexp.QuoteMeta(guestMAC)+` has overlay ([0-9a-f]{32}) on `, bootTimeout)
		overlay = m[1]
	}
	v.Expect(keeperLine(`keeping /dev/nbd0 connected`), bootTimeout)
	_, off := v.ExpectAfter(0, `KEEPER-ITER 3\b`, bootTimeout)
	a.Kill()
	killed := time.Now()
	m, _ := v.ExpectAfter(off, keeperLine(`nbd0: reconnected to (\S+) after (\S+)`), 2*time.Minute)
	if m[1] != vm.GuestServerIP+":10810" {
		t.Errorf("the keeper reconnected to %s, want server B", m[1])
	}
	t.Logf("failed over to B after %s (the test saw it %v after the kill)", m[2], time.Since(killed).Round(time.Second))
	done, _ := v.ExpectAfter(off, `KEEPER-DONE errors=(\d+) mismatches=(\d+)`, 3*time.Minute)
	if done[1] != "0" || done[2] != "0" {
		t.Errorf("write-verify loop across the failover: %s I/O error(s), %s checksum mismatch(es)", done[1], done[2])
	}
	if out := v.Console(); strings.Contains(out, "I/O error") || strings.Contains(out, "EXT4-fs error") {
		t.Errorf("the kernel complained:\n%s", grepLines(out, "nbd0", "EXT4"))
	}
	if !strings.Contains(b.Log(), "held by server") {
		t.Errorf("B never waited for A's lease; its log:\n%s", b.Log())
	}
	if cow && !strings.Contains(b.Log(), "client "+guestMAC+", resuming overlay "+overlay) {
		t.Errorf("B did not resume the client's overlay %s; its log:\n%s", overlay, b.Log())
	}
	if err := v.Wait(60 * time.Second); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
}
