package nbdserver

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// stamp is what log.LstdFlags puts before a line.
var stamp = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d `)

// Run with an nbd-server configuration naming a missing image: the export is logged and
// skipped and the others are served, or with Strict nothing starts. Lines carry a time
// unless journald reads them; logfile takes the log.
func TestRunLogAndBrokenExports(t *testing.T) {
	for _, tt := range []struct {
		name             string
		journal, logfile bool
		strict           bool
	}{
		{name: "stderr with times"},
		{name: "journald", journal: true},
		{name: "logfile", logfile: true},
		{name: "logfile under journald", logfile: true, journal: true},
		{name: "strict", strict: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			img := makeImage(t, testSize)
			logPath := filepath.Join(dir, "nbd-server.log")
			generic := ""
			if tt.logfile {
				generic = "logfile = " + logPath + "\n"
			}
			cfg := filepath.Join(dir, "config")
			text := fmt.Sprintf("[generic]\n%s[gone]\nexportname = %s\n[root]\nexportname = %s\n", generic, filepath.Join(dir, "missing.img"), img)
			if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
				t.Fatal(err)
			}
			var stderr syncBuffer
			o := Options{ConfigFile: cfg, Listen: []string{"127.0.0.1:0"}, StateDir: dir, Log: &stderr, Journal: tt.journal, Strict: tt.strict}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Run(ctx, o, nil) }()
			if tt.strict {
				select {
				case err := <-done:
					if err == nil || !strings.Contains(err.Error(), `export "gone": image: stat `) || !strings.Contains(err.Error(), "--strict") {
						t.Fatalf("Run: %v; want the missing image named, and --strict", err)
					}
				case <-time.After(10 * time.Second):
					cancel()
					t.Fatal("Run started despite --strict")
				}
				cancel()
				return
			}
			var addr string
			waitFor(t, "the listening line", func() bool {
				_, a, ok := strings.Cut(stderr.String(), "listening on ")
				addr, _, _ = strings.Cut(a, "\n")
				return ok && strings.HasSuffix(a, "\n")
			})
			c := connectTest(t, addr, "root", false)
			if got := c.pread(0, 16); !bytes.Equal(got, pattern(0, 16)) {
				t.Error("the export beside the broken one serves wrong data")
			}
			c.disconnect()
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}

			log := stderr.String()
			if tt.logfile {
				if strings.TrimSpace(log) != "listening on "+addr {
					t.Errorf("with logfile, stderr has more than the listening line:\n%s", log)
				}
				b, err := os.ReadFile(logPath)
				if err != nil {
					t.Fatal(err)
				}
				log = string(b)
			}
			var skipped, listening bool
			for _, line := range strings.Split(strings.TrimSpace(log), "\n") {
				if line == "listening on "+addr && !tt.logfile {
					listening = true
					continue // for the harnesses that wait for it: never stamped
				}
				stamped := stamp.MatchString(line)
				if wantStamp := tt.logfile || !tt.journal; stamped != wantStamp {
					t.Errorf("line %q: time stamp %v, want %v", line, stamped, wantStamp)
				}
				line = stamp.ReplaceAllString(line, "")
				skipped = skipped || strings.HasPrefix(line, `export "gone": image: stat `) && strings.Contains(line, "skipped, serving the others")
				listening = listening || line == "listening on "+addr
			}
			if !skipped || !listening {
				t.Errorf("log (skip line %v, listening line %v):\n%s", skipped, listening, log)
			}
		})
	}
}

// A configuration whose every export is broken does not start, strict or not.
func TestRunNothingToServe(t *testing.T) {
	dir := t.TempDir()
	o := Options{Exports: []string{"root=" + filepath.Join(dir, "missing.img")}, Listen: []string{"127.0.0.1:0"}, StateDir: dir}
	err := Run(context.Background(), o, nil)
	if err == nil || !strings.Contains(err.Error(), "no export can be served") {
		t.Fatalf("Run: %v; want no export can be served", err)
	}
}
