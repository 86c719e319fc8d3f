package nbdserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// fileKey identifies an image by device and inode, so two export names (or a reload that
// renames an export) pointing at one file share its descriptor and its writer lock; an
// object by its URL and ETag, so a reload after a new upload opens the new version.
type fileKey struct {
	dev, ino uint64
	obj      string
}

// image is one opened backing file or object, shared by every export and connection that
// uses it. Its fields other than fb and ob are guarded by Server.mu.
type image struct {
	key  fileKey
	path string
	fb   *fileBackend // a file or block device; nil for an object or a tree
	ob   *objImage    // an object (never written); nil for a file
	tb   *treeBackend // a tree of block files (treefiles.go); nil otherwise
	refs int          // configured exports plus open sessions

	// The exclusive-writer lock: the client holding the image read-write (by identity, or
	// by address for clients without one) and how many of its connections do (multi-conn
	// and reconnects of one client are allowed). writerName is how logs and refusals name
	// it.
	writer      ovstore.Client
	writerName  string
	writerConns int
	writerExp   string
}

// base is the image as a backend overlays lie over.
func (img *image) base() cowBase {
	if img.ob != nil {
		return img.ob
	}
	if img.tb != nil {
		return img.tb
	}
	return img.fb
}

func (img *image) size() int64 { return img.base().Size() }

// readOnly says whether the image is open read-only (objects always are).
func (img *image) readOnly() bool {
	return img.ob != nil || img.tb != nil && img.tb.readOnly || img.fb != nil && img.fb.readOnly
}

func (img *image) flush() error {
	if img.readOnly() {
		return nil
	}
	return img.base().Flush()
}

func (img *image) close() error {
	if img.ob != nil {
		return img.ob.Close()
	}
	ferr := img.flush()
	cerr := img.base().Close()
	if ferr != nil {
		return fmt.Errorf("%s: %w", img.path, ferr)
	}
	if cerr != nil {
		return fmt.Errorf("%s: %w", img.path, cerr)
	}
	return nil
}

// export is a configured export bound to its image. Mutable fields are guarded by Server.mu.
type export struct {
	cfg     Export
	img     *image
	conns   int
	retired bool          // no longer in the configuration; lives on while sessions use it
	root    string        // cow exports and object writers: where the overlays are
	store   ovstore.Store // the overlays at root
}

// objectWrites says whether writers of the export write an overlay of the export's writes
// (a read-write export of an object).
func (e *export) objectWrites() bool { return e.img.ob != nil && !e.cfg.ReadOnly && !e.cfg.Cow }

func (e *export) writable() bool { return !e.cfg.ReadOnly }

func (e *export) describe() string {
	var parts []string
	parts = append(parts, e.cfg.Path, fmt.Sprintf("%d bytes", e.img.size()))
	if e.img.tb != nil {
		parts = append(parts, "treefiles (a file per 4 KiB block)")
	}
	switch {
	case e.objectWrites():
		parts = append(parts, "read-write, one writer at a time (by a lease in the store, across servers), writes in "+e.root+"/writes")
	case e.cfg.ReadOnly:
		parts = append(parts, "read-only")
	case e.cfg.Cow && e.cfg.CowPersistent:
		parts = append(parts, "copy-on-write, persistent overlays in "+e.root)
	case e.cfg.Cow:
		parts = append(parts, "copy-on-write, temporary overlays in "+e.root)
	case e.cfg.Shared:
		parts = append(parts, "read-write, SHARED between writers")
	default:
		parts = append(parts, "read-write, one writer at a time")
	}
	if e.cfg.Default {
		parts = append(parts, "default")
	}
	if len(e.cfg.Allow) > 0 {
		var nets []string
		for _, p := range e.cfg.Allow {
			nets = append(nets, p.String())
		}
		parts = append(parts, "allow "+strings.Join(nets, " "))
	}
	return strings.Join(parts, ", ")
}

// imageWritable says whether the image file must be opened for writing: cow exports and
// read-only exports never write to it.
func imageWritable(e *Export) bool { return !e.ReadOnly && !e.Cow }

