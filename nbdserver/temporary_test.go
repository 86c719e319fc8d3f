package nbdserver

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A temporary export (nbd-server "temporary") serves a fresh image of filesize bytes that
// leaves no file behind, and keeps its data across a reload.
func TestRunTemporaryExport(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	text := "[generic]\n[scratch]\nexportname = " + filepath.Join(dir, "scratch") + "\nfilesize = 1048576\ntemporary = true\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{ConfigFile: cfg, Listen: []string{"127.0.0.1:0"}, StateDir: t.TempDir(), Log: &stderr}, reload)
	}()
	var addr string
	waitFor(t, "the listening line", func() bool {
		_, a, ok := strings.Cut(stderr.String(), "listening on ")
		addr, _, _ = strings.Cut(a, "\n")
		return ok && strings.HasSuffix(a, "\n")
	})
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the temporary image left a file beside the configuration: %v", ents)
	}
	c := connectTest(t, addr, "scratch", false)
	if got := c.pread(0, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("a fresh temporary image does not read as zeroes")
	}
	c.pwrite(1<<20-5, []byte("hello"), 0)
	c.disconnect()

	reload <- struct{}{}
	waitFor(t, "the reload", func() bool { return strings.Contains(stderr.String(), "configuration reloaded") })
	c = connectTest(t, addr, "scratch", false)
	if got := c.pread(1<<20-5, 5); string(got) != "hello" {
		t.Errorf("after a reload the temporary image reads %q, want hello", got)
	}
	c.disconnect()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

func TestTemporaryRefused(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name string
		e    Export
		want string
	}{
		{"without filesize", Export{Name: "x", Path: filepath.Join(dir, "x"), Temporary: true}, "temporary needs filesize"},
		{"outside Run", Export{Name: "x", Path: filepath.Join(dir, "x"), Temporary: true, CreateSize: 4096}, "made by Run"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Exports: []Export{tt.e}, StateDir: t.TempDir()})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v; want %q", err, tt.want)
			}
		})
	}
}
