// Package vm runs QEMU guests for nbdroot's boot tests: the Debian test kernel, an initramfs
// of ours, user networking restricted to our own NBD server on loopback, and a serial console
// the test reads and writes.
//
// QEMU always runs with TCG: /dev/kvm on the CI machines does not run normal guests. Set
// NBDROOT_KVM=1 to allow KVM where it works.
package vm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// GuestServerIP is where guests reach the NBD server: slirp forwards connections to this
// address to a socat that connects to the server on the host's loopback.
const GuestServerIP = "10.0.2.100"

// TB is the part of testing.TB the harness uses, so that `make demo` can drive it too.
type TB interface {
	Helper()
	Name() string
	Failed() bool
	Cleanup(func())
	Logf(format string, args ...any)
	Fatalf(format string, args ...any)
	Fatal(args ...any)
	TempDir() string
}

// Options describe one guest.
type Options struct {
	// Kernel and Initrd are passed with -kernel/-initrd unless PXE is set.
	Kernel, Initrd string
	// Append is the kernel command line (console=ttyS0 is added when missing).
	Append string
	// Forwards maps guest ports on GuestServerIP to host loopback ports.
	Forwards map[int]int
	// PXE boots from the network: slirp's DHCP names BootFile (a TFTP file, or an http://
	// URL iPXE fetches), slirp's TFTP server serves TFTPDir when set.
	PXE      bool
	TFTPDir  string
	BootFile string
	// NICs is the number of virtio NICs (default 1); NIC model for PXE boots is virtio too.
	NICs int
	// MACs optionally fixes the NICs' MAC addresses.
	MACs []string
	// NICModel is the QEMU NIC device (default virtio-net-pci).
	NICModel string
	// MemoryMB defaults to 512.
	MemoryMB int
	// CPUs is the number of virtual CPUs (default 1). More than one uses multi-threaded TCG.
	CPUs int
	// Timeout is the hard limit of the whole guest run (default 3 minutes).
	Timeout time.Duration
	// ExtraArgs are appended to QEMU's arguments (e.g. a tap netdev).
	ExtraArgs []string
	// NoNet leaves out the default user network (ExtraArgs provides one).
	NoNet bool
	// Wrapper runs QEMU through a command, e.g. {"ip", "netns", "exec", "lab0"} to put it in
	// a test network namespace where its tap device lives.
	Wrapper []string
	// QMP opens QEMU's machine protocol on a socket, for SendKeys.
	QMP bool
	// Arch is the guest's architecture: "" or "amd64" (a PC), or "arm64" (QEMU's virt
	// board with a Cortex-A57, its PL011 serial port as ttyAMA0).
	Arch string
}

// machine returns the QEMU program, its machine arguments and the serial console's name
// for an architecture.
func machine(arch string) (prog string, args []string, console string, err error) {
	switch arch {
	case "", "amd64":
		return "qemu-system-x86_64", nil, "ttyS0", nil
	case "arm64":
		return "qemu-system-aarch64", []string{"-M", "virt", "-cpu", "cortex-a57"}, "ttyAMA0", nil
	}
	return "", nil, "", fmt.Errorf("no QEMU machine for architecture %q", arch)
}

// VM is a running guest.
type VM struct {
	t      TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	cancel context.CancelFunc

	mu     sync.Mutex
	cond   *sync.Cond
	out    bytes.Buffer // the whole console output
	closed bool         // the console reached EOF (QEMU exited)
	done   chan struct{}
	err    error

	qmpDir string // the QMP socket's directory, with Options.QMP
	qmp    *qmp
}

