package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbdclient"
	"github.com/nbdroot/nbdroot/nbdserver"
)

func runCmd(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// noNBDKernel skips tests of the error path on a kernel that has the nbd driver.
func noNBDKernel(t *testing.T) {
	t.Helper()
	if _, err := nbdclient.OpenKernel(); err == nil {
		t.Skip("this kernel has the nbd netlink family")
	}
	if m, _ := filepath.Glob("/sys/block/nbd*"); len(m) > 0 {
		t.Skip("this kernel has NBD devices")
	}
}

func TestAttachUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no server", []string{"attach"}, 2, "give exactly one SERVER[:PORT]"},
		{"two servers", []string{"attach", "a", "b"}, 2, "give exactly one SERVER[:PORT]"},
		{"bad server", []string{"attach", "a:b:c"}, 2, `"a:b:c" is not SERVER[:PORT]`},
		{"bad port", []string{"attach", "a:99999"}, 2, `"a:99999" is not SERVER[:PORT]: port must be 1-65535`},
		{"not an nbd device", []string{"attach", "a", "--device", "/dev/sda"}, 2, `"/dev/sda" is not an NBD device`},
		{"connections", []string{"attach", "a", "--connections", "0"}, 2, "--connections 0: must be 1-64"},
		{"block size", []string{"attach", "a", "--block-size", "1000"}, 2, "--block-size 1000: must be a power of two"},
		{"timeout", []string{"attach", "--timeout", "soon", "a"}, 2, `"soon" is not a duration`},
		{"unknown flag", []string{"attach", "a", "--persist"}, 2, "flag provided but not defined: -persist"},
		{"identity with a slash", []string{"attach", "a", "--id", "lab/pc1"}, 2, `--id "lab/pc1": bad client identity: "lab/pc1" contains '/'`},
		{"identity too long", []string{"attach", "a", "--id", strings.Repeat("x", 65)}, 2, "65 bytes (at most 64)"},
		{"detach nothing", []string{"detach"}, 2, "give exactly one /dev/nbdN"},
		{"detach partition", []string{"detach", "/dev/nbd0p1"}, 2, `"/dev/nbd0p1" is not an NBD device`},
		{"status two", []string{"status", "/dev/nbd0", "/dev/nbd1"}, 2, "give at most one device"},
		{"status bad device", []string{"status", "sda"}, 2, `"sda" is not an NBD device`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCmd(tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
			// A usage error is one line and a pointer to --help, not the help.
			if want := "\n'nbdroot " + tt.args[0] + " --help' lists the options\n"; code == 2 && (strings.Count(stderr, "\n") != 2 || !strings.HasSuffix(stderr, want)) {
				t.Errorf("usage error is not one line and %q:\n%s", want, stderr)
			}
		})
	}
}

func TestAttachHelp(t *testing.T) {
	for _, cmd := range []string{"attach", "detach", "status"} {
		code, stdout, _ := runCmd(cmd, "--help")
		if code != 0 || !strings.HasPrefix(stdout, "usage: nbdroot "+cmd) {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, stdout)
		}
	}
}

func TestParseInterleaved(t *testing.T) {
	tests := []struct {
		args    []string
		wantPos []string
		wantExp string
	}{
		{[]string{"host", "--export", "root"}, []string{"host"}, "root"},
		{[]string{"--export", "root", "host"}, []string{"host"}, "root"},
		{[]string{"a", "--export=x", "b"}, []string{"a", "b"}, "x"},
		{[]string{"--", "--export"}, []string{"--export"}, ""},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		exp := fs.String("export", "", "")
		pos, err := parseInterleaved(fs, tt.args)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.wantPos, pos); diff != "" || *exp != tt.wantExp {
			t.Errorf("%q: positional (-want +got):\n%s export %q", tt.args, diff, *exp)
		}
	}
}

func TestAttachRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, stdout, stderr := runCmd("attach", addr, "--export", "root")
	if code != 1 || stdout != "" || !strings.Contains(stderr, "NBD server "+addr+`, export "root": connection refused`) {
		t.Errorf("exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
	// Towards loopback there is no MAC address to be: the console says so, and --id helps.
	if !strings.Contains(stderr, "nbdroot attach: no client identity (lo (127.0.0.1): no hardware address): the server keys this client by its address; --id ID names it") {
		t.Errorf("no word about the missing identity:\n%s", stderr)
	}
	if _, _, stderr := runCmd("attach", addr, "--id", "pc-7"); strings.Contains(stderr, "identity") {
		t.Errorf("--id given, yet:\n%s", stderr)
	}
}

// TestAttachWithoutNBDDriver negotiates with a real server and then finds no nbd driver in
// this kernel: the error says so plainly.
func TestAttachWithoutNBDDriver(t *testing.T) {
	noNBDKernel(t)
	img := filepath.Join(t.TempDir(), "root.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	srv, err := nbdserver.New(nbdserver.Config{Exports: []nbdserver.Export{{Name: "root", Path: img}}, Logger: log.New(io.Discard, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	defer func() { cancel(); srv.Close(); <-done }()

	code, stdout, stderr := runCmd("attach", ln.Addr().String(), "--export", "root", "--keep")
	if code != 1 || stdout != "" {
		t.Errorf("exit %d, stdout %q", code, stdout)
	}
	for _, want := range []string{`kernel has no "nbd" generic netlink family`, "using the ioctl interface",
		"no NBD devices in /sys/block: is the nbd module loaded? (modprobe nbd)"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr)
		}
	}
}

func TestStatusWithoutNBDDriver(t *testing.T) {
	noNBDKernel(t)
	for _, args := range [][]string{{"status"}, {"status", "--json"}, {"status", "/dev/nbd0"}} {
		code, stdout, stderr := runCmd(args...)
		if code != 1 || stdout != "" || !strings.Contains(stderr, "this kernel has no nbd driver loaded (modprobe nbd)") {
			t.Errorf("%q: exit %d, stdout %q, stderr:\n%s", args, code, stdout, stderr)
		}
	}
	code, _, stderr := runCmd("detach", "/dev/nbd0")
	if code != 1 || !strings.Contains(stderr, "nbdroot detach: ioctl detach: open /dev/nbd0: no such file or directory") {
		t.Errorf("detach: exit %d, stderr:\n%s", code, stderr)
	}
}

func TestPrintStatus(t *testing.T) {
	var b bytes.Buffer
	printStatus(&b, []nbdclient.DeviceInfo{
		{Device: "/dev/nbd0", Index: 0, Connected: true, Size: 64 << 20, BlockSize: 512, Backend: "10.0.2.100:10809/root", Pid: 1,
			Keeper: &nbdclient.KeeperState{Pid: 125, State: "watching", Server: "10.0.2.100:10809", Reconnects: 1}},
		{Device: "/dev/nbd1", Index: 1},
	})
	want := `DEVICE     STATE      SIZE      BLOCK  BACKEND                PID  KEEPER
/dev/nbd0  connected  64.0 MiB  512    10.0.2.100:10809/root  1    pid 125, watching via 10.0.2.100:10809, 1 reconnect(s)
/dev/nbd1  free       -         -      -                      -    -
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	b.Reset()
	printStatus(&b, nil)
	if b.String() != "no connected NBD devices\n" {
		t.Errorf("empty: %q", b.String())
	}
}
