package nbdserver

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// Which overlay a cow session gets (CONTRACTS.md, "Client identity on the wire"):
//
//   - overlay=U sent (a reconnect): overlay U of this client on this export, or the GO fails
//     with NBD_REP_ERR_NBDROOT_OVERLAY_GONE — never another view;
//   - no overlay= on a temporary ("cow") export (a fresh boot): a new overlay;
//   - no overlay= on a persistent ("cowdir=") export: the client's newest overlay, made if
//     it has none;
//   - a client that sent no identity (nbd-client, qemu) is keyed by its address and, having
//     no way to say "resume", always gets its newest overlay back while it exists — on a
//     temporary export that is until the reaper removes it, a grace period after its last
//     connection closed.
//
// Overlays are files on disk or objects in a store from the start (package overlay), so a
// server restart or a kill -9 loses nothing that was flushed; a temporary overlay outlives
// its client's last connection by the grace period, so a client that lost its connection
// finds it again — on a store, from any server.
//
// The writer of a read-write export of an object gets the export's writes overlay: one
// per image, whoever writes (only one client at a time may), kept like a persistent
// overlay.

// exportClient names one client's use of one export.
type exportClient struct {
	export string
	client ovstore.Client
}

// overlaySet is the overlays this server has open, shared by the sessions of their client.
// Its lock is never held together with Server.mu, nor across disk I/O: opening, creating
// and closing overlays happen outside it, while busy marks the client so that its other
// connections wait instead of opening the same overlay twice.
type overlaySet struct {
	mu       sync.Mutex
	byID     map[nbd.OverlayID]*overlay
	latest   map[exportClient]*overlay // what a connection without overlay= shares
	busy     map[exportClient]chan struct{}
	removing map[nbd.OverlayID]bool // being removed by an administrator: resumes are refused
}

func (set *overlaySet) init() {
	set.byID = map[nbd.OverlayID]*overlay{}
	set.latest = map[exportClient]*overlay{}
	set.busy = map[exportClient]chan struct{}{}
	set.removing = map[nbd.OverlayID]bool{}
}

// waitIdleLocked waits (dropping the lock meanwhile) until nobody opens or closes an overlay
// of k, and marks k busy; done unmarks it. Called and returns with set.mu held.
func (set *overlaySet) waitIdleLocked(k exportClient) (done func()) {
	for {
		ch := set.busy[k]
		if ch == nil {
			break
		}
		set.mu.Unlock()
		<-ch
		set.mu.Lock()
	}
	ch := make(chan struct{})
	set.busy[k] = ch
	return func() {
		delete(set.busy, k)
		close(ch)
	}
}

// overlayRoot is where an export keeps its overlays: cowdir= for persistent ones, cowtmp=
// or the state directory for temporary ones — beside the image for an object export.
func (s *Server) overlayRoot(cfg *Export) string {
	switch {
	case cfg.CowDir != "":
		return cfg.CowDir
	case objstore.IsURL(cfg.Path):
		return objectOverlayRoot(cfg.Path)
	}
	return ovstore.StateRoot(s.stateDir)
}

// overlayKeyOf is whose overlay a session of client c on e uses: the client's, or for an
// object export's writer, the export's writes (the zero client).
func overlayKeyOf(e *export, c client) exportClient {
	if e.objectWrites() {
		return exportClient{e.cfg.Name, ovstore.Client{}}
	}
	return exportClient{e.cfg.Name, c.key}
}

func overlayKind(cfg *Export) ovstore.Kind {
	if cfg.CowPersistent {
		return ovstore.Persistent
	}
	return ovstore.Temporary
}

