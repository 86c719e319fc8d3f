package test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// checksumLoop is a root init that writes files of fresh random data through the NBD root and
// reads each back from the device (page cache dropped) comparing checksums, for iters
// rounds a second apart; then it checks every file again and prints a verdict line:
// KEEPER-DONE errors=N mismatches=M.
func checksumLoop(iters int) string {
	return fmt.Sprintf(`echo "`+vm.Marker+` init=$0"
errors=0; mismatches=0
: > /run/sums
for i in $(seq 1 %d); do
	dd if=/dev/urandom of=/run/src bs=64k count=8 2>/dev/null
	want=$(md5sum < /run/src); want=${want%%%% *}
	echo "$want /data.$i" >> /run/sums
	if ! dd if=/run/src of=/data.$i bs=64k conv=fsync 2>/run/dd.err; then
		echo "KEEPER-IOERR write $i: $(cat /run/dd.err)"; errors=$((errors+1))
	fi
	sync
	echo 3 > /proc/sys/vm/drop_caches
	got=$(md5sum < /data.$i) || { echo "KEEPER-IOERR read $i"; errors=$((errors+1)); }
	got=${got%%%% *}
	if [ "$got" != "$want" ]; then echo "KEEPER-MISMATCH $i"; mismatches=$((mismatches+1)); fi
	echo "KEEPER-ITER $i"
	sleep 1
done
echo 3 > /proc/sys/vm/drop_caches
while read want file; do
	got=$(md5sum < $file); got=${got%%%% *}
	[ "$got" = "$want" ] || { echo "KEEPER-MISMATCH final $file"; mismatches=$((mismatches+1)); }
done < /run/sums
echo "KEEPER-DONE errors=$errors mismatches=$mismatches"
dmesg | grep -E 'nbd|keeper' | tail -20
sync
poweroff -f
`, iters)
}

// keeperLine matches the keeper's kernel log lines on the console.
func keeperLine(msg string) string { return `nbdroot-keeper\[\d+\]: ` + msg }

// TestKeeperServerRestart stops the server while the booted root writes and verifies data,
// and restarts it on the same port a few seconds later: the keeper reconnects, the loop
// sees no I/O error and every checksum matches. The server is killed (a crash) or stopped
// (SIGTERM: it drains and flushes), with one connection or several.
func TestKeeperServerRestart(t *testing.T) {
	e := needEnv(t)
	for _, tc := range []struct {
		name  string
		conns int
		stop  func(*vm.Server)
		args  []string
	}{
		{"killed", 1, (*vm.Server).Kill, nil},
		// A graceful stop must not answer the kernel with ESHUTDOWN (the kernel turns any
		// error reply into EIO): --drain-timeout=-1s closes the connections once the
		// requests in flight are answered, and the keeper reconnects.
		{"stopped with 2 connections", 2, (*vm.Server).Stop, []string{"--drain-timeout=-1s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := e.RootImage(t, vm.RootOptions{Init: checksumLoop(14)})
			args := append([]string{"--export", "root=" + img}, tc.args...)
			srv := e.StartServer(t, 0, args...)
			port := srv.Port
			v := vm.Start(t, vm.Options{
				Kernel: e.Vmlinuz(),
				Initrd: e.Initramfs(t, seedHooks),
				Append: "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw nbdroot.connections=" +
					strconv.Itoa(tc.conns) + " console=ttyS0",
				Forwards: map[int]int{10809: port},
				Timeout:  bootTimeout + 2*time.Minute,
			})
			v.Expect(`keeper: pid \d+ keeps /dev/nbd0`, bootTimeout)
			v.Expect(keeperLine(fmt.Sprintf(`keeping /dev/nbd0 connected to \S+ \(netlink, %d connection\(s\)`, tc.conns)), 30*time.Second)
			_, off := v.ExpectAfter(0, `KEEPER-ITER 3\b`, bootTimeout)
			tc.stop(srv)
			t.Logf("server %s at iteration 3", tc.name)
			_, off = v.ExpectAfter(off, keeperLine(`nbd0: .*reconnecting to`), 60*time.Second)
			time.Sleep(3 * time.Second)
			srv = e.StartServer(t, port, args...)
			t.Logf("server restarted on port %d", port)
			m, _ := v.ExpectAfter(off, keeperLine(`nbd0: reconnected to \S+ after (\S+) \(\d+ attempt\(s\), (\d+) socket`), 60*time.Second)
			t.Logf("keeper: reconnected after %s, %s socket(s)", m[1], m[2])
			if m[2] != strconv.Itoa(tc.conns) {
				t.Errorf("the keeper handed %s socket(s) to the kernel, want %d", m[2], tc.conns)
			}
			done, _ := v.ExpectAfter(off, `KEEPER-DONE errors=(\d+) mismatches=(\d+)`, 2*time.Minute)
			if done[1] != "0" || done[2] != "0" {
				t.Errorf("write-verify loop across the restart: %s I/O error(s), %s checksum mismatch(es)", done[1], done[2])
			}
			out := v.Console()
			if regexp.MustCompile(`KEEPER-(IOERR|MISMATCH)`).MatchString(out) {
				t.Errorf("the loop reported failures:\n%s", grepLines(out, "KEEPER-IOERR", "KEEPER-MISMATCH"))
			}
			if strings.Contains(out, "I/O error") || strings.Contains(out, "Other side returned error") {
				t.Errorf("the kernel reported I/O errors:\n%s", grepLines(out, "error"))
			}
			t.Logf("kernel and keeper lines:\n%s", grepLines(out, "nbd0", "keeper"))
			if err := v.Wait(60 * time.Second); err != nil {
				t.Errorf("guest did not power off: %v", err)
			}
		})
	}
}