// Start boots a guest; the test's cleanup kills it and, when the test failed, keeps its
// console log in LogDir.
func Start(t TB, o Options) *VM {
	t.Helper()
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Minute
	}
	args, err := qemuArgs(o)
	if err != nil {
		t.Fatal(err)
	}
	qmpDir := ""
	if o.QMP {
		// A short directory: unix socket paths are limited to 108 bytes.
		if qmpDir, err = os.MkdirTemp("", "qmp"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(qmpDir) })
		args = append(args, "-qmp", "unix:"+qmpPath(qmpDir)+",server=on,wait=off")
	}
	prog, _, _, err := machine(o.Arch)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.Timeout)
	argv := append(append([]string(nil), o.Wrapper...), prog)
	cmd := exec.CommandContext(ctx, argv[0], append(argv[1:], args...)...)
	cmd.WaitDelay = 5 * time.Second
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	v := &VM{t: t, cmd: cmd, stdin: stdin, cancel: cancel, done: make(chan struct{}), qmpDir: qmpDir}
	v.cond = sync.NewCond(&v.mu)
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start qemu: %v", err)
	}
	go v.read(stdout)
	go func() {
		err := cmd.Wait()
		v.mu.Lock()
		v.err = err
		v.mu.Unlock()
		close(v.done)
	}()
	t.Cleanup(func() {
		v.Kill()
		if t.Failed() {
			path := saveLog(t, v.Console())
			t.Logf("console log kept in %s", path)
		}
	})
	return v
}

func qemuArgs(o Options) ([]string, error) {
	mem := o.MemoryMB
	if mem == 0 {
		mem = 512
	}
	accel := "tcg"
	if os.Getenv("NBDROOT_KVM") == "1" {
		accel = "kvm:tcg"
	}
	cpus := o.CPUs
	if cpus == 0 {
		cpus = 1
	}
	if cpus > 1 && accel == "tcg" {
		accel = "tcg,thread=multi"
	}
	_, machineArgs, console, err := machine(o.Arch)
	if err != nil {
		return nil, err
	}
	args := append(machineArgs, "-accel", accel, "-m", fmt.Sprint(mem), "-smp", fmt.Sprint(cpus),
		"-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot", "-nodefaults")
	if !o.PXE {
		app := o.Append
		if !strings.Contains(app, "console=") {
			app += " console=" + console
		}
		// A panic reboots at once, and -no-reboot makes that QEMU's exit: the test fails
		// on the spot instead of waiting out its timeout.
		if !strings.Contains(app, "panic=") {
			app += " panic=-1"
		}
		// Under TCG on a loaded host the kernel's IO-APIC timer check can time out and
		// panic ("IO-APIC + timer doesn't work"); virtual machines skip it.
		if o.Arch == "" || o.Arch == "amd64" {
			if !strings.Contains(app, "no_timer_check") {
				app += " no_timer_check"
			}
		}
		args = append(args, "-kernel", o.Kernel, "-initrd", o.Initrd, "-append", strings.TrimSpace(app))
	} else {
		args = append(args, "-boot", "n")
	}
	if !o.NoNet {
		nics := o.NICs
		if nics == 0 {
			nics = 1
		}
		model := o.NICModel
		if model == "" {
			model = "virtio-net-pci"
		}
		for i := 0; i < nics; i++ {
			netdev := fmt.Sprintf("user,id=n%d,restrict=on", i)
			for guest, host := range o.Forwards {
				// One socat per guest connection; -lf keeps socat's own messages out of
				// the guest's stream; commas are doubled for QEMU's option parser.
				netdev += fmt.Sprintf(",guestfwd=tcp:%s:%d-cmd:socat -lf /dev/null - TCP:127.0.0.1:%d", GuestServerIP, guest, host)
			}
			if o.PXE && i == 0 {
				if o.TFTPDir != "" {
					netdev += ",tftp=" + o.TFTPDir
				}
				// An http:// bootfile goes to QEMU's iPXE ROM as the DHCP file name.
				netdev += ",bootfile=" + o.BootFile
			}
			dev := fmt.Sprintf("%s,netdev=n%d", model, i)
			if i < len(o.MACs) {
				dev += ",mac=" + o.MACs[i]
			}
			if i > 0 || !o.PXE {
				// Only the first NIC may carry a boot ROM; the others never PXE-boot.
				dev += ",romfile="
			}
			args = append(args, "-netdev", netdev, "-device", dev)
		}
	}
	return append(args, o.ExtraArgs...), nil
}

