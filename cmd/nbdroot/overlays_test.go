package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

func TestOverlaysUsage(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no command", []string{"overlays"}, 2, "give a command: list, rm or reset"},
		{"unknown command", []string{"overlays", "prune"}, 2, `unknown command "prune"`},
		{"rm nothing", []string{"overlays", "rm"}, 2, "rm: give the IDs"},
		{"reset nobody", []string{"overlays", "reset"}, 2, "reset: give exactly one CLIENT"},
		{"reset bad client", []string{"overlays", "reset", "a/b"}, 2, "reset a/b: bad client identity"},
		{"list argument", []string{"overlays", "list", "x"}, 2, `list takes no arguments, got "x"`},
		{"json on rm", []string{"overlays", "rm", "--json", "0011223344"}, 2, "--json and --client are for list"},
		{"force on list", []string{"overlays", "list", "--force"}, 2, "--force is for rm and reset"},
		{"bad client filter", []string{"overlays", "list", "--client", "../x"}, 2, "--client ../x: bad client identity"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runCmd(tt.args...)
			if code != tt.wantCode || stdout != "" || !strings.Contains(stderr, tt.wantErr) || !strings.HasSuffix(stderr, "\n'nbdroot overlays --help' lists the options\n") || strings.Count(stderr, "\n") != 2 {
				t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit %d and %q", code, stdout, stderr, tt.wantCode, tt.wantErr)
			}
		})
	}
	for _, args := range [][]string{{"overlays", "--help"}, {"overlays", "list", "-h"}} {
		code, stdout, stderr := runCmd(args...)
		if code != 0 || strings.Count(stdout, "usage: nbdroot overlays list") != 1 || stderr != "" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, stdout, stderr)
		}
	}
}