// buildExportsLocked opens the images of a new configuration, reusing images already open.
// On error every image it opened is closed again and nothing is changed.
func (s *Server) buildExportsLocked(cfgs []Export) (map[string]*export, *export, error) {
	exports := make(map[string]*export, len(cfgs))
	var opened []*image
	undo := func() {
		for _, e := range exports {
			e.img.refs--
		}
		for _, img := range opened {
			if img.refs == 0 {
				img.base().Close()
				delete(s.images, img.key)
			}
		}
	}
	users := map[fileKey][]*Export{}
	var def *export
	for i := range cfgs {
		cfg := cfgs[i]
		if cfg.Temporary && !isTemporaryImage(cfg.Path) {
			undo()
			return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name), errors.New("temporary: the image is made by Run (nbdroot serve)")}
		}
		var key fileKey
		var ob *objImage
		if objstore.IsURL(cfg.Path) {
			var err error
			if key, ob, err = s.objectKeyLocked(cfg.Path); err != nil {
				undo()
				return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name), err}
			}
		} else if cfg.Tree {
			var err error
			if key, err = treeKey(&cfg); err != nil {
				undo()
				return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name), err}
			}
		} else {
			st, err := statOrCreate(&cfg)
			if err != nil {
				undo()
				return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name), err}
			}
			key = keyOf(st)
		}
		for _, other := range users[key] {
			if imageWritable(&cfg) || imageWritable(other) {
				undo()
				return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name),
					fmt.Errorf("%s is also exported as %q; an image written through one export must not be served by another", cfg.Path, other.Name)}
			}
		}
		users[key] = append(users[key], &cfgs[i])
		img := s.images[key]
		if img == nil && ob != nil {
			img = &image{key: key, path: cfg.Path, ob: ob}
			s.images[key] = img
			opened = append(opened, img)
		}
		if img != nil && img.ob == nil && imageWritable(&cfg) && img.readOnly() {
			undo()
			return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name),
				fmt.Errorf("%s is open read-only for connected clients; it can become writable once they disconnect", cfg.Path)}
		}
		if img != nil && img.ob == nil && !imageWritable(&cfg) && !img.readOnly() && img.writerConns > 0 {
			undo()
			return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name),
				fmt.Errorf("%s is being written by %s; it cannot be re-exported read-only or copy-on-write until that client disconnects", cfg.Path, img.writerName)}
		}
		if img == nil {
			img = &image{key: key, path: cfg.Path}
			var err error
			if cfg.Tree {
				img.tb, err = openTree(cfg.Path, cfg.CreateSize, !imageWritable(&cfg))
			} else {
				img.fb, err = openFile(cfg.Path, !imageWritable(&cfg), false)
			}
			if err != nil {
				undo()
				return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name), err}
			}
			s.images[key] = img
			opened = append(opened, img)
		}
		img.refs++
		e := &export{cfg: cfg, img: img}
		exports[cfg.Name] = e
		if cfg.Cow || e.objectWrites() {
			e.root = s.overlayRoot(&cfg)
			st, err := s.overlayStore(&cfg)
			if err != nil {
				undo()
				return nil, nil, &ConfigError{fmt.Sprintf("export %q", cfg.Name), err}
			}
			e.store = st
		}
	}
	if d := DefaultExport(cfgs); d != nil {
		def = exports[d.Name]
	}
	return exports, def, nil
}

// retireExportLocked drops the configuration's reference to e; its image closes once the
// last session using it ends.
func (s *Server) retireExportLocked(e *export) {
	if e.retired {
		return
	}
	e.retired = true
	s.unrefImageLocked(e.img)
}

func (s *Server) unrefImageLocked(img *image) {
	img.refs--
	if img.refs == 0 {
		if err := img.close(); err != nil {
			s.log.Printf("closing %s: %v", img.path, err)
		}
		if s.images[img.key] == img {
			delete(s.images, img.key)
		}
	}
}

// refusal is an option error reply: the type and a message for the user. A refusal of
// type NBD_REP_ERR_UNKNOWN reaches the client as unknownExport says, whatever its message,
// which is then for the log only: an export hidden by its allow-list answers exactly as
// one that does not exist (conn.refuse).
type refusal struct {
	typ uint32
	msg string
}

func (r *refusal) Error() string { return nbd.RepName(r.typ) + ": " + r.msg }

