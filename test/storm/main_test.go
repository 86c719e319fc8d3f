package storm

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver"
)

// Tests that measure time run the server as a process of its own — this test binary
// re-executed with STORM_TEST_SERVE set — so its scheduling is not shared with the clients'.
func TestMain(m *testing.M) {
	if opts := os.Getenv("STORM_TEST_SERVE"); opts != "" {
		var o nbdserver.Options
		if err := json.Unmarshal([]byte(opts), &o); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		o.Log = os.Stderr
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
		defer stop()
		if err := nbdserver.Run(ctx, o, nil); err != nil {
			fmt.Fprintln(os.Stderr, "serve:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// startProcServer serves image read-only from a server process and returns its address.
func startProcServer(t *testing.T, image string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	js, _ := json.Marshal(nbdserver.Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + image + ",readonly"}})
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "STORM_TEST_SERVE="+string(js))
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
	})
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				addr <- a
			}
		}
	}()
	select {
	case a := <-addr:
		return a
	case <-time.After(20 * time.Second):
		t.Fatal("server process did not start listening")
	}
	return ""
}
