package nbdserver

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore/weedtest"
)

// Tests in this file run the server as a separate process — the test binary re-executed
// with NBDSERVER_TEST_OPTIONS set, which behaves like `nbdroot serve` — so they can send it
// signals and kill it.

func TestMain(m *testing.M) {
	if opts := os.Getenv("NBDSERVER_TEST_OPTIONS"); opts != "" {
		os.Exit(serveMain(opts))
	}
	code := m.Run()
	weedtest.StopShared()
	os.Exit(code)
}

// serveMain is what cmd/nbdroot/serve.go does, minus flag parsing.
func serveMain(opts string) int {
	var o Options
	if err := json.Unmarshal([]byte(opts), &o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	o.Log = os.Stderr
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan struct{})
	go func() {
		for range hup {
			reload <- struct{}{}
		}
	}()
	if err := Run(ctx, o, reload); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

type proc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

// startProc starts a server process and waits for its "listening on" line.
func startProc(t *testing.T, o Options, wrap ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if o.StateDir == "" {
		o.StateDir = t.TempDir()
	}
	js, _ := json.Marshal(o)
	args := append(wrap, exe, "-test.run=^$")
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "NBDSERVER_TEST_OPTIONS="+string(js))
	p := &proc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = pw
	return p.start(t, pr, pw)
}

func (p *proc) start(t *testing.T, pr, pw *os.File) *proc {
	t.Helper()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			p.stderr.Write([]byte(line + "\n"))
			if a, ok := strings.CutPrefix(line, "listening on "); ok {
				select {
				case addrc <- a:
				default:
				}
			}
		}
	}()
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("server process log:\n%s", p.stderr)
		}
	})
	select {
	case p.addr = <-addrc:
	case <-p.done:
		t.Fatalf("server exited: %v\n%s", p.err, p.stderr)
	case <-time.After(20 * time.Second):
		t.Fatalf("no 'listening on' line:\n%s", p.stderr)
	}
	return p
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("server did not exit:\n%s", p.stderr)
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestProcessSIGTERM(t *testing.T) {
	img := makeImage(t, testSize)
	p := startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + img}, DrainTimeout: 3 * time.Second})
	c := connectTest(t, p.addr, "root", false)
	c.pwrite(0, []byte("persisted before SIGTERM"), 0)
	p.cmd.Process.Signal(syscall.SIGTERM)
	waitFor(t, "shutdown to start", func() bool { return strings.Contains(p.stderr.String(), "shutting down") })
	// Requests that arrive during the drain are refused with ESHUTDOWN (proto.md).
	if rp := c.do(nbd.CmdRead, 0, 0, 512, nil); rp.Errno != nbd.ESHUTDOWN {
		t.Errorf("request after SIGTERM: %v, want ESHUTDOWN", nbd.Errno(rp.Errno))
	}
	c.disconnect()
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d after SIGTERM\n%s", code, p.stderr)
	}
	file, _ := os.ReadFile(img)
	if !bytes.HasPrefix(file, []byte("persisted before SIGTERM")) {
		t.Error("acknowledged write lost across SIGTERM")
	}
	for _, want := range []string{"export \"root\"", "NBD_OPT_GO export \"root\" read-write", "closed export \"root\"", "stopped"} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, p.stderr)
		}
	}
}

