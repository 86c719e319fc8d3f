package nbdserver

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// serveControl serves s's control API on a Unix socket for the test and returns a client.
func serveControl(t *testing.T, s *testServer) *ControlClient {
	t.Helper()
	ln, err := listenControl(s.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.ControlHandler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	c, err := DialControl(filepath.Join(s.stateDir, ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// The control socket: list shows who is attached from where; removing an attached overlay
// is refused unless forced; forced, the client is cut off and its resume fails loudly.
func TestControlRemoveAttached(t *testing.T) {
	keep := filepath.Join(t.TempDir(), "keep")
	img := makeImage(t, testSize)
	s := startServer(t, Config{Exports: []Export{{Name: "tmp", Path: img, Cow: true}, {Name: "keep", Path: img, Cow: true, CowDir: keep, CowPersistent: true}}})
	ctl := serveControl(t, s)
	ctx := context.Background()

	a, ua := mustGoAs(t, s.addr, "127.0.0.1", "tmp", "pc1", nbd.OverlayID{})
	a.pwrite(0, []byte("a"), nbd.CmdFlagFUA)
	b, ub := mustGoAs(t, s.addr, "127.0.0.2", "keep", "pc2", nbd.OverlayID{})
	b.disconnect()

	list, err := ctl.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List: %+v %v", list, err)
	}
	byID := map[nbd.OverlayID]OverlayInfo{}
	for _, in := range list {
		byID[in.ID] = in
	}
	if in := byID[ua]; !in.Attached || len(in.From) != 1 || !strings.HasPrefix(in.From[0], "127.0.0.1:") || in.Kind != ovstore.Temporary || in.Export != "tmp" {
		t.Errorf("attached overlay listed as %+v", in)
	}
	if in := byID[ub]; in.Attached || in.Kind != ovstore.Persistent || in.Client.ID != "pc2" || !strings.HasPrefix(in.Dir, keep) {
		t.Errorf("detached persistent overlay listed as %+v", in)
	}

	err = ctl.Remove(ctx, ua, false)
	if !errors.Is(err, ovstore.ErrBusy) || !strings.Contains(err.Error(), "attached to client pc1") {
		t.Fatalf("removing an attached overlay: %v, want ErrBusy naming the client", err)
	}
	if got := a.pread(0, 1); string(got) != "a" {
		t.Fatal("a refused removal disturbed the client")
	}
	if err := ctl.Remove(ctx, ua, true); err != nil {
		t.Fatalf("forced removal: %v", err)
	}
	// The client was cut off, and its keeper's resume fails loudly.
	a.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := a.recv(); err == nil {
		t.Error("connection still open after its overlay was removed")
	}
	_, _, err = goAs(t, s.addr, "127.0.0.1", "tmp", "pc1", ua)
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, ua.String())

	if err := ctl.Remove(ctx, ub, false); err != nil {
		t.Fatalf("removing a detached overlay: %v", err)
	}
	if err := ctl.Remove(ctx, ub, false); !errors.Is(err, ovstore.ErrGone) {
		t.Errorf("removing it again: %v, want ErrGone", err)
	}
	// pc2's next boot on the persistent export starts from the image.
	c, uc := mustGoAs(t, s.addr, "127.0.0.2", "keep", "pc2", nbd.OverlayID{})
	if uc == ub {
		t.Error("removed persistent overlay came back")
	}
	c.disconnect()
	for _, want := range []string{"disconnecting client pc1: an administrator removes its temporary overlay " + ua.String(),
		"an administrator removed persistent overlay " + ub.String() + " of client pc2"} {
		if !strings.Contains(s.logs.String(), want) {
			t.Errorf("log lacks %q", want)
		}
	}

	st, err := ctl.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, cs := range st.Clients {
		if cs.Client == "pc2" && cs.Export == "keep" {
			found = cs.ConnectionsAll == 2 && cs.Connections == 0
		}
	}
	if !found || len(st.Exports) != 2 {
		t.Errorf("status over the control socket: %+v", st)
	}
}

// Without a server, LocalAdmin works on the directories, and never removes an overlay
// that some process holds.
func TestLocalAdmin(t *testing.T) {
	state := t.TempDir()
	keep := t.TempDir()
	if err := ovstore.RecordRoots(state, []string{keep}); err != nil {
		t.Fatal(err)
	}
	mk := func(root string, c string, kind ovstore.Kind) *ovstore.Overlay {
		o, err := ovstore.Local{Root: root}.Create(ovstore.Meta{Export: "root", Client: ovstore.Client{ID: c}, Kind: kind}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	held := mk(ovstore.StateRoot(state), "pc1", ovstore.Temporary)
	free := mk(keep, "pc2", ovstore.Persistent)
	free.Close()
	a := LocalAdmin(state)
	ctx := context.Background()
	list, err := a.List(ctx)
	if err != nil || len(list) != 2 {
		t.Fatalf("List: %v %v", list, err)
	}
	if !list[0].Attached || list[0].ID != held.ID || list[1].Attached {
		t.Errorf("list %+v", list)
	}
	err = a.Remove(ctx, held.ID, true)
	if !errors.Is(err, ovstore.ErrBusy) || !strings.Contains(err.Error(), "does not answer on "+filepath.Join(state, ControlSocket)) {
		t.Errorf("removing a held overlay: %v", err)
	}
	if err := a.Remove(ctx, free.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(free.Dir); !os.IsNotExist(err) {
		t.Errorf("removed overlay still there: %v", err)
	}
	held.Close()
}

// The metrics listener serves Prometheus text with per-client series, and /status.
func TestMetricsHandler(t *testing.T) {
	s := startServer(t, oneExport(t, func(e *Export) { e.Cow = true }))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: s.MetricsHandler()}
	go hs.Serve(ln)
	defer hs.Close()

	c, u := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pwrite(0, fill(8192, 1), 0)
	c.pread(0, 4096)
	flush(t, c)
	c.disconnect()
	c, _ = mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", u) // a reconnect
	c.pread(0, 4096)
	other := connectFrom(t, s.addr, "127.0.0.2", "root", false)
	other.pread(0, 512)

	var body string
	waitFor(t, "counters", func() bool {
		resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		return strings.Contains(body, `nbdroot_client_read_bytes_total{client="pc1",export="root"} 8192`)
	})
	for _, want := range []string{
		`nbdroot_client_connections{client="pc1",export="root"} 1`,
		`nbdroot_client_connections_total{client="pc1",export="root"} 2`,
		`nbdroot_client_reconnects_total{client="pc1",export="root"} 1`,
		`nbdroot_client_written_bytes_total{client="pc1",export="root"} 8192`,
		`nbdroot_client_request_duration_seconds_count{client="pc1",export="root",op="read"} 2`,
		`nbdroot_client_request_duration_seconds_count{client="pc1",export="root",op="flush"} 1`,
		`nbdroot_client_connections{client="@127.0.0.2",export="root"} 1`,
		`nbdroot_overlay_allocated_bytes{client="pc1",export="root",kind="temporary",overlay="` + u.String() + `"} 8192`,
		`nbdroot_overlay_dir_free_bytes{dir=`,
		`nbdroot_connections 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if t.Failed() || os.Getenv("SHOW") != "" {
		t.Logf("metrics:\n%s", body)
	}
	st, err := StatusClient(ln.Addr().String()).Status(context.Background())
	if err != nil || len(st.Clients) != 2 {
		t.Fatalf("/status: %+v %v", st, err)
	}
	if cs := st.Clients[1]; cs.Client != "pc1" || cs.Overlay != u.String() || cs.ReadBytes != 8192 || cs.Connections != 1 || cs.LastActivity.IsZero() {
		t.Errorf("status of pc1: %+v", cs)
	}
}

// `nbdroot serve` opens the control socket in its state directory and, with --metrics, the
// metrics listener; both answer, and the socket goes when the server stops.
func TestProcessControlAndMetrics(t *testing.T) {
	state := t.TempDir()
	img := makeImage(t, testSize)
	p := startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + img + ",cow"}, StateDir: state, Metrics: "127.0.0.1:0"})
	var metricsAddr string
	waitFor(t, "the metrics line", func() bool {
		for _, line := range strings.Split(p.stderr.String(), "\n") {
			// After the time stamp.
			if _, a, ok := strings.Cut(line, " metrics on http://"); ok {
				metricsAddr = strings.TrimSuffix(a, "/metrics")
				return true
			}
		}
		return false
	})
	c, u := mustGoAs(t, p.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pwrite(0, []byte("x"), 0)
	st, err := StatusClient(metricsAddr).Status(context.Background())
	if err != nil || len(st.Clients) != 1 || st.Clients[0].Overlay != u.String() || st.StateDir != state {
		t.Fatalf("/status over --metrics: %+v %v", st, err)
	}
	ctl, err := DialControl(filepath.Join(state, ControlSocket))
	if err != nil {
		t.Fatal(err)
	}
	list, err := ctl.List(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != u || !list[0].Attached {
		t.Fatalf("overlays over the control socket: %+v %v", list, err)
	}
	c.disconnect()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(state, ControlSocket)); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	// The overlay outlives the server.
	if _, err := os.Stat(list[0].Dir); err != nil {
		t.Errorf("overlay gone with the server: %v", err)
	}
}
