package main

import (
	"strings"
	"testing"
	"time"
)

// subcommands are the argument prefixes that reach each flag set.
var subcommands = [][]string{
	{"serve"}, {"initramfs"}, {"cmdline"}, {"kernelcfg", "check"}, {"kernelcfg", "fragment"},
	{"attach"}, {"detach"}, {"status"}, {"status", "--server", "x:1"},
	{"overlays", "list"}, {"overlays", "rm"}, {"install"},
}

// --help prints the help once, on stdout, and nothing on stderr.
func TestHelpOnceOnStdout(t *testing.T) {
	for _, sub := range subcommands {
		t.Run(strings.Join(sub, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(append(sub[:len(sub):len(sub)], "--help")...)
			if code != 0 || stderr != "" {
				t.Errorf("exit %d, stderr %q; want 0 and nothing", code, stderr)
			}
			if n := strings.Count(stdout, "usage: nbdroot "+sub[0]); n != 1 {
				t.Errorf("the usage is on stdout %d times, want once:\n%s", n, stdout)
			}
		})
	}
}

// A wrong flag gets one line naming it and a pointer to --help: not the help.
func TestUnknownFlag(t *testing.T) {
	for _, sub := range subcommands {
		t.Run(strings.Join(sub, " "), func(t *testing.T) {
			code, stdout, stderr := runCmd(append(sub[:len(sub):len(sub)], "--bogus")...)
			lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
			if code != 2 || stdout != "" || len(lines) != 2 {
				t.Fatalf("exit %d, stdout %q, stderr:\n%s\nwant exit 2 and two lines on stderr", code, stdout, stderr)
			}
			if want := "flag provided but not defined: -bogus"; !strings.HasSuffix(lines[0], want) {
				t.Errorf("first line %q does not end in %q", lines[0], want)
			}
			if want := " --help' lists the options"; !strings.HasPrefix(lines[1], "'nbdroot "+sub[0]) || !strings.HasSuffix(lines[1], want) {
				t.Errorf("second line %q is not the pointer to --help", lines[1])
			}
		})
	}
}

// A wrong command or subcommand is one line too.
func TestUnknownCommand(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--bogus"}, "nbdroot: unknown command \"--bogus\"\n'nbdroot --help' lists the commands\n"},
		{[]string{"kernelcfg", "checks"}, "nbdroot kernelcfg: unknown subcommand \"checks\": want check or fragment\n'nbdroot kernelcfg --help' lists the options\n"},
	} {
		if code, stdout, stderr := runCmd(tt.args...); code != 2 || stdout != "" || stderr != tt.want {
			t.Errorf("%q: exit %d, stdout %q, stderr %q; want 2 and %q", tt.args, code, stdout, stderr, tt.want)
		}
	}
}

func TestDurationFlag(t *testing.T) {
	for _, tt := range []struct {
		in       string
		negative bool
		want     time.Duration
		wantErr  string
	}{
		{in: "5", want: 5 * time.Second},
		{in: "30s", want: 30 * time.Second},
		{in: "2m", want: 2 * time.Minute},
		{in: "1.5s", want: 1500 * time.Millisecond},
		{in: "0", want: 0},
		{in: "-1", negative: true, want: -time.Second},
		{in: "-1s", negative: true, want: -time.Second},
		{in: "-1", wantErr: "must not be negative"},
		{in: "-1s", wantErr: "must not be negative"},
		{in: "", wantErr: "is not a duration"},
		{in: "x", wantErr: "is not a duration"},
		{in: "30x", wantErr: "is not a duration"},
		{in: "99999999999999", wantErr: "too long"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			var d time.Duration
			err := durationFlag{&d, tt.negative}.Set(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("%q → %v, %v; want an error with %q", tt.in, d, err, tt.wantErr)
				}
				return
			}
			if err != nil || d != tt.want {
				t.Errorf("%q → %v, %v; want %v", tt.in, d, err, tt.want)
			}
		})
	}
}

// The serve papercuts: bare-second durations, and a --listen error naming --listen.
// Each case stops at a usage error, before anything is opened.
func TestServeUsage(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"bare seconds accepted", []string{"--drain-timeout", "5", "--handshake-timeout", "10", "--overlay-grace", "60", "--listen", "127.0.0.1:99999", "--export", "a=/x"}, `--listen "127.0.0.1:99999": port "99999" must be a number from 0 to 65535`},
		{"negative drain timeout", []string{"--drain-timeout", "-1", "--listen", "x", "--export", "a=/x"}, `--listen "x": want HOST:PORT`},
		{"bad duration names the flag", []string{"--drain-timeout", "5x"}, `invalid value "5x" for flag -drain-timeout`},
		{"negative grace", []string{"--overlay-grace", "-5"}, `-overlay-grace: "-5": must not be negative`},
		{"port name", []string{"--listen", "127.0.0.1:nbd", "--export", "a=/x"}, `--listen "127.0.0.1:nbd": port "nbd" must be a number`},
		{"argument", []string{"extra"}, `unexpected argument "extra"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCmd(append([]string{"serve"}, tt.args...)...)
			if code != 2 || !strings.Contains(stderr, tt.want) || strings.Count(stderr, "\n") != 2 {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and one line with %q", code, stderr, tt.want)
			}
		})
	}
}

func TestCheckListen(t *testing.T) {
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:10809", true}, {":10809", true}, {"[::1]:0", true}, {"127.0.0.1:65535", true},
		{"127.0.0.1:65536", false}, {"127.0.0.1:-1", false}, {"127.0.0.1", false}, {"", false},
	} {
		if err := checkListen(tt.addr); (err == nil) != tt.ok {
			t.Errorf("checkListen(%q) = %v, want ok=%v", tt.addr, err, tt.ok)
		}
	}
}

// Without an argument, cmdline says that it explains this machine's own command line.
func TestCmdlineSaysProc(t *testing.T) {
	_, _, stderr := runCmd("cmdline", "--json")
	if want := "nbdroot cmdline: no CMDLINE given: explaining this machine's /proc/cmdline\n"; !strings.HasPrefix(stderr, want) {
		t.Errorf("stderr %q does not start with %q", stderr, want)
	}
	if _, _, stderr := runCmd("cmdline", "root=/dev/nbd0 nbd_server=10.0.0.1"); strings.Contains(stderr, "/proc/cmdline") {
		t.Errorf("with an argument, stderr mentions /proc/cmdline: %q", stderr)
	}
}
