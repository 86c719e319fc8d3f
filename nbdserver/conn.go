package nbdserver

import (
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// conn is one client connection: the handshake, then the transmission phase.
type conn struct {
	s      *Server
	id     uint64
	nc     net.Conn // the accepted socket
	rw     net.Conn // nc, or the TLS connection on top of it after STARTTLS
	cfg    Config
	remote string
	client client

	// Negotiated in the handshake.
	noZeroes   bool
	structured bool
	metaExport string // export the last SET_META_CONTEXT was for (resolved, so "" is the default's name)
	metaAlloc  bool

	// Slots (slots.go), guarded by Server.mu except used.
	accepted time.Time
	slots    []string    // keys of the slots this connection holds
	idSlot   string      // the identity slot among them
	used     atomic.Bool // it has sent a request
	evicted  bool        // closed to make room for another

	dmu        sync.Mutex
	readDL     time.Time // the read deadline we last asked for
	writeDL    time.Time // the write deadline we last asked for
	drainAt    time.Time // set by Shutdown: no read waits past it
	cutAt      time.Time // set by Shutdown: no write waits past it
	inDrain    bool
	handshaked bool
}

func newConn(s *Server, nc net.Conn, cfg Config) *conn {
	c := &conn{s: s, id: s.nextID.Add(1), nc: nc, rw: nc, cfg: cfg, remote: nc.RemoteAddr().String(), accepted: time.Now()}
	c.client = identify(nc)
	return c
}

func (c *conn) logf(format string, args ...any) {
	c.s.log.Printf("conn %s: %s", c.remote, fmt.Sprintf(format, args...))
}

// setReadDeadline sets the read deadline, never later than a pending drain.
func (c *conn) setReadDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.readDL = t
	if c.inDrain && (t.IsZero() || t.After(c.drainAt)) {
		t = c.drainAt
	}
	c.nc.SetReadDeadline(t)
}

// setWriteDeadline sets the write deadline, never later than a pending cut-off.
func (c *conn) setWriteDeadline(t time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.writeDL = t
	if c.inDrain && (t.IsZero() || t.After(c.cutAt)) {
		t = c.cutAt
	}
	c.nc.SetWriteDeadline(t)
}

// beginDrain is called by Shutdown: the reader stops waiting for requests at at, and
// replies still unsent at cut are abandoned — a client that stopped reading them cannot
// hold the shutdown.
func (c *conn) beginDrain(at, cut time.Time) {
	c.dmu.Lock()
	defer c.dmu.Unlock()
	c.inDrain, c.drainAt, c.cutAt = true, at, cut
	t := c.readDL
	if t.IsZero() || t.After(at) {
		t = at
	}
	c.nc.SetReadDeadline(t)
	if t := c.writeDL; t.IsZero() || t.After(cut) {
		c.nc.SetWriteDeadline(cut)
	}
}