// acquireOverlay finds, opens or creates the overlay a cow session of client c gets (see
// the top of this file) and takes a reference to it. It does disk I/O: call it without
// Server.mu.
func (s *Server) acquireOverlay(e *export, c client) (*overlay, *refusal) {
	set := &s.ovs
	k := overlayKeyOf(e, c)
	set.mu.Lock()
	done := set.waitIdleLocked(k)
	var ov *overlay
	switch {
	case e.objectWrites():
		ov = set.latest[k]
	case !c.resume.IsZero():
		if set.removing[c.resume] {
			done()
			set.mu.Unlock()
			return nil, goneRefusal(e, c, c.resume)
		}
		ov = set.byID[c.resume]
		if ov != nil && (ov.h.Export != e.cfg.Name || ov.h.Client != c.key || ov.h.Kind == ovstore.Writes) {
			done()
			set.mu.Unlock()
			// Another client's overlay (or another export's) does not exist for this one.
			return nil, goneRefusal(e, c, c.resume)
		}
	case e.cfg.CowPersistent || c.key.ByAddress:
		ov = set.latest[k]
	}
	if ov != nil {
		done()
		if ov.base != e.img.base() {
			set.mu.Unlock()
			return nil, &refusal{nbd.RepErrPlatform, fmt.Sprintf("export %q was reconfigured while %s is in use by other connections of client %s; reconnect once they closed", e.cfg.Name, ov.describe(), c.key)}
		}
		ov.refs++
		set.mu.Unlock()
		return ov, nil
	}
	set.mu.Unlock()

	ov, r := s.loadOverlay(e, c)

	set.mu.Lock()
	if ov != nil && set.removing[ov.h.ID] {
		// An administrator removes it: do not hand it out again.
		set.mu.Unlock()
		ov.Close()
		set.mu.Lock()
		ov, r = nil, goneRefusal(e, c, ov.h.ID)
	}
	done()
	if ov != nil {
		ov.refs = 1
		set.byID[ov.h.ID] = ov
		set.latest[k] = ov
	}
	set.mu.Unlock()
	return ov, r
}

// loadOverlay opens or creates the overlay for a session from its store.
func (s *Server) loadOverlay(e *export, c client) (*overlay, *refusal) {
	st := e.store
	name := e.cfg.Name
	key := overlayKeyOf(e, c).client
	platform := func(err error) (*overlay, *refusal) {
		s.log.Printf("export %q: overlay for client %s: %v", name, c.key, err)
		return nil, &refusal{nbd.RepErrPlatform, fmt.Sprintf("copy-on-write overlay for client %s: %v", c.key, err)}
	}
	open := func(id nbd.OverlayID) (*overlay, *refusal) {
		ov, err := s.openOverlay(e, st, key, id)
		switch {
		case errors.Is(err, ovstore.ErrGone):
			return nil, goneRefusal(e, c, id)
		case errors.Is(err, ovstore.ErrBusy) && e.objectWrites():
			s.log.Printf("export %q: writes of %s: %v", name, c, err)
			return nil, &refusal{nbd.RepErrPolicy, fmt.Sprintf("export %q is in use read-write through another server (one writer at a time): %v", name, err)}
		case errors.Is(err, ovstore.ErrBusy):
			s.log.Printf("export %q: overlay %s of client %s: %v", name, id, c.key, err)
			return nil, &refusal{nbd.RepErrPolicy, fmt.Sprintf("overlay %s of client %s is held by another process (another server using %s, or an administrator's command): %v", id, c.key, st.Location(), err)}
		case err != nil:
			return platform(err)
		}
		return ov, nil
	}
	if !c.resume.IsZero() && !e.objectWrites() {
		return open(c.resume)
	}
	if e.cfg.CowPersistent || c.key.ByAddress || e.objectWrites() {
		for try := 0; ; try++ {
			found, err := st.Find(name, key)
			if err != nil {
				return platform(err)
			}
			s.ovs.mu.Lock()
			found = slices.DeleteFunc(found, func(m ovstore.Meta) bool { return s.ovs.removing[m.ID] })
			s.ovs.mu.Unlock()
			if len(found) == 0 {
				break
			}
			if len(found) > 1 {
				s.log.Printf("export %q: client %s has %d overlays; serving the newest, %s", name, key, len(found), found[0].ID)
			}
			ov, r := open(found[0].ID)
			if r != nil && r.typ == nbd.RepErrNbdrootOverlayGone && try < 3 {
				continue // reaped or removed since Find: look again
			}
			return ov, r
		}
	}
	ov, err := s.createOverlay(e, st, key)
	if errors.Is(err, ovstore.ErrBusy) {
		return nil, &refusal{nbd.RepErrPolicy, fmt.Sprintf("export %q: a new overlay is being made by another server: %v", name, err)}
	}
	if err != nil {
		return platform(err)
	}
	return ov, nil
}

