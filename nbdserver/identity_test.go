package nbdserver

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// The test client's side of the identity contract (CONTRACTS.md): what a keeper will do.

// identify sends NBD_OPT_NBDROOT_CLIENT and returns the server's answer.
func (c *testClient) identify(id string, resume nbd.OverlayID) (uint32, string) {
	c.t.Helper()
	typ, d := c.simpleOption(nbd.OptNbdrootClient, nbd.AppendClientOption(nil, nbd.ClientOption{ID: id, Overlay: resume}))
	return typ, string(d)
}

// goAs connects from src, names itself id (resuming resume unless zero) and runs OPT_GO.
func goAs(t *testing.T, addr, src, name, id string, resume nbd.OverlayID) (*testClient, nbd.ExportInfo, error) {
	t.Helper()
	c := dialFrom(t, addr, src)
	c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
	if typ, msg := c.identify(id, resume); typ != nbd.RepAck {
		t.Fatalf("NBD_OPT_NBDROOT_CLIENT id=%s: %s %s", id, nbd.RepName(typ), msg)
	}
	info, err := c.infoGo(nbd.OptGo, name, nbd.InfoNbdrootOverlay)
	return c, info, err
}

// mustGoAs is goAs for handshakes that must succeed; it returns the overlay ID served.
func mustGoAs(t *testing.T, addr, src, name, id string, resume nbd.OverlayID) (*testClient, nbd.OverlayID) {
	t.Helper()
	c, info, err := goAs(t, addr, src, name, id, resume)
	if err != nil {
		t.Fatalf("GO %q as %s from %s: %v", name, id, src, err)
	}
	if !info.HasOverlay {
		t.Fatalf("GO %q as %s: no NBD_INFO_NBDROOT_OVERLAY in the reply", name, id)
	}
	return c, info.Overlay
}

func flush(t *testing.T, c *testClient) {
	t.Helper()
	if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
		t.Fatalf("FLUSH: %v", nbd.Errno(rp.Errno))
	}
}

func TestClientOptionRefusals(t *testing.T) {
	s := startServer(t, oneExport(t, func(e *Export) { e.Cow = true }))
	tests := []struct {
		name, data, want string
	}{
		{"too long", "id=" + strings.Repeat("a", 65), "65 bytes"},
		{"path characters", "id=../etc", `contains '/'`},
		{"dot dot", "id=..", "path element"},
		{"no id", "overlay=00112233445566778899aabbccddeeff", "no id="},
		{"bad overlay", "id=pc1 overlay=xyz", "hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTest(t, s.addr)
			c.hello(nbd.ClientFlagFixedNewstyle)
			typ, msg := c.simpleOption(nbd.OptNbdrootClient, []byte(tt.data))
			if typ != nbd.RepErrInvalid || !strings.Contains(string(msg), tt.want) {
				t.Fatalf("got %s %q, want NBD_REP_ERR_INVALID mentioning %q", nbd.RepName(typ), msg, tt.want)
			}
			// The refusal is not fatal: the client may go on (here, without identity).
			if _, err := c.infoGo(nbd.OptGo, "root"); err != nil {
				t.Fatalf("GO after a refused identity: %v", err)
			}
		})
	}
	if !strings.Contains(s.logs.String(), "refused NBD_OPT_NBDROOT_CLIENT") {
		t.Errorf("refusals not logged:\n%s", s.logs)
	}
}