// TestKeeperDeadConnExpires keeps the server away longer than a short dead-connection
// timeout: the kernel log says so clearly (the keeper's line and the kernel's I/O errors),
// the guest does not hang silently, and the keeper still reconnects once the server is back.
func TestKeeperDeadConnExpires(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{Init: checksumLoop(14)})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	port := srv.Port
	const deadconn = 4
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw nbdroot.deadconn=" + strconv.Itoa(deadconn) + " console=ttyS0",
		Forwards: map[int]int{10809: port},
		Timeout:  bootTimeout + 2*time.Minute,
	})
	v.Expect(`keeper: pid \d+ keeps /dev/nbd0 .*dead-connection timeout 4s`, bootTimeout)
	_, off := v.ExpectAfter(0, `KEEPER-ITER 2\b`, bootTimeout)
	srv.Kill()
	killed := off
	_, off = v.ExpectAfter(off, keeperLine(`nbd0: no server for \S+, the dead-connection timeout \(4s, nbdroot.deadconn=\): the kernel now fails I/O on /dev/nbd0 with EIO`), 90*time.Second)
	// The kernel itself reports the failed requests (before or after the keeper's line). A
	// request that was on the wire when the server died is only sent again when the kernel's
	// 30 s request timer fires, and only then fails: allow for that on a loaded machine.
	v.ExpectAfter(killed, `I/O error, dev nbd0`, 120*time.Second)
	srv = e.StartServer(t, port, "--export", "root="+img)
	v.ExpectAfter(off, keeperLine(`nbd0: reconnected to`), 60*time.Second)
	v.ExpectAfter(off, keeperLine(`nbd0: requests made while the dead-connection timeout had expired failed with EIO`), 10*time.Second)
	t.Logf("kernel and keeper lines:\n%s", grepLines(v.Console(), "nbd"))
}