func TestProcessSIGHUPReload(t *testing.T) {
	dir := t.TempDir()
	img1, img2 := makeImage(t, testSize), makeImage(t, 2*testSize)
	cfgPath := filepath.Join(dir, "config")
	write := func(text string) {
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("[generic]\nallowlist = true\n[a]\nexportname = " + img1 + "\n")
	p := startProc(t, Options{ConfigFile: cfgPath, Listen: []string{"127.0.0.1:0"}})
	a := connectTest(t, p.addr, "a", false)
	a.pwrite(0, []byte("a"), 0)

	write("[generic]\nallowlist = true\n[a]\nexportname = " + img1 + "\n[b]\nexportname = " + img2 + "\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "reload", func() bool { return strings.Contains(p.stderr.String(), "configuration reloaded") })
	b := connectTest(t, p.addr, "b", true)
	if b.info.Size != 2*testSize {
		t.Errorf("new export b has size %d", b.info.Size)
	}
	// The connection made before the reload is still served.
	if got := a.pread(0, 1); string(got) != "a" {
		t.Errorf("old connection reads %q", got)
	}

	// A broken file is reported and the running configuration kept.
	write("[generic]\n[a]\nreadonly = maybe\n")
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "failed reload", func() bool { return strings.Contains(p.stderr.String(), "reload failed") })
	connectTest(t, p.addr, "b", false).disconnect()
	a.disconnect()
	b.disconnect()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

// systemd socket activation: the listening socket arrives as descriptor 3 with
// LISTEN_PID/LISTEN_FDS naming this process.
func TestProcessSocketActivation(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	img := makeImage(t, testSize)
	exe, _ := os.Executable()
	js, _ := json.Marshal(Options{Exports: []string{"root=" + img}, StateDir: t.TempDir()})
	// The shell sets LISTEN_PID to its own PID and execs the server, keeping that PID.
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=nbd exec "$0" -test.run='^$'`, exe)
	cmd.Env = append(os.Environ(), "NBDSERVER_TEST_OPTIONS="+string(js))
	cmd.ExtraFiles = []*os.File{f}
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	p := (&proc{cmd: cmd, stderr: &syncBuffer{}, done: make(chan struct{})}).start(t, pr, pw)
	f.Close()
	if p.addr != addr {
		t.Errorf("listening on %s, want the activated socket %s", p.addr, addr)
	}
	c := connectTest(t, addr, "root", false)
	if got := c.pread(0, 8); !bytes.Equal(got, pattern(0, 8)) {
		t.Error("wrong data through the activated socket")
	}
	c.disconnect()
}

func TestActivationListenersEnv(t *testing.T) {
	if lns, err := activationListeners("", "", "", 1); lns != nil || err != nil {
		t.Errorf("no variables: %v %v", lns, err)
	}
	if lns, err := activationListeners("999", "1", "", 1); lns != nil || err != nil {
		t.Errorf("another process's sockets were taken: %v %v", lns, err)
	}
	if _, err := activationListeners("1", "x", "", 1); err == nil {
		t.Error("bad LISTEN_FDS accepted")
	}
}

// TestCrashSIGKILL: a writer records which writes were acknowledged before it sent a FLUSH
// that was then answered; the server is killed with SIGKILL at a random moment while more
// writes and flushes are in flight, restarted, and every such write must read back. 20
// trials, on a plain export and a persistent copy-on-write export (whose bitmap lives in
// the server's memory between flushes).
func TestCrashSIGKILL(t *testing.T) {
	const trials, region = 20, 1 << 20
	dir := t.TempDir()
	img := filepath.Join(dir, "plain.img")
	base := filepath.Join(dir, "base.img")
	for _, p := range []string{img, base} {
		if err := os.WriteFile(p, make([]byte, trials*region), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	o := Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"plain=" + img, "cow=" + base + ",cowdir=" + filepath.Join(dir, "cow")}}
	type write struct {
		export string
		off    int
		data   []byte
	}
	var durable []write // acknowledged before a FLUSH that was answered, over all trials
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := 0; trial < trials; trial++ {
		p := startProc(t, o)
		for _, export := range []string{"plain", "cow"} {
			c := connectTest(t, p.addr, export, false)
			c.nc.SetDeadline(time.Now().Add(60 * time.Second))
			// Unique, non-overlapping ranges in this trial's region.
			pos := trial * region
			var acked []write
			inflight := map[uint64]write{}
			killAt := 50 + rng.IntN(150)
			for i := 0; ; i++ {
				if export == "cow" && i == killAt {
					p.cmd.Process.Signal(syscall.SIGKILL)
					break
				}
				if export == "plain" && i == 120 {
					break
				}
				n := 512 + rng.IntN(8192)
				if pos+n > (trial+1)*region {
					break
				}
				w := write{export, pos, make([]byte, n)}
				for j := range w.data {
					w.data[j] = byte(rng.Uint32() | 1)
				}
				pos += n
				inflight[c.send(nbd.CmdWrite, 0, uint64(w.off), uint32(n), w.data)] = w
				// Collect a few replies now and then; every 10 writes, flush what is
				// acknowledged so far.
				if i%10 == 9 {
					for len(inflight) > 0 {
						rp, err := c.recv()
						if err != nil {
							t.Fatal(err)
						}
						if rp.Errno != 0 {
							t.Fatalf("write: %v", nbd.Errno(rp.Errno))
						}
						acked = append(acked, inflight[rp.Handle])
						delete(inflight, rp.Handle)
					}
					covered := len(acked)
					if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
						t.Fatalf("flush: %v", nbd.Errno(rp.Errno))
					}
					durable = append(durable, acked[:covered]...)
					acked = acked[covered:]
				}
			}
			if export == "plain" {
				c.disconnect()
			}
		}
		p.wait(t)
		// Restart and check everything made durable so far, in every trial.
		p = startProc(t, o)
		conns := map[string]*testClient{"plain": connectTest(t, p.addr, "plain", false), "cow": connectTest(t, p.addr, "cow", false)}
		// Pipelined reads: write all requests from a goroutine, check replies here.
		want := map[*testClient]map[uint64]write{}
		wires := map[*testClient][]byte{}
		for _, w := range durable {
			c := conns[w.export]
			h, b := c.queue(nbd.CmdRead, 0, uint64(w.off), uint32(len(w.data)), nil)
			if want[c] == nil {
				want[c] = map[uint64]write{}
			}
			want[c][h] = w
			wires[c] = append(wires[c], b...)
		}
		for c, wire := range wires {
			go c.rw.Write(wire)
			for len(c.pending) > 0 {
				rp, err := c.recv()
				if err != nil {
					t.Fatal(err)
				}
				if w := want[c][rp.Handle]; rp.Errno != 0 || !bytes.Equal(rp.Data, w.data) {
					t.Fatalf("trial %d: %s write at %d (%d bytes) acknowledged before a FLUSH was lost", trial, w.export, w.off, len(w.data))
				}
			}
		}
		for _, c := range conns {
			c.disconnect()
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t)
	}
	t.Logf("%d trials, %d flushed writes checked after SIGKILL, none lost", trials, len(durable))
}

// user/group (nbd-server's settings, or --user/--group) are switched to after listening
// and before the images are opened.
func TestProcessDropPrivileges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to switch user")
	}
	dir, err := os.MkdirTemp("", "nbdserver-privs-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	img := filepath.Join(dir, "disk.img")
	os.WriteFile(img, pattern(0, testSize), 0o666)
	os.Chmod(img, 0o666) // whatever the umask
	p := startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + img}, User: "nobody", Group: "nogroup"})
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "Uid:") && !strings.Contains(line, "65534") {
			t.Errorf("server still runs as %s", line)
		}
	}
	c := connectTest(t, p.addr, "root", false)
	c.pwrite(0, []byte("as nobody"), nbd.CmdFlagFUA)
	c.disconnect()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