// makeOverlay creates an overlay of client c on export as a server would, with some data.
func makeOverlay(t *testing.T, root, export, c string, kind ovstore.Kind) *ovstore.Overlay {
	t.Helper()
	client, err := ovstore.ParseClient(c)
	if err != nil {
		t.Fatal(err)
	}
	o, err := ovstore.Local{Root: root}.Create(ovstore.Meta{Export: export, Client: client, Kind: kind, ImageSize: 1 << 20},
		func(dir string) error {
			return os.WriteFile(filepath.Join(dir, ovstore.DataFile), make([]byte, 8192), 0o600)
		})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// Without a running server the commands work on the state directory; an overlay some
// process holds is never removed.
func TestOverlaysWithoutServer(t *testing.T) {
	state := t.TempDir()
	keep := t.TempDir()
	held := makeOverlay(t, ovstore.StateRoot(state), "root", "52:54:00:12:34:56", ovstore.Temporary)
	defer held.Close()
	old := makeOverlay(t, ovstore.StateRoot(state), "root", "52:54:00:12:34:56", ovstore.Temporary)
	old.Close()
	other := makeOverlay(t, keep, "home", "@10.0.0.9", ovstore.Persistent)
	other.Close()

	code, stdout, stderr := runCmd("overlays", "list", "--state-dir", state, "--dir", keep)
	if code != 0 {
		t.Fatalf("list: exit %d: %s", code, stderr)
	}
	for _, want := range []string{"OVERLAY", held.ID.String()[:12], old.ID.String()[:12], other.ID.String()[:12],
		"attached", "detached", "@10.0.0.9", "persistent", "temporary", "8.0 KiB", "3 overlays, from " + state + " (no server answers on"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, stdout)
		}
	}
	// Without --dir the persistent directory is unknown here (no server recorded it).
	_, stdout, _ = runCmd("overlays", "list", "--state-dir", state, "--json", "--client", "52:54:00:12:34:56")
	var list []nbdserver.OverlayInfo
	if err := json.Unmarshal([]byte(stdout), &list); err != nil || len(list) != 2 || list[0].ID != held.ID && list[1].ID != held.ID {
		t.Fatalf("list --json --client: %v %+v\n%s", err, list, stdout)
	}

	code, _, stderr = runCmd("overlays", "rm", held.ID.String()[:10], "--state-dir", state)
	if code != 1 || !strings.Contains(stderr, "does not answer on "+filepath.Join(state, "control.sock")) {
		t.Errorf("rm of a held overlay: exit %d, stderr %q", code, stderr)
	}
	code, stdout, stderr = runCmd("overlays", "rm", "--state-dir", state, "--dir", keep, other.ID.String())
	if code != 0 || !strings.Contains(stdout, "removed persistent overlay "+other.ID.String()+" of client @10.0.0.9 on export \"home\"") {
		t.Errorf("rm: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runCmd("overlays", "rm", "--state-dir", state, "ffffffffff")
	if code != 1 || !strings.Contains(stderr, "overlay ffffffffff: overlay does not exist") {
		t.Errorf("rm of an unknown ID: exit %d, stderr %q", code, stderr)
	}
	// reset removes what it can and reports what it cannot.
	code, stdout, stderr = runCmd("overlays", "reset", "52:54:00:12:34:56", "--state-dir", state)
	if code != 1 || !strings.Contains(stdout, "removed temporary overlay "+old.ID.String()) || !strings.Contains(stderr, held.ID.String()) {
		t.Errorf("reset: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = runCmd("overlays", "reset", "pc-none", "--state-dir", state, "--export", "root")
	if code != 0 || !strings.Contains(stdout, `client pc-none has no overlays on export "root": nothing to reset`) {
		t.Errorf("reset of a client without overlays: exit %d, %q", code, stdout)
	}
}

// With a server running on the state directory, the commands and `status --state-dir`
// go through its control socket, and `status --server` through its metrics listener.
func TestOverlaysAndStatusWithServer(t *testing.T) {
	state := t.TempDir()
	img := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := nbdserver.New(nbdserver.Config{Exports: []nbdserver.Export{{Name: "root", Path: img, Cow: true}},
		StateDir: state, Logger: log.New(io.Discard, "", 0)})
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
	ctl, err := net.Listen("unix", filepath.Join(state, nbdserver.ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(ctl, srv.ControlHandler())
	defer ctl.Close()
	mln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(mln, srv.MetricsHandler())
	defer mln.Close()

	// A client without identity (keyed by address) attaches a fresh overlay.
	nc := rawGo(t, ln.Addr().String(), "root")
	defer nc.Close()
	old := makeOverlay(t, ovstore.StateRoot(state), "root", "pc-old", ovstore.Temporary)
	old.Close()

	code, stdout, stderr := runCmd("overlays", "list", "--state-dir", state)
	if code != 0 || !strings.Contains(stdout, "attached from 127.0.0.1:") || !strings.Contains(stdout, "@127.0.0.1") ||
		!strings.Contains(stdout, "2 overlays, via the running server") {
		t.Errorf("list: exit %d, stdout:\n%s\nstderr %q", code, stdout, stderr)
	}
	var attached string
	for _, line := range strings.Split(stdout, "\n") {
		if strings.Contains(line, "@127.0.0.1") {
			attached = strings.Fields(line)[0]
		}
	}
	code, _, stderr = runCmd("overlays", "rm", "--state-dir", state, attached)
	if code != 1 || !strings.Contains(stderr, "attached to client @127.0.0.1") || !strings.Contains(stderr, "--force disconnects it") {
		t.Errorf("rm of an attached overlay: exit %d, stderr %q", code, stderr)
	}
	code, stdout, _ = runCmd("overlays", "rm", "--state-dir", state, old.ID.String())
	if code != 0 || !strings.Contains(stdout, "removed temporary overlay "+old.ID.String()) {
		t.Errorf("rm: exit %d, %q", code, stdout)
	}

	for _, args := range [][]string{{"status", "--state-dir", state}, {"status", "--server", mln.Addr().String()}} {
		code, stdout, stderr := runCmd(args...)
		if code != 0 || !strings.Contains(stdout, "state directory "+state) || !strings.Contains(stdout, "@127.0.0.1") ||
			!strings.Contains(stdout, "(temporary, ") || !strings.Contains(stdout, "copy-on-write, temporary overlays in") {
			t.Errorf("%q: exit %d, stdout:\n%s\nstderr %q", args, code, stdout, stderr)
		}
	}
	code, stdout, _ = runCmd("status", "--server", mln.Addr().String(), "--json")
	var st nbdserver.Status
	if err := json.Unmarshal([]byte(stdout), &st); code != 0 || err != nil || len(st.Clients) != 1 || st.Clients[0].Connections != 1 {
		t.Errorf("status --json: exit %d, %v, %+v", code, err, st)
	}
	code, _, stderr = runCmd("status", "--state-dir", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "no server answers on") {
		t.Errorf("status without a server: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runCmd("status", "--server", "a:1", "--state-dir", state)
	if code != 2 || !strings.Contains(stderr, "give either --server HOST:PORT or --state-dir DIR") {
		t.Errorf("both: exit %d, stderr %q", code, stderr)
	}
}

// rawGo negotiates an export the simplest way (fixed newstyle, NBD_OPT_GO) and leaves the
// connection in transmission.
func rawGo(t *testing.T, addr, export string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	hello := make([]byte, 18)
	if _, err := io.ReadFull(nc, hello); err != nil {
		t.Fatal(err)
	}
	b := binary.BigEndian.AppendUint32(nil, nbd.ClientFlagFixedNewstyle|nbd.ClientFlagNoZeroes)
	b = nbd.AppendOption(b, nbd.OptGo, nbd.AppendInfoRequest(nil, export))
	if _, err := nc.Write(b); err != nil {
		t.Fatal(err)
	}
	for {
		h := make([]byte, nbd.OptReplyHeaderSize)
		if _, err := io.ReadFull(nc, h); err != nil {
			t.Fatal(err)
		}
		r, err := nbd.ParseOptReply(h)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, r.Length)
		io.ReadFull(nc, data)
		switch {
		case r.Type == nbd.RepAck:
			nc.SetDeadline(time.Time{})
			return nc
		case r.Type&nbd.RepFlagError != 0:
			t.Fatalf("GO %q: %s %s", export, nbd.RepName(r.Type), data)
		}
	}
}
