package rescue

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func runShell(t *testing.T, input string, applets map[string]Applet) string {
	t.Helper()
	var out bytes.Buffer
	sh := &Shell{In: strings.NewReader(input), Out: &out, Err: &out, Banner: "banner\n", Applets: applets}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sh.Run(ctx); err != nil && !errors.Is(err, ErrInputClosed) {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	return out.String()
}

func TestShell(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from a file\n"), 0o644)
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	tests := []struct {
		name, input string
		want        []string
		notWant     []string
	}{
		{"arithmetic and echo", "echo rescue-$((6*7))\n", []string{"banner\n", "nbdroot# ", "rescue-42\n"}, nil},
		{"cat applet", "cat " + dir + "/hello.txt\n", []string{"hello from a file"}, nil},
		{"ls applet", "ls " + dir + "\n", []string{"hello.txt\n", "sub\n"}, nil},
		{"cd then relative ls", "cd " + dir + "; ls sub hello.txt\n", []string{"hello.txt"}, nil},
		{"missing file", "cat /nonexistent/x || echo failed-$?\n", []string{"cat: open /nonexistent/x", "failed-1"}, nil},
		{"unknown command", "no-such-command-xyz\necho after\n", []string{"after\n"}, nil},
		{"exit stops reading", "exit\necho never\n", nil, []string{"never"}},
		{"syntax error recovers", "echo ((\necho recovered\n", []string{"recovered"}, nil},
		{"multi-line", "if true; then\necho inside\nfi\n", []string{"> ", "inside"}, nil},
		{"help lists applets", "help\n", []string{"built-in commands:", " ls ", " mount "}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := runShell(t, tt.input, nil)
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestShellRunsAppletsInProcess(t *testing.T) {
	var got []string
	applets := map[string]Applet{
		"probe": func(_ context.Context, args []string, stdio IO) int {
			got = append(got, strings.Join(args, " "))
			stdio.Out.Write([]byte("probed\n"))
			return 3
		},
	}
	out := runShell(t, "probe a b; echo status=$?\n/bin/probe c\n", applets)
	if !strings.Contains(out, "probed") || !strings.Contains(out, "status=3") {
		t.Errorf("output:\n%s", out)
	}
	if len(got) != 2 || got[0] != "probe a b" || got[1] != "/bin/probe c" {
		t.Errorf("applet calls %q", got)
	}
}

func TestSleepHonoursCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var out bytes.Buffer
	if code := sleep(ctx, []string{"sleep", "100"}, IO{Out: &out, Err: &out}); code != 130 {
		t.Errorf("sleep after cancel = %d, want 130", code)
	}
	if code := sleep(context.Background(), []string{"sleep", "x"}, IO{Out: &out, Err: &out}); code != 2 {
		t.Errorf("sleep x = %d, want 2", code)
	}
}

func TestShellEnd(t *testing.T) {
	for _, tt := range []struct {
		input string
		want  error
	}{
		{"echo a\nexit\n", nil},
		{"echo a\n", ErrInputClosed},
		{"", ErrInputClosed},
	} {
		var out bytes.Buffer
		sh := &Shell{In: strings.NewReader(tt.input), Out: &out, Err: &out}
		if err := sh.Run(context.Background()); !errors.Is(err, tt.want) {
			t.Errorf("Run(%q) = %v, want %v", tt.input, err, tt.want)
		}
	}
}