// openOverlay opens overlay id from its store. A short ErrBusy of a local overlay is
// waited out: an administrator's `nbdroot overlays list` holds each overlay's lock for an
// instant. (In a store, busy means another server holds its lease.)
func (s *Server) openOverlay(e *export, st ovstore.Store, c ovstore.Client, id nbd.OverlayID) (*overlay, error) {
	var h *ovstore.Overlay
	var err error
	_, local := st.(ovstore.Local)
	for try := 0; try < 20; try++ {
		if h, err = st.Open(e.cfg.Name, c, id); !errors.Is(err, ovstore.ErrBusy) || !local {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return nil, err
	}
	if err := checkImage(e, h); err != nil {
		h.Close()
		return nil, err
	}
	ov, err := s.attachHeld(e.img.base(), h)
	if err != nil {
		h.Close()
		return nil, err
	}
	return ov, nil
}

// checkImage refuses an overlay made over another image or over this image before it was
// changed: laid over different blocks, its writes would corrupt the client's file system.
func checkImage(e *export, h *ovstore.Overlay) error {
	if e.img.ob != nil {
		if h.ImageETag != e.img.ob.im.ETag() {
			return fmt.Errorf("overlay %s was made over %s with ETag %s, but the object now has ETag %s (a new upload): it would not match the image any more; remove it (nbdroot overlays rm %s) to start from the image",
				h.ID, e.cfg.Path, h.ImageETag, e.img.ob.im.ETag(), h.ID)
		}
		return nil
	}
	if h.ImageMtime.IsZero() {
		return nil // a block device, whose modification time says nothing
	}
	st, err := os.Stat(e.cfg.Path)
	if err != nil {
		return err
	}
	if !st.ModTime().Equal(h.ImageMtime) {
		return fmt.Errorf("overlay %s was made over %s as modified at %s, but the image was modified at %s since: it would not match the image any more; remove it (nbdroot overlays rm %s) to start from the image",
			h.ID, e.cfg.Path, h.ImageMtime.Format(time.RFC3339Nano), st.ModTime().Format(time.RFC3339Nano), h.ID)
	}
	return nil
}

// createOverlay makes a new overlay for client c. A client keyed by address on a
// persistent export adopts the overlay an older nbdroot kept for it (cowdir/EXPORT@ADDR.cow
// and .map) instead of starting empty.
func (s *Server) createOverlay(e *export, st ovstore.Store, c ovstore.Client) (*overlay, error) {
	m := ovstore.Meta{Export: e.cfg.Name, Client: c, Kind: overlayKind(&e.cfg), Image: e.cfg.Path, ImageSize: e.img.size()}
	switch {
	case e.objectWrites():
		m.Kind = ovstore.Writes
		m.ImageETag = e.img.ob.im.ETag()
	case e.img.ob != nil:
		m.ImageETag = e.img.ob.im.ETag()
	default:
		if fi, err := os.Stat(e.cfg.Path); err == nil && fi.Mode().IsRegular() {
			m.ImageMtime = fi.ModTime()
		}
	}
	populate := func(dir string) error { return initOverlayFiles(dir, m.ImageSize) }
	legacyData, legacyMap := legacyOverlayPaths(e.cfg.CowDir, e.cfg.Name, c.ID)
	adopt := false
	if _, local := st.(ovstore.Local); local && e.cfg.CowPersistent && c.ByAddress {
		if _, err := os.Stat(legacyMap); err == nil {
			adopt = true
			populate = func(dir string) error {
				if err := os.Rename(legacyData, filepath.Join(dir, ovstore.DataFile)); err != nil {
					return err
				}
				return os.Rename(legacyMap, filepath.Join(dir, ovstore.BitmapFile))
			}
		}
	}
	if l, local := st.(ovstore.Local); local {
		if err := os.MkdirAll(l.Root, 0o700); err != nil {
			return nil, err
		}
	}
	h, err := st.Create(m, populate)
	if err != nil {
		return nil, err
	}
	ov, err := s.attachHeld(e.img.base(), h)
	if err != nil {
		h.Close()
		return nil, err
	}
	if adopt {
		s.log.Printf("export %q: adopted the overlay an older nbdroot kept for %s (%s) as %s", e.cfg.Name, c, legacyData, ov.describe())
	}
	return ov, nil
}

// legacyOverlayPaths names the files in which nbdroot before overlay IDs kept a client's
// persistent overlay.
func legacyOverlayPaths(dir, export, client string) (data, bitmap string) {
	base := url.PathEscape(export) + "@" + url.PathEscape(client)
	return filepath.Join(dir, base+".cow"), filepath.Join(dir, base+".map")
}

func goneRefusal(e *export, c client, id nbd.OverlayID) *refusal {
	return &refusal{nbd.RepErrNbdrootOverlayGone, fmt.Sprintf(
		"overlay %s of client %s on export %q no longer exists (lost with the server's state, reaped, or removed by an administrator); refusing to serve a different view",
		id, c.key, e.cfg.Name)}
}

// releaseOverlay drops a session's reference; the last one closes the overlay (flushing
// it). Call it without Server.mu.
func (s *Server) releaseOverlay(ov *overlay) {
	set := &s.ovs
	k := exportClient{ov.h.Export, ov.h.Client}
	set.mu.Lock()
	ov.refs--
	if ov.refs > 0 {
		set.mu.Unlock()
		return
	}
	if set.byID[ov.h.ID] == ov {
		delete(set.byID, ov.h.ID)
	}
	if set.latest[k] == ov {
		delete(set.latest, k)
	}
	// Until it is closed, the client's next connection waits rather than finding the
	// overlay locked.
	done := set.waitIdleLocked(k)
	set.mu.Unlock()
	if err := ov.Close(); err != nil {
		s.log.Printf("export %q: closing %s of client %s: %v", ov.h.Export, ov.describe(), ov.h.Client, err)
	}
	set.mu.Lock()
	done()
	set.mu.Unlock()
	close(ov.closed)
}

// infoOverlayID is what NBD_OPT_INFO reports as the overlay a GO would give client c
// (zero when that would be a new one), or the refusal a GO would get.
func (s *Server) infoOverlayID(e *export, c client) (nbd.OverlayID, *refusal) {
	if !e.cfg.Cow {
		return nbd.OverlayID{}, nil
	}
	st := e.store
	if !c.resume.IsZero() {
		s.ovs.mu.Lock()
		ov, removing := s.ovs.byID[c.resume], s.ovs.removing[c.resume]
		s.ovs.mu.Unlock()
		if ov != nil && ov.h.Export == e.cfg.Name && ov.h.Client == c.key {
			return c.resume, nil
		}
		if !st.Exists(e.cfg.Name, c.key, c.resume) || removing {
			return nbd.OverlayID{}, goneRefusal(e, c, c.resume)
		}
		return c.resume, nil
	}
	if e.cfg.CowPersistent || c.key.ByAddress {
		if found, err := st.Find(e.cfg.Name, c.key); err == nil && len(found) > 0 {
			return found[0].ID, nil
		}
	}
	return nbd.OverlayID{}, nil
}
