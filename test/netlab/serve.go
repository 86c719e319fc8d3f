//go:build linux

package netlab

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// NBDServer is an `nbdroot serve` process listening inside a lab.
type NBDServer struct {
	// Addr is where it listens (ServerIP:port); Port its port.
	Addr string
	Port int

	cmd  *exec.Cmd
	out  *lineWriter
	done chan struct{}
}

var listenRe = regexp.MustCompile(`listening on (\S+)`)

// StartNBDServer runs `bin serve --listen ServerIP:0 args…` inside the lab (ip netns exec)
// and waits for its "listening on ADDR" line. The test's cleanup stops it and, when the test
// failed, logs what it printed.
func (l *Lab) StartNBDServer(t testing.TB, bin string, args ...string) *NBDServer {
	t.Helper()
	argv := append([]string{"netns", "exec", l.Name, bin, "serve", "--listen", net.JoinHostPort(ServerIP, "0")}, args...)
	cmd := exec.Command("ip", argv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &NBDServer{cmd: cmd, out: newLineWriter(), done: make(chan struct{})}
	cmd.Stdout = &stdoutTo{s.out} // the log lines are on stderr; anything else joins the log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start nbdroot serve in %s: %v", l.Name, err)
	}
	go func() {
		s.out.copyLines(bufio.NewScanner(stderr))
		cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("nbdroot serve in %s printed:\n%s", l.Name, s.out.String())
		}
	})
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-s.out.lines:
			if !ok {
				<-s.done
				t.Fatalf("nbdroot serve exited (%v):\n%s", cmd.ProcessState, s.out.String())
			}
			m := listenRe.FindStringSubmatch(line)
			if m == nil {
				continue
			}
			_, port, err := net.SplitHostPort(m[1])
			if err != nil {
				t.Fatalf("nbdroot serve: %q: %v", line, err)
			}
			s.Addr = m[1]
			s.Port, _ = strconv.Atoi(port)
			return s
		case <-timeout:
			t.Fatalf("nbdroot serve did not listen within 20s:\n%s", s.out.String())
		}
	}
}

// Log returns what the server printed so far.
func (s *NBDServer) Log() string { return s.out.String() }

// Stop ends the server (SIGINT, then SIGKILL after 10 s) and waits for it.
func (s *NBDServer) Stop() {
	if s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// stdoutTo appends a process's standard output to a lineWriter's buffer.
type stdoutTo struct{ w *lineWriter }

func (o *stdoutTo) Write(p []byte) (int, error) {
	o.w.mu.Lock()
	defer o.w.mu.Unlock()
	o.w.buf.Write(p)
	return len(p), nil
}