// GO and INFO carry the overlay ID to a client that named itself, and only to it; a
// non-cow export gives the zero ID.
func TestOverlayInfo(t *testing.T) {
	img := makeImage(t, testSize)
	cfg := Config{Exports: []Export{{Name: "cow", Path: img, Cow: true}, {Name: "ro", Path: img, ReadOnly: true}}}
	s := startServer(t, cfg)

	_, info, err := goFrom(t, s.addr, "127.0.0.1", "cow")
	if err != nil || info.HasOverlay {
		t.Fatalf("client without identity: %+v %v, want no overlay info", info, err)
	}
	_, info, err = goAs(t, s.addr, "127.0.0.1", "ro", "pc1", nbd.OverlayID{})
	if err != nil || !info.HasOverlay || !info.Overlay.IsZero() {
		t.Fatalf("read-only export: %+v %v, want the zero overlay ID", info, err)
	}
	c, u := mustGoAs(t, s.addr, "127.0.0.2", "cow", "pc2", nbd.OverlayID{})
	if u.IsZero() {
		t.Fatal("cow export gave the zero overlay ID")
	}
	// OPT_INFO tells a resuming client which overlay a GO would serve, or that it is gone.
	i := dialFrom(t, s.addr, "127.0.0.2")
	i.hello(nbd.ClientFlagFixedNewstyle)
	i.identify("pc2", u)
	if info, err := i.infoGo(nbd.OptInfo, "cow"); err != nil || info.Overlay != u {
		t.Errorf("INFO resuming %s: %+v %v", u, info, err)
	}
	i.identify("pc2", nbd.OverlayID{1})
	_, err = i.infoGo(nbd.OptInfo, "cow")
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, "no longer exists")
	c.disconnect()
}

// A temporary cow export: a fresh boot gets a new overlay, a reconnect that names its
// overlay gets it back with every flushed write, an overlay that is gone is refused loudly.
func TestCowResume(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Cow = true })
	s := startServer(t, cfg)
	a, u1 := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	a.pwrite(8192, []byte("boot one"), 0)
	flush(t, a)
	a.disconnect()

	// The keeper reconnects (here from a new address: a new DHCP lease) naming U1.
	b, got := mustGoAs(t, s.addr, "127.0.0.3", "root", "pc1", u1)
	if got != u1 {
		t.Fatalf("resumed overlay %s, want %s", got, u1)
	}
	if d := b.pread(8192, 8); string(d) != "boot one" {
		t.Errorf("resumed overlay reads %q", d)
	}
	// A second connection of the same client (multi-conn) shares it.
	b2, got := mustGoAs(t, s.addr, "127.0.0.3", "root", "pc1", u1)
	if got != u1 {
		t.Fatalf("second connection got %s", got)
	}
	b2.pwrite(0, []byte("shared"), nbd.CmdFlagFUA)
	if d := b.pread(0, 6); string(d) != "shared" {
		t.Errorf("connections of one client see different overlays: %q", d)
	}
	b.disconnect()
	b2.disconnect()

	// A fresh boot (no overlay=) starts from the image with a new overlay.
	c, u2 := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	if u2 == u1 {
		t.Fatal("a fresh boot got the previous boot's overlay")
	}
	if d := c.pread(8192, 8); !bytes.Equal(d, pattern(8192, 8)) {
		t.Errorf("fresh overlay reads %q, want the image", d)
	}
	c.disconnect()

	// Another client cannot resume pc1's overlay: for it, that overlay does not exist.
	_, _, err := goAs(t, s.addr, "127.0.0.2", "root", "pc2", u1)
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, "overlay "+u1.String()+" of client pc2")
	// An overlay that never existed (or was lost) is refused, naming client and overlay.
	lost := nbd.OverlayID{0xaa, 15: 0x55}
	_, _, err = goAs(t, s.addr, "127.0.0.1", "root", "pc1", lost)
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, "overlay "+lost.String()+" of client pc1")
	if !strings.Contains(s.logs.String(), "refused NBD_OPT_GO \"root\": overlay "+lost.String()+" of client pc1 on export \"root\" no longer exists") {
		t.Errorf("refusal not logged:\n%s", s.logs)
	}
	// Over NBD_OPT_EXPORT_NAME the only refusal is a closed connection.
	x := dialFrom(t, s.addr, "127.0.0.1")
	x.hello(nbd.ClientFlagFixedNewstyle)
	x.identify("pc1", lost)
	x.option(nbd.OptExportName, []byte("root"))
	expectClosed(t, x)
}