// grepLines returns the console lines containing any of subs.
func grepLines(console string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(console, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				out = append(out, strings.TrimRight(l, "\r"))
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestKeeperFailover gives the client two servers of one shared image
// (nbd_server=a,b): when the first dies for good, the keeper moves the root to the second,
// under the same backend identifier, and the write-verify loop never notices.
func TestKeeperFailover(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{Init: checksumLoop(10)})
	// Both serve the same file — a shared backend, which is what makes failover safe: our
	// server first, then nbdkit (nbdroot serve locks its image against a second nbdroot
	// serve; nbdkit takes no lock).
	a := e.StartServer(t, 0, "--export", "root="+img, "--drain-timeout=-1s")
	bPort := startPeer(t, "nbdkit", img)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809," + vm.GuestServerIP + ":10810 root=/dev/nbd0 rw console=ttyS0",
		Forwards: map[int]int{10809: a.Port, 10810: bPort},
		Timeout:  bootTimeout + 2*time.Minute,
	})
	v.Expect(`keeper: pid \d+ keeps /dev/nbd0 \(servers \[10\.0\.2\.100:10809 10\.0\.2\.100:10810\]`, bootTimeout)
	_, off := v.ExpectAfter(0, `KEEPER-ITER 3\b`, bootTimeout)
	a.Kill()
	m, _ := v.ExpectAfter(off, keeperLine(`nbd0: reconnected to (\S+) after (\S+)`), 90*time.Second)
	if m[1] != vm.GuestServerIP+":10810" {
		t.Errorf("the keeper reconnected to %s, want the second server", m[1])
	}
	t.Logf("failed over to %s after %s", m[1], m[2])
	done, _ := v.ExpectAfter(off, `KEEPER-DONE errors=(\d+) mismatches=(\d+)`, 2*time.Minute)
	if done[1] != "0" || done[2] != "0" {
		t.Errorf("write-verify loop across the failover: %s I/O error(s), %s checksum mismatch(es)", done[1], done[2])
	}
	if out := v.Console(); strings.Contains(out, "I/O error") || strings.Contains(out, "backend") {
		t.Errorf("the kernel complained:\n%s", grepLines(out, "nbd0"))
	}
	if err := v.Wait(60 * time.Second); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
}

// TestKeeperBeforeSwitchRoot has the server restart while the boot stands in the rescue
// shell before switch_root (rd.break). When the nbd stage started the keeper, it reconnects
// at once. When the keeper only starts at switch_root, the kernel's LINK_DEAD went to
// nobody: the keeper's start-up read finds the device unanswering and reconnects it (the
// test has the shell read the root's init and busybox first, so that switch_root finds
// them in the page cache instead of waiting for the dead device). Either way the root then
// works as if nothing happened.
func TestKeeperBeforeSwitchRoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{Init: checksumLoop(3)})
	srv := e.StartServer(t, 0, "--export", "root="+img, "--drain-timeout=-1s")
	port := srv.Port
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw rd.break console=ttyS0",
		Forwards: map[int]int{10809: port},
		Timeout:  bootTimeout + 2*time.Minute,
	})
	_, off := v.ExpectAfter(0, `rd.break: stopped before the switch_root stage`, bootTimeout)
	// The nbd stage launches the keeper at attach; its own first line says it runs.
	early := regexp.MustCompile(`nbdroot-keeper\[\d+\]: keeping /dev/nbd0`).MatchString(v.Console()[:off])
	if !early {
		// The typed line echoes "$((6*7))"; only the shell's output says 42.
		v.Send("cat /newroot/sbin/init /newroot/bin/busybox > /dev/null && echo CACHED-$((6*7))\n")
		_, off = v.ExpectAfter(off, `CACHED-42`, 30*time.Second)
	}
	srv.Kill()
	v.ExpectAfter(off, `block nbd0: Receive control failed`, 30*time.Second)
	srv = e.StartServer(t, port, "--export", "root="+img, "--drain-timeout=-1s")
	if early {
		t.Log("the nbd stage started the keeper: it reconnects before the boot resumes")
		v.ExpectAfter(off, keeperLine(`nbd0: reconnected to`), 60*time.Second)
		v.Send("exit\n")
	} else {
		t.Log("the keeper starts at switch_root: its start-up read finds the dead link")
		v.Send("exit\n")
		v.ExpectAfter(off, keeperLine(`nbd0: a read did not complete within 3s of the keeper's start`), 60*time.Second)
		v.ExpectAfter(off, keeperLine(`nbd0: reconnected to`), 60*time.Second)
	}
	done, _ := v.ExpectAfter(off, `KEEPER-DONE errors=(\d+) mismatches=(\d+)`, 2*time.Minute)
	if done[1] != "0" || done[2] != "0" {
		t.Errorf("write-verify loop after the reconnect: %s I/O error(s), %s checksum mismatch(es)", done[1], done[2])
	}
	if strings.Contains(v.Console(), "I/O error") {
		t.Errorf("the kernel reported I/O errors:\n%s", grepLines(v.Console(), "error"))
	}
	if err := v.Wait(60 * time.Second); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
}
