// Command tracecap records the NBD I/O of one boot: it serves a root image with nbdkit's
// log filter, boots a QEMU guest from it through our initramfs, and writes the requests in
// the reduced trace format of test/storm (time, op, offset, length), for boot-storm replays.
//
//	go run ./test/cmd/tracecap -root trixie -out test/storm/testdata/debian13-systemd-boot.trace
//
// -root busybox boots the test root of the QEMU tests (a busybox tree whose init prints a
// marker and powers off); -root bookworm|trixie boots a stock Debian root with systemd
// (debootstrapped once and cached, see test/vm) to its login shell. The guest runs under
// TCG, so think times between the boot's bursts are those of an emulated CPU — several times
// a real machine's; replays that keep the pace should scale them (storm.Config.Scale).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/test/storm"
	"github.com/nbdroot/nbdroot/test/vm"
)

func main() {
	root := flag.String("root", "busybox", "what to boot: busybox (the QEMU tests' root), bookworm or trixie")
	out := flag.String("out", "", "trace file to write (required)")
	build := flag.String("build", "build", "directory with the nbdroot binaries")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "tracecap: -out is required")
		os.Exit(2)
	}
	if err := capture(*root, *out, *build); err != nil {
		fmt.Fprintln(os.Stderr, "tracecap:", err)
		os.Exit(1)
	}
}

// busyboxInit is the test root's init: up, then off.
const busyboxInit = `echo TRACECAP-ROOT-UP
poweroff -f
`

func capture(root, out, build string) (err error) {
	defer func() {
		// The harness reports fatal problems by panicking (it stands in for testing.T).
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	if _, err := exec.LookPath("nbdkit"); err != nil {
		return errors.New("nbdkit not installed (make deps)")
	}
	abs, err := filepath.Abs(build)
	if err != nil {
		return err
	}
	os.Setenv("NBDROOT_BUILD", abs)
	r := vm.NewRunner("tracecap")
	defer r.Close()
	e, err := vm.NewEnv()
	if err != nil || e == nil {
		return fmt.Errorf("test environment (NBDROOT_KERNEL and the binaries): %v", err)
	}
	defer e.Close()

	var img, kernel, initrd, ready, desc string
	var mem int
	switch root {
	case "busybox":
		img = e.RootImage(r, vm.RootOptions{Init: busyboxInit})
		kernel, initrd, ready = e.Vmlinuz(), e.Initramfs(r, hooks), "TRACECAP-ROOT-UP"
		desc = "the QEMU tests' busybox root (test/vm RootImage), test kernel"
	case "bookworm", "trixie":
		img = e.DebianImage(r, root, vm.DebianImageOptions{})
		tree := vm.DebianRoot(r, root)
		rel, vmlinuz := vm.DebianKernel(r, tree)
		kernel, initrd, ready, mem = vmlinuz, e.InitramfsFromRoot(r, tree, hooks), vm.DebianShellPrompt, 1024
		desc = fmt.Sprintf("Debian %s (minbase + %s), its kernel %s, systemd to the login shell", root, strings.Join(vm.DebianPackages, ","), rel)
	default:
		return fmt.Errorf("-root %q: want busybox, bookworm or trixie", root)
	}

	logFile := filepath.Join(r.TempDir(), "nbdkit.log")
	port, stop, err := startNbdkit(img, logFile)
	if err != nil {
		return err
	}
	defer stop()
	start := time.Now()
	v := vm.Start(r, vm.Options{
		Kernel: kernel, Initrd: initrd, MemoryMB: mem,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw console=ttyS0",
		Forwards: map[int]int{10809: port},
		Timeout:  10 * time.Minute,
	})
	v.Expect(ready, 8*time.Minute)
	booted := time.Since(start)
	// Only the boot: what the log holds now. The shell and the power-off come after.
	logged, err := os.ReadFile(logFile)
	if err != nil {
		return err
	}
	if root != "busybox" {
		v.Send("poweroff\n")
	}
	v.Wait(2 * time.Minute)
	stop()
	logged = logged[:strings.LastIndexByte(string(logged), '\n')+1]
	bootTr, err := storm.ParseTrace(strings.NewReader(string(logged)), filepath.Base(out))
	if err != nil {
		return err
	}
	reads, bytes := 0, uint64(0)
	for _, op := range bootTr.Reads() {
		reads++
		bytes += uint64(op.Length)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	werr := bootTr.Write(f, start,
		"nbdroot boot trace, recorded by test/cmd/tracecap with nbdkit's log filter: "+desc+".",
		fmt.Sprintf("QEMU TCG guest (think times are an emulated CPU's), nbdroot initramfs (hooks %s); %d requests, %d reads of %d MiB.", hooks, len(bootTr.Ops), reads, bytes>>20),
		"Format: time, op, offset, length (test/storm.ParseTrace).")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	fmt.Fprintf(os.Stderr, "tracecap: %d requests (%d reads, %d MiB) in %v → %s\n", len(bootTr.Ops), reads, bytes>>20, booted.Round(time.Second), out)
	return werr
}

// hooks are the initramfs hooks of the seed's setup (an unencrypted NBD root).
const hooks = "base udev net nbd filesystems"

// startNbdkit serves img read-write with the log filter on a free loopback port.
func startNbdkit(img, logFile string) (int, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "nbdkit", "-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
		"--filter=log", "file", img, "logfile="+logFile)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		cancel()
		return 0, nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	stop := func() {
		cancel()
		<-done
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return port, stop, nil
		}
	}
	stop()
	return 0, nil, fmt.Errorf("nbdkit not accepting on %s", addr)
}