// A persistent (cowdir=) export gives an identity its overlay on every boot.
func TestCowPersistentIdentity(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cow")
	cfg := oneExport(t, func(e *Export) { e.Cow, e.CowDir, e.CowPersistent = true, dir, true })
	s := startServer(t, cfg)
	a, u := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	a.pwrite(100, []byte("kept"), nbd.CmdFlagFUA)
	a.disconnect()
	b, got := mustGoAs(t, s.addr, "127.0.0.2", "root", "pc1", nbd.OverlayID{})
	if got != u {
		t.Fatalf("second boot got overlay %s, want %s", got, u)
	}
	if d := b.pread(100, 4); string(d) != "kept" {
		t.Errorf("reads %q", d)
	}
	// Keyed by identity, not address: another identity from pc1's old address starts clean.
	c, other := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc9", nbd.OverlayID{})
	if other == u {
		t.Fatal("another identity got pc1's overlay")
	}
	if d := c.pread(100, 4); !bytes.Equal(d, pattern(100, 4)) {
		t.Errorf("another identity reads %q", d)
	}
	if _, err := os.Stat(filepath.Join(dir, "root", "id-pc1", u.String(), ovstore.MetaFile)); err != nil {
		t.Errorf("overlay not where the layout says: %v", err)
	}
}

// One identity is one machine: the same identity from another address is refused while
// it is attached, like a second writer; the writer lock is keyed by identity.
func TestIdentityAttachedElsewhere(t *testing.T) {
	img := makeImage(t, testSize)
	cfg := Config{Exports: []Export{
		{Name: "cow", Path: img, Cow: true},
		{Name: "rw", Path: makeImage(t, testSize)},
		{Name: "ro", Path: img, ReadOnly: true},
	}}
	s := startServer(t, cfg)
	for _, export := range []string{"cow", "rw"} {
		t.Run(export, func(t *testing.T) {
			a, _, err := goAs(t, s.addr, "127.0.0.1", export, "pc1", nbd.OverlayID{})
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = goAs(t, s.addr, "127.0.0.2", export, "pc1", nbd.OverlayID{})
			wantRefusal(t, err, nbd.RepErrPolicy, "client identity pc1 is attached to export \""+export+"\" from 127.0.0.1; refused from 127.0.0.2")
			a.disconnect()
			waitFor(t, "detach", func() bool {
				_, _, err := goAs(t, s.addr, "127.0.0.2", export, "pc1", nbd.OverlayID{})
				return err == nil
			})
		})
	}
	// Read-only exports do not care: nothing of one client can reach another there.
	goAs(t, s.addr, "127.0.0.1", "ro", "pc7", nbd.OverlayID{})
	if _, _, err := goAs(t, s.addr, "127.0.0.2", "ro", "pc7", nbd.OverlayID{}); err != nil {
		t.Errorf("read-only export: %v", err)
	}

	// The writer lock belongs to an identity: a second machine behind the same address
	// (NAT) with another identity is a second writer.
	w, _, err := goAs(t, s.addr, "127.0.0.5", "rw", "pc5", nbd.OverlayID{})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = goAs(t, s.addr, "127.0.0.5", "rw", "pc6", nbd.OverlayID{})
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write by pc5 (127.0.0.5)")
	if _, _, err := goAs(t, s.addr, "127.0.0.5", "rw", "pc5", nbd.OverlayID{}); err != nil {
		t.Errorf("the writer's own second connection: %v", err)
	}
	w.disconnect()
}