// lookupLocked finds the export for a requested name; "" means the default export.
func (s *Server) lookupLocked(name string) (*export, *refusal) {
	if name == "" {
		if s.def == nil {
			return nil, unknownExport(name)
		}
		return s.def, nil
	}
	e := s.exports[name]
	if e == nil {
		return nil, unknownExport(name)
	}
	return e, nil
}

// unknownExport is the answer to a client asking for an export that does not exist — or
// that it may not know of.
func unknownExport(name string) *refusal {
	if name == "" {
		return &refusal{nbd.RepErrUnknown, "no default export; ask for one by name"}
	}
	return &refusal{nbd.RepErrUnknown, fmt.Sprintf("no export named %q", name)}
}

// allowedLocked applies the allow-list and TLS requirement of an export.
func (s *Server) allowedLocked(e *export, c client) *refusal {
	if e.cfg.TLSOnly && !c.tls {
		return &refusal{nbd.RepErrTLSReqd, fmt.Sprintf("export %q requires TLS", e.cfg.Name)}
	}
	if e.cfg.AllowNone && c.addr.IsValid() {
		return &refusal{nbd.RepErrUnknown, fmt.Sprintf("client %s is not allowed to use export %q (hidden from it)", c.addr, e.cfg.Name)}
	}
	if (len(e.cfg.Allow) > 0 || len(e.cfg.AllowCerts) > 0) && c.addr.IsValid() && !e.cfg.admits(c) {
		who := c.addr.String()
		if c.cert != nil {
			who += " (" + c.cert.String() + ")"
		}
		return &refusal{nbd.RepErrUnknown, fmt.Sprintf("client %s is not allowed to use export %q (hidden from it)", who, e.cfg.Name)}
	}
	return nil
}

// grant is what the policy decides for one client and export.
type grant struct {
	exp      *export
	readOnly bool
	writer   bool   // takes the image's writer lock
	note     string // why it is read-only, for the log
}

// decideLocked applies allow-list, connection limits and the exclusive-writer rule.
func (s *Server) decideLocked(e *export, c client) (grant, *refusal) {
	if r := s.allowedLocked(e, c); r != nil {
		return grant{}, r
	}
	if e.cfg.MaxConnections > 0 && e.conns >= e.cfg.MaxConnections {
		return grant{}, &refusal{nbd.RepErrPolicy, fmt.Sprintf("export %q has its maximum of %d connections", e.cfg.Name, e.cfg.MaxConnections)}
	}
	g := grant{exp: e}
	if !e.cfg.ReadOnly && !e.cfg.Shared {
		// One identity is one machine: the same identity from a second address is refused
		// like a second writer, so two clients configured alike cannot share an overlay
		// or a writer lock.
		if a := s.attached[exportClient{e.cfg.Name, c.key}]; a != nil && a.from != c.from {
			return grant{}, &refusal{nbd.RepErrPolicy, fmt.Sprintf(
				"client identity %s is attached to export %q from %s; refused from %s (two machines with one identity? it is free once that connection closes)",
				c.key, e.cfg.Name, a.from, c.from)}
		}
	}
	switch {
	case e.cfg.ReadOnly:
		g.readOnly = true
	case e.cfg.Cow, e.cfg.Shared:
	case e.img.writerConns == 0 || e.img.writer == c.key:
		g.writer = true
	case e.cfg.ReadOnlyFallback:
		g.readOnly = true
		g.note = fmt.Sprintf("read-only view: %s holds it read-write", e.img.writerName)
	default:
		return grant{}, &refusal{nbd.RepErrPolicy, fmt.Sprintf(
			"export %q is in use read-write by %s (one writer at a time; it is free once that client disconnects)",
			e.cfg.Name, e.img.writerName)}
	}
	return g, nil
}

// attachment is a client's live connections to an export, from one address.
type attachment struct {
	from  string
	conns int
}

// session is one connection's use of an export: the backend it talks to and what it holds.
type session struct {
	s        *Server
	exp      *export
	client   client
	nc       net.Conn // closed to cut the session (an administrator removing its overlay)
	backend  Backend
	readOnly bool
	writer   bool
	cow      *overlay
	writes   *overlay // an object export's writes, for its writer
	stats    *clientStats
	started  time.Time
	released bool
}