func (v *VM) read(r io.Reader) {
	br := bufio.NewReader(r)
	buf := make([]byte, 4096)
	for {
		n, err := br.Read(buf)
		v.mu.Lock()
		v.out.Write(buf[:n])
		if err != nil {
			v.closed = true
		}
		v.cond.Broadcast()
		v.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Console returns everything the guest printed so far.
func (v *VM) Console() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.out.String()
}

// Expect waits until the console matches re (searched from the beginning of the output) and
// returns the match; it fails the test after timeout or when the guest exits first.
func (v *VM) Expect(re string, timeout time.Duration) []string {
	v.t.Helper()
	m, err := v.wait(regexp.MustCompile(re), 0, timeout)
	if err != nil {
		v.t.Fatalf("waiting for %q: %v\n--- console tail ---\n%s", re, err, tail(v.Console(), 40))
	}
	return m
}

// ExpectAfter is Expect, searching only the output after the first offset bytes; it
// returns the match and the offset just past it, so a test can wait for things in order.
func (v *VM) ExpectAfter(offset int, re string, timeout time.Duration) ([]string, int) {
	v.t.Helper()
	rx := regexp.MustCompile(re)
	m, err := v.wait(rx, offset, timeout)
	if err != nil {
		v.t.Fatalf("waiting for %q: %v\n--- console tail ---\n%s", re, err, tail(v.Console(), 40))
	}
	out := v.Console()
	loc := rx.FindStringIndex(out[offset:])
	return m, offset + loc[1]
}

func (v *VM) wait(re *regexp.Regexp, offset int, timeout time.Duration) ([]string, error) {
	deadline := time.Now().Add(timeout)
	timer := time.AfterFunc(timeout, func() {
		v.mu.Lock()
		v.cond.Broadcast()
		v.mu.Unlock()
	})
	defer timer.Stop()
	v.mu.Lock()
	defer v.mu.Unlock()
	for {
		if offset <= v.out.Len() {
			if m := re.FindStringSubmatch(v.out.String()[offset:]); m != nil {
				return m, nil
			}
		}
		if v.closed {
			return nil, errors.New("the guest exited")
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not seen within %s", timeout)
		}
		v.cond.Wait()
	}
}

// Send types s into the serial console.
func (v *VM) Send(s string) {
	v.t.Helper()
	if _, err := io.WriteString(v.stdin, s); err != nil {
		v.t.Fatalf("type into the console: %v", err)
	}
}

// Wait waits for QEMU to exit (the guest powered off) and returns its error.
func (v *VM) Wait(timeout time.Duration) error {
	select {
	case <-v.done:
		v.mu.Lock()
		defer v.mu.Unlock()
		return v.err
	case <-time.After(timeout):
		return fmt.Errorf("guest still running after %s", timeout)
	}
}

// Kill stops the guest.
func (v *VM) Kill() {
	v.cancel()
	<-v.done
	if v.qmp != nil {
		v.qmp.conn.Close()
	}
}

// LogDir is where failed tests keep their console logs: $NBDROOT_LOGS or build/test-logs.
func LogDir() string {
	if d := os.Getenv("NBDROOT_LOGS"); d != "" {
		return d
	}
	if b := os.Getenv("NBDROOT_BUILD"); b != "" {
		return filepath.Join(b, "test-logs")
	}
	return filepath.Join(os.TempDir(), "nbdroot-test-logs")
}

func saveLog(t TB, log string) string {
	dir := LogDir()
	os.MkdirAll(dir, 0o755)
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + ".log"
	path := filepath.Join(dir, name)
	os.WriteFile(path, []byte(log), 0o644)
	return path
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// Match reports whether the regular expression re matches s.
func Match(s, re string) bool { return regexp.MustCompile(re).MatchString(s) }