// Temporary overlays outlive their client's last connection by the grace period, then go.
func TestOverlayReaped(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Cow = true })
	cfg.OverlayGrace = 300 * time.Millisecond
	s := startServer(t, cfg)
	a, u := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	held, v := mustGoAs(t, s.addr, "127.0.0.2", "root", "pc2", nbd.OverlayID{})
	a.pwrite(0, []byte("x"), nbd.CmdFlagFUA)
	a.disconnect()
	dir := ovstore.Local{Root: ovstore.StateRoot(s.stateDir)}.Dir("root", ovstore.Client{ID: "pc1"}, u)
	waitFor(t, "the overlay to be reaped", func() bool {
		_, err := os.Stat(dir)
		return errors.Is(err, os.ErrNotExist)
	})
	waitFor(t, "the reaping to be logged", func() bool {
		return strings.Contains(s.logs.String(), "removed temporary overlay "+u.String()+" of client pc1")
	})
	_, _, err := goAs(t, s.addr, "127.0.0.1", "root", "pc1", u)
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, u.String())
	// An attached overlay is never reaped, however long it is attached.
	time.Sleep(2 * cfg.OverlayGrace)
	if got := held.pread(0, 1); !bytes.Equal(got, pattern(0, 1)) {
		t.Error("attached overlay damaged")
	}
	if _, err := os.Stat(ovstore.Local{Root: ovstore.StateRoot(s.stateDir)}.Dir("root", ovstore.Client{ID: "pc2"}, v)); err != nil {
		t.Errorf("attached overlay reaped: %v", err)
	}
}

// A client keyed by address finds the persistent overlay an nbdroot before overlay IDs kept
// for it (cowdir/EXPORT@ADDRESS.cow and .map): upgrading the server loses nothing.
func TestCowLegacyAdoption(t *testing.T) {
	img := makeImage(t, testSize)
	fb, err := openFile(img, true, false)
	if err != nil {
		t.Fatal(err)
	}
	old := newTestOverlay(t, fb, ovstore.Local{Root: t.TempDir()}, ovstore.Client{ID: "127.0.0.1", ByAddress: true})
	if err := old.WriteAt([]byte("from the old days"), 12345, true); err != nil {
		t.Fatal(err)
	}
	old.Close()
	fb.Close()
	cowdir := t.TempDir()
	data, bitmap := legacyOverlayPaths(cowdir, "thin/root", "127.0.0.1")
	for from, to := range map[string]string{old.h.Path(ovstore.DataFile): data, old.h.Path(ovstore.BitmapFile): bitmap} {
		if err := os.Rename(from, to); err != nil {
			t.Fatal(err)
		}
	}
	s := startServer(t, Config{Exports: []Export{{Name: "thin/root", Path: img, Cow: true, CowDir: cowdir, CowPersistent: true}}})
	c := connectFrom(t, s.addr, "127.0.0.1", "thin/root", false)
	if got := c.pread(12345, 17); string(got) != "from the old days" {
		t.Errorf("adopted overlay reads %q", got)
	}
	if _, err := os.Stat(bitmap); !os.IsNotExist(err) {
		t.Errorf("legacy bitmap still there: %v", err)
	}
	if !strings.Contains(s.logs.String(), "adopted the overlay an older nbdroot kept for @127.0.0.1") {
		t.Errorf("adoption not logged:\n%s", s.logs)
	}
}

// An overlay is never laid over an image that changed since it was made: its blocks would
// not fit the image any more.
func TestCowImageChanged(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Cow = true })
	s := startServer(t, cfg)
	a, u := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	a.pwrite(0, []byte("x"), nbd.CmdFlagFUA)
	a.disconnect()
	waitFor(t, "release", func() bool {
		s.ovs.mu.Lock()
		defer s.ovs.mu.Unlock()
		return len(s.ovs.byID) == 0
	})
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(cfg.Exports[0].Path, later, later); err != nil {
		t.Fatal(err)
	}
	_, _, err := goAs(t, s.addr, "127.0.0.1", "root", "pc1", u)
	wantRefusal(t, err, nbd.RepErrPlatform, "the image was modified")
}