// needsOverlay says whether a grant serves the client through an overlay: its cow
// overlay, or an object export's writes.
func (g grant) needsOverlay() bool {
	return g.exp.cfg.Cow && !g.readOnly || g.writer && g.exp.objectWrites()
}

// openLocked turns a grant into a session, taking the writer lock; ov is the session's cow
// overlay (acquired beforehand, outside Server.mu), which the session now owns.
func (s *Server) openLocked(g grant, c client, nc net.Conn, ov *overlay) *session {
	e := g.exp
	ss := &session{s: s, exp: e, client: c, nc: nc, readOnly: g.readOnly, backend: e.img.base(), started: time.Now()}
	switch {
	case ov != nil && e.cfg.Cow:
		ss.cow, ss.backend = ov, ov
	case ov != nil:
		ss.writes, ss.backend = ov, ov
	}
	if g.writer {
		if e.img.writerConns == 0 {
			e.img.writerExp = e.cfg.Name
		}
		e.img.writer, e.img.writerName = c.key, c.String()
		e.img.writerConns++
		ss.writer = true
	}
	k := exportClient{e.cfg.Name, c.key}
	a := s.attached[k]
	if a == nil {
		a = &attachment{from: c.from}
		s.attached[k] = a
	}
	a.conns++
	ss.stats = s.fleet.open(k, c, a.conns == 1)
	s.sessions[ss] = struct{}{}
	e.conns++
	e.img.refs++
	return ss
}

// release gives back what the session holds; the image closes if it was the last user.
func (ss *session) release() {
	s := ss.s
	s.mu.Lock()
	if ss.released {
		s.mu.Unlock()
		return
	}
	ss.released = true
	s.mu.Unlock()
	// The overlay first, outside Server.mu: closing it syncs it.
	if ss.cow != nil {
		s.releaseOverlay(ss.cow)
	}
	if ss.writes != nil {
		s.releaseOverlay(ss.writes)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := ss.exp
	e.conns--
	if ss.writer {
		e.img.writerConns--
		if e.img.writerConns == 0 {
			e.img.writer, e.img.writerName, e.img.writerExp = ovstore.Client{}, "", ""
		}
	}
	k := exportClient{e.cfg.Name, ss.client.key}
	if a := s.attached[k]; a != nil {
		if a.conns--; a.conns == 0 {
			delete(s.attached, k)
		}
	}
	ss.stats.close()
	delete(s.sessions, ss)
	s.unrefImageLocked(e.img)
}

// transmissionFlags are the NBD_FLAG_* bits for a session (proto.md "Transmission flags").
// CAN_MULTI_CONN is honest because every connection to an image shares one descriptor and
// a cow client's connections share one overlay, so a FLUSH covers writes acknowledged on
// all of them.
func transmissionFlags(e *Export, readOnly, structured bool) uint16 {
	f := nbd.TransHasFlags | nbd.TransSendFlush | nbd.TransSendFUA | nbd.TransCanMultiConn | nbd.TransSendCache
	if readOnly {
		f |= nbd.TransReadOnly
	} else {
		f |= nbd.TransSendWriteZeroes | nbd.TransSendFastZero
		if !e.NoTrim {
			f |= nbd.TransSendTrim
		}
	}
	if structured {
		f |= nbd.TransSendDF
	}
	if e.Rotational {
		f |= nbd.TransRotational
	}
	return f
}

// statOrCreate stats an export's image, creating it sparse when CreateSize asks for that.
func statOrCreate(e *Export) (os.FileInfo, error) {
	st, err := os.Stat(e.Path)
	if errors.Is(err, os.ErrNotExist) && e.CreateSize > 0 {
		f, cerr := os.OpenFile(e.Path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if cerr != nil {
			return nil, cerr
		}
		cerr = f.Truncate(e.CreateSize)
		if cerr == nil {
			cerr = f.Close()
		} else {
			f.Close()
		}
		if cerr != nil {
			return nil, cerr
		}
		return os.Stat(e.Path)
	}
	if err != nil {
		return nil, err
	}
	if e.CreateSize > 0 && st.Mode().IsRegular() && st.Size() != e.CreateSize {
		return nil, fmt.Errorf("%s is %d bytes but filesize says %d", e.Path, st.Size(), e.CreateSize)
	}
	return st, nil
}