func (c *conn) serve() {
	defer c.nc.Close()
	start := time.Now()
	dl := start.Add(c.cfg.HandshakeTimeout)
	c.setReadDeadline(dl)
	c.setWriteDeadline(dl)
	ss, err := c.negotiate()
	if err != nil {
		if errors.Is(err, errAborted) {
			c.logf("client ended the negotiation without choosing an export")
		} else {
			c.logf("handshake failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
		return
	}
	c.setWriteDeadline(time.Time{})
	c.setReadDeadline(time.Time{})
	st := c.transmit(ss)
	ss.release()
	c.logf("closed export %q after %v: %s", ss.exp.cfg.Name, time.Since(start).Round(time.Millisecond), st)
}

var errAborted = errors.New("client aborted the handshake")

// maxOptions bounds the options of one handshake; no real client needs more than a handful.
const maxOptions = 1024

func (c *conn) negotiate() (*session, error) {
	var hello [18]byte
	be := binary.BigEndian
	be.PutUint64(hello[0:], nbd.NBDMagic)
	be.PutUint64(hello[8:], nbd.IHaveOpt)
	be.PutUint16(hello[16:], nbd.FlagFixedNewstyle|nbd.FlagNoZeroes)
	if _, err := c.rw.Write(hello[:]); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.rw, cf[:]); err != nil {
		return nil, fmt.Errorf("client flags: %w", err)
	}
	flags := be.Uint32(cf[:])
	// proto.md: the server MUST drop the connection on client flags it does not know.
	if flags&^(nbd.ClientFlagFixedNewstyle|nbd.ClientFlagNoZeroes) != 0 {
		return nil, fmt.Errorf("unknown client flags %#x", flags)
	}
	c.noZeroes = flags&nbd.ClientFlagNoZeroes != 0
	fixed := flags&nbd.ClientFlagFixedNewstyle != 0

	var hdr [nbd.OptionHeaderSize]byte
	for n := 0; ; n++ {
		if n == maxOptions {
			return nil, fmt.Errorf("more than %d options", maxOptions)
		}
		if _, err := io.ReadFull(c.rw, hdr[:]); err != nil {
			if n > 0 && errors.Is(err, io.EOF) {
				return nil, errAborted
			}
			return nil, fmt.Errorf("option header: %w", err)
		}
		o, err := nbd.ParseOption(hdr[:])
		if err != nil {
			return nil, err
		}
		if o.Length > nbd.MaxOptionLength {
			return nil, fmt.Errorf("%s with %d bytes of data (limit %d)", nbd.OptName(o.Option), o.Length, nbd.MaxOptionLength)
		}
		data := make([]byte, o.Length)
		if _, err := io.ReadFull(c.rw, data); err != nil {
			return nil, fmt.Errorf("%s data: %w", nbd.OptName(o.Option), err)
		}
		ss, err := c.option(o.Option, data, fixed)
		if err != nil || ss != nil {
			return ss, err
		}
	}
}

// option handles one option. It returns a session when the option entered transmission,
// an error when the connection must close, and (nil, nil) to keep negotiating.
func (c *conn) option(opt uint32, data []byte, fixed bool) (*session, error) {
	if c.s.draining.Load() && opt != nbd.OptAbort {
		if opt == nbd.OptExportName {
			return nil, errors.New("server shutting down")
		}
		return nil, c.reply(opt, nbd.RepErrShutdown, []byte("server is shutting down"))
	}
	if c.cfg.TLSMode == TLSRequire && !c.client.tls && opt != nbd.OptStartTLS && opt != nbd.OptAbort {
		if opt == nbd.OptExportName {
			return nil, errors.New("NBD_OPT_EXPORT_NAME before TLS, which this server requires")
		}
		return nil, c.reply(opt, nbd.RepErrTLSReqd, []byte("this server requires TLS: send NBD_OPT_STARTTLS first"))
	}
	switch opt {
	case nbd.OptExportName:
		return c.exportName(string(data))
	case nbd.OptAbort:
		c.reply(opt, nbd.RepAck, nil) // the client may already be gone (proto.md)
		return nil, errAborted
	case nbd.OptList:
		return nil, c.list(data)
	case nbd.OptStartTLS:
		return nil, c.startTLS(data, fixed)
	case nbd.OptInfo, nbd.OptGo:
		return c.infoGo(opt, data)
	case nbd.OptStructuredReply:
		if len(data) != 0 {
			return nil, c.reply(opt, nbd.RepErrInvalid, []byte("NBD_OPT_STRUCTURED_REPLY takes no data"))
		}
		c.structured = true
		return nil, c.reply(opt, nbd.RepAck, nil)
	case nbd.OptListMetaContext, nbd.OptSetMetaContext:
		return nil, c.metaContext(opt, data)
	case nbd.OptNbdrootClient:
		return nil, c.clientOption(data)
	}
	return nil, c.reply(opt, nbd.RepErrUnsup, []byte(nbd.OptName(opt)+" is not supported"))
}

func (c *conn) reply(opt, typ uint32, data []byte) error {
	b := nbd.AppendOptReply(make([]byte, 0, nbd.OptReplyHeaderSize+len(data)), opt, typ, data)
	if _, err := c.rw.Write(b); err != nil {
		return fmt.Errorf("reply to %s: %w", nbd.OptName(opt), err)
	}
	return nil
}

func (c *conn) refuse(opt uint32, name string, r *refusal) error {
	c.logf("refused %s %q: %s", nbd.OptName(opt), name, r.msg)
	if r.typ == nbd.RepErrUnknown {
		// An export the allow-list hides must not be told apart from one that does not
		// exist: the same reply, byte for byte; the log above says which it was.
		r = unknownExport(name)
	}
	return c.reply(opt, r.typ, []byte(r.msg))
}

// exportName handles NBD_OPT_EXPORT_NAME, which cannot be refused politely: the only answer
// to a bad name or a policy refusal is closing the connection (proto.md).
func (c *conn) exportName(name string) (*session, error) {
	if len(name) > nbd.MaxNameLength {
		return nil, fmt.Errorf("NBD_OPT_EXPORT_NAME of %d bytes", len(name))
	}
	ss, g, r := c.open(name)
	if r != nil {
		return nil, fmt.Errorf("refused NBD_OPT_EXPORT_NAME %q: %s", name, r.msg)
	}
	// Structured replies are only valid with OPT_GO (proto.md: EXPORT_NAME ends negotiation
	// without the server confirming), but clients that asked for them expect them.
	flags := transmissionFlags(&ss.exp.cfg, ss.readOnly, c.structured)
	b := nbd.AppendExportNameReply(nil, uint64(ss.backend.Size()), flags, c.noZeroes)
	if _, err := c.rw.Write(b); err != nil {
		ss.release()
		return nil, fmt.Errorf("export reply: %w", err)
	}
	c.logOpen("NBD_OPT_EXPORT_NAME", ss, g)
	return ss, nil
}

func (c *conn) logOpen(how string, ss *session, g grant) {
	mode := "read-write"
	switch {
	case ss.readOnly:
		mode = "read-only"
	case ss.cow != nil:
		mode = "copy-on-write (" + ss.cow.describe() + ")"
	case ss.exp.cfg.Shared:
		mode = "read-write (shared)"
	}
	var extra []string
	if c.structured {
		extra = append(extra, "structured replies")
	}
	if c.metaAlloc {
		extra = append(extra, nbd.MetaBaseAllocation)
	}
	if c.client.tls {
		extra = append(extra, "TLS")
	}
	if g.note != "" {
		extra = append(extra, g.note)
	}
	switch {
	case c.client.identified && !c.client.resume.IsZero():
		extra = append(extra, "client "+c.client.key.ID+", resuming overlay "+c.client.resume.String())
	case c.client.identified:
		extra = append(extra, "client "+c.client.key.ID)
	case c.client.cert != nil && c.client.cert.id != "":
		extra = append(extra, "client "+c.client.key.ID+" (certificate)")
	case ss.cow != nil || ss.writer:
		extra = append(extra, "WARNING: no client identity (NBD_OPT_NBDROOT_CLIENT): keyed by its address "+c.client.from)
	}
	s := fmt.Sprintf("%s export %q %s", how, ss.exp.cfg.Name, mode)
	if len(extra) > 0 {
		s += " [" + strings.Join(extra, ", ") + "]"
	}
	c.logf("%s", s)
}

// open resolves a name and applies policy, taking the export for this connection.
func (c *conn) open(name string) (*session, grant, *refusal) {
	s := c.s
	s.mu.Lock()
	e, r := s.lookupLocked(name)
	var g grant
	if r == nil {
		g, r = s.decideLocked(e, c.client)
	}
	s.mu.Unlock()
	if r != nil {
		return nil, grant{}, r
	}
	var ov *overlay
	if g.needsOverlay() {
		// Outside Server.mu: opening or creating an overlay syncs files.
		if ov, r = s.acquireOverlay(e, c.client); r != nil {
			return nil, grant{}, r
		}
	}
	s.mu.Lock()
	// Decide again: another connection may have taken the export meanwhile.
	if g, r = s.decideLocked(e, c.client); r == nil && g.needsOverlay() == (ov != nil) {
		ss := s.openLocked(g, c.client, c.nc, ov)
		s.mu.Unlock()
		return ss, g, nil
	}
	s.mu.Unlock()
	if ov != nil {
		s.releaseOverlay(ov)
	}
	if r == nil {
		r = &refusal{nbd.RepErrPolicy, fmt.Sprintf("export %q changed while connecting; try again", name)}
	}
	return nil, grant{}, r
}

func (c *conn) infoGo(opt uint32, data []byte) (*session, error) {
	name, infos, err := nbd.ParseInfoRequest(data)
	if err != nil {
		return nil, c.reply(opt, nbd.RepErrInvalid, []byte(err.Error()))
	}
	var (
		ss    *session
		g     grant
		r     *refusal
		size  int64
		ro    bool
		e     *export
		ovlID nbd.OverlayID
	)
	if opt == nbd.OptGo {
		if ss, g, r = c.open(name); ss != nil {
			e, size, ro = ss.exp, ss.backend.Size(), ss.readOnly
			if ss.cow != nil {
				ovlID = ss.cow.h.ID
			}
		}
	} else {
		c.s.mu.Lock()
		if e, r = c.s.lookupLocked(name); r == nil {
			if g, r = c.s.decideLocked(e, c.client); r == nil {
				size, ro = e.img.size(), g.readOnly
			}
		}
		c.s.mu.Unlock()
		if r == nil && c.client.identified && g.needsOverlay() {
			ovlID, r = c.s.infoOverlayID(e, c.client)
		}
	}
	if r != nil {
		return nil, c.refuse(opt, name, r)
	}
	fail := func(err error) (*session, error) {
		if ss != nil {
			ss.release()
		}
		return nil, err
	}
	flags := transmissionFlags(&e.cfg, ro, c.structured)
	if err := c.reply(opt, nbd.RepInfo, nbd.AppendInfoExport(nil, uint64(size), flags)); err != nil {
		return fail(err)
	}
	for _, i := range infos {
		var b []byte
		switch i {
		case nbd.InfoName:
			b = nbd.AppendInfoString(nil, nbd.InfoName, e.cfg.Name)
		case nbd.InfoDescription:
			if e.cfg.Description == "" {
				continue
			}
			b = nbd.AppendInfoString(nil, nbd.InfoDescription, e.cfg.Description)
		default:
			continue // unknown or already sent information types are ignored (proto.md)
		}
		if err := c.reply(opt, nbd.RepInfo, b); err != nil {
			return fail(err)
		}
	}
	// Block sizes are sent unasked: any byte granularity works, 4 KiB is what the page cache
	// likes, and payloads beyond 32 MiB are refused (proto.md "Block size constraints").
	if err := c.reply(opt, nbd.RepInfo, nbd.AppendInfoBlockSize(nil, 1, 4096, nbd.MaxPayload)); err != nil {
		return fail(err)
	}
	// The overlay ID goes to every client that named itself, asked or not (CONTRACTS.md):
	// it is what the client insists on when it reconnects.
	if c.client.identified {
		if err := c.reply(opt, nbd.RepInfo, nbd.AppendInfoOverlay(nil, ovlID)); err != nil {
			return fail(err)
		}
	}
	if opt == nbd.OptGo && c.metaAlloc && c.metaExport != e.cfg.Name {
		// Contexts were selected for another export; they do not carry over (proto.md).
		c.metaAlloc = false
	}
	if err := c.reply(opt, nbd.RepAck, nil); err != nil {
		return fail(err)
	}
	if opt == nbd.OptGo {
		c.logOpen("NBD_OPT_GO", ss, g)
	}
	return ss, nil
}

func (c *conn) list(data []byte) error {
	if len(data) != 0 {
		return c.reply(nbd.OptList, nbd.RepErrInvalid, []byte("NBD_OPT_LIST takes no data"))
	}
	if c.cfg.DenyList {
		return c.reply(nbd.OptList, nbd.RepErrPolicy, []byte("listing exports is disabled on this server"))
	}
	c.s.mu.Lock()
	var replies [][]byte
	for _, e := range c.s.exports {
		// Exports this client may not use are not advertised to it.
		if c.s.allowedLocked(e, c.client) != nil {
			continue
		}
		replies = append(replies, nbd.AppendServerReply(nil, e.cfg.Name, e.cfg.Description))
	}
	c.s.mu.Unlock()
	for _, b := range replies {
		if err := c.reply(nbd.OptList, nbd.RepServer, b); err != nil {
			return err
		}
	}
	return c.reply(nbd.OptList, nbd.RepAck, nil)
}

func (c *conn) startTLS(data []byte, fixed bool) error {
	switch {
	case len(data) != 0:
		return c.reply(nbd.OptStartTLS, nbd.RepErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
	case c.cfg.TLSMode == TLSOff || c.cfg.TLS == nil:
		return c.reply(nbd.OptStartTLS, nbd.RepErrPolicy, []byte("TLS is not enabled on this server"))
	case c.client.tls:
		return c.reply(nbd.OptStartTLS, nbd.RepErrInvalid, []byte("TLS is already active"))
	case !fixed:
		return c.reply(nbd.OptStartTLS, nbd.RepErrInvalid, []byte("TLS needs fixed newstyle negotiation"))
	}
	if err := c.reply(nbd.OptStartTLS, nbd.RepAck, nil); err != nil {
		return err
	}
	tc := tls.Server(c.nc, c.cfg.TLS)
	if err := tc.Handshake(); err != nil {
		// Too late to continue in clear text: the client has started TLS (proto.md).
		return fmt.Errorf("TLS handshake: %w", err)
	}
	c.rw = tc
	c.client.tls = true
	c.authenticate(tc.ConnectionState())
	return nil
}

// metaContext handles NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. The only
// context is base:allocation (proto.md "Metadata querying"), with ID 1.
func (c *conn) metaContext(opt uint32, data []byte) error {
	if !c.structured {
		return c.reply(opt, nbd.RepErrInvalid, []byte("negotiate structured replies first"))
	}
	req, err := nbd.ParseMetaContextRequest(data)
	if err != nil {
		return c.reply(opt, nbd.RepErrInvalid, []byte(err.Error()))
	}
	c.s.mu.Lock()
	e, r := c.s.lookupLocked(req.Export)
	if r == nil {
		r = c.s.allowedLocked(e, c.client)
	}
	c.s.mu.Unlock()
	if r != nil {
		return c.refuse(opt, req.Export, r)
	}
	match := false
	if opt == nbd.OptListMetaContext && len(req.Queries) == 0 {
		match = true
	}
	for _, q := range req.Queries {
		if q == nbd.MetaBaseAllocation || opt == nbd.OptListMetaContext && q == "base:" {
			match = true
		}
	}
	if opt == nbd.OptSetMetaContext {
		c.metaAlloc, c.metaExport = match, e.cfg.Name
	}
	if match {
		if err := c.reply(opt, nbd.RepMetaContext, nbd.AppendMetaContextReply(nil, metaAllocID, nbd.MetaBaseAllocation)); err != nil {
			return err
		}
	}
	return c.reply(opt, nbd.RepAck, nil)
}

// metaAllocID is the context ID of base:allocation on every connection.
const metaAllocID = 1
