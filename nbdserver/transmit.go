package nbdserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/nbdroot/nbdroot/nbd"
)

// The transmission phase is served by one reader goroutine per connection and a small,
// bounded pool of workers:
//
//   - The reader parses requests straight out of a large input buffer (inbuf), so one
//     read(2) brings all the requests that have arrived.
//   - Requests that cannot block for long are served by the reader itself: reads already in
//     the page cache (copied from a mapping of the image or read with preadv2 RWF_NOWAIT,
//     straight into the outgoing batch) and page-cache writes (pwrite straight from the
//     input buffer). Their replies collect in a batch that goes out in one writev only when
//     the socket has no further request for the reader — when it would otherwise wait — so
//     a client with many requests in flight gets many replies per write, and a client with
//     one gets its reply at once.
//   - On plain sockets the reader's reads and the replies' writes are raw system calls on
//     the non-blocking descriptor (rawSocket), waiting through the runtime's poller only
//     when the socket is empty or full.
//   - Everything that may block (cache misses, FUA, FLUSH, TRIM, zeroing, block status,
//     large transfers) goes to a worker, so a slow fdatasync never stalls reads behind it.
//     Replies go out in completion order (proto.md allows it; handles tell them apart).
//
// Memory is bounded per connection, whatever lengths a client sends: at most MaxInFlight
// workers, connPayloadBudget bytes of write payloads being stored, and connReplyLimit bytes
// of replies not yet sent (replymem.go) — a client that stops reading its replies stops
// being read from. Reads too large to buffer whole are sent with sendfile or streamed in
// pieces (streamRead).
const (
	readBufSize       = 256 << 10
	arenaSize         = 256 << 10
	inlineMax         = 128 << 10 // reads and writes up to this size may be served inline
	holeCheckMin      = 64 << 10  // structured reads at least this large report holes
	spliceMin         = 64 << 10  // write payloads with at least this much still in the socket are spliced
	sendfileMin       = 64 << 10  // reads at least this large go out with sendfile
	maxReadChunks     = 64        // hole/data chunks in one structured read reply
	maxExtents        = 1024      // descriptors in one block status reply
	connPayloadBudget = 64 << 20
)

// txStats are counted by the connection reader; logged when the connection closes.
type txStats struct {
	requests, reads, writes, flushes, other, errors uint64
	bytesRead, bytesWritten                         uint64
}

func (st txStats) String() string {
	return fmt.Sprintf("%d requests (%d reads %s, %d writes %s, %d flushes, %d other, %d errors)",
		st.requests, st.reads, nbd.FormatSize(st.bytesRead), st.writes, nbd.FormatSize(st.bytesWritten),
		st.flushes, st.other, st.errors)
}

// tx is the transmission state of one connection.
type tx struct {
	c          *conn
	ss         *session
	be         Backend
	nw         nowaitReader // nil if the backend cannot try reads without blocking
	holes      bool         // the backend can report holes worth sending as hole chunks
	fileFD     int          // the image's descriptor for sendfile, or -1
	file       *fileBackend // the image, when fileFD is set
	size       uint64
	readOnly   bool
	structured bool
	metaAlloc  bool
	fuaAlways  bool // every write is synchronous (export "sync")
	idle       time.Duration

	in     *inbuf
	w      *replyWriter
	idleAt time.Time // when the read deadline was last pushed back (with idle > 0)
	meter  bulkMeter // is this connection a bulk transfer? (fairness.go)

	// Large page-cache writes to a file backend are spliced from the socket (writeSpliced)
	// when splice is set; pipe is created at the first such write.
	splice   *rawSocket
	spliceFD int
	pipe     *pipe

	// The reader's outgoing batch: small replies and inline read data are laid out in
	// arena; big payloads join as their own iovecs.
	arena    *buffer
	segStart int
	iov      [][]byte
	rel      []releaser

	work       chan *request
	nworkers   int
	maxWorkers int
	wg         sync.WaitGroup
	budget     *semaphore.Weighted // write payloads
	acct       *replyAcct          // reply memory

	stats    txStats
	m        txMetrics
	shutdown atomic.Bool
}

// request is one request handed to a worker; it is pooled, and its reply header and buffer
// live until the reply writer has sent them.
type request struct {
	nbd.Request
	t      *tx
	buf    *buffer
	budget int64
	start  time.Time // for the latency metrics
	bulk   bool      // a bulk transfer's read, sent at a lower CPU priority (fairness.go)
	hdr    [64]byte
}

var requestPool = sync.Pool{New: func() any { return new(request) }}

func (r *request) release() {
	r.dropBuffer()
	r.t, r.bulk = nil, false
	requestPool.Put(r)
}

// dropBuffer frees the request's buffer before its reply is sent: a stored write's payload
// is not needed for the reply, and must not wait for the client to read it.
func (r *request) dropBuffer() {
	if r.buf != nil {
		r.buf.release()
		r.buf = nil
	}
	if r.budget > 0 {
		r.t.budget.Release(r.budget)
		r.budget = 0
	}
}

func (c *conn) transmit(ss *session) txStats {
	t := &tx{
		c:          c,
		ss:         ss,
		be:         ss.backend,
		size:       uint64(ss.backend.Size()),
		readOnly:   ss.readOnly,
		structured: c.structured,
		metaAlloc:  c.metaAlloc,
		fuaAlways:  ss.exp.cfg.Sync,
		idle:       ss.exp.cfg.IdleTimeout,
		w:          newReplyWriter(c.rw),
		work:       make(chan *request),
		maxWorkers: c.cfg.MaxInFlight,
		budget:     semaphore.NewWeighted(connPayloadBudget),
		m:          txMetrics{cs: ss.stats},
		acct:       newReplyAcct(&c.s.replyMem, connReplyLimit),
		meter:      bulkMeter{limit: c.s.bulkBytes},
	}
	t.w.acct = t.acct
	var src source = readerSource{c.rw}
	if rs := newRawSocket(c.rw); rs != nil {
		src = rs
		if fb, ok := t.be.(*fileBackend); ok && !fb.readOnly && !fb.sync {
			t.splice, t.spliceFD = rs, fb.fd
		}
	}
	t.in = newInbuf(src, readBufSize, t.beforeWait)
	if nw, ok := t.be.(nowaitReader); ok {
		t.nw = nw
	}
	t.fileFD = -1
	if fb, ok := t.be.(*fileBackend); ok {
		t.holes = !fb.block
		if t.w.sendfile != nil {
			t.fileFD, t.file = fb.fd, fb
		}
	}
	if _, ok := t.be.(*overlay); ok {
		t.holes = true
	}
	err := t.run()
	if ferr := t.flush(); err == nil {
		err = ferr
	}
	// Every request received is answered before the connection closes (proto.md: DISC
	// requires handling all outstanding requests).
	t.wg.Wait()
	t.m.flush(&t.stats)
	close(t.work)
	if t.pipe != nil {
		t.pipe.close()
	}
	if t.arena != nil {
		t.arena.release()
	}
	t.in.release()
	switch {
	case err == nil:
	case errors.Is(err, os.ErrDeadlineExceeded) && t.shutdown.Load():
		c.logf("server shutting down: connection closed after draining")
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.logf("idle for %v: closing", t.idle)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), isConnReset(err):
		c.logf("client went away without NBD_CMD_DISC")
	default:
		c.logf("closing: %v", err)
	}
	return t.stats
}

// beforeWait runs whenever the reader is about to wait for the client: the replies queued
// so far go out first (they may be what the client waits for), and the idle timeout starts.
func (t *tx) beforeWait() error {
	if err := t.flush(); err != nil {
		return err
	}
	t.m.flush(&t.stats)
	if !t.meter.bulk {
		t.c.s.active.note(time.Now())
	}
	if t.idle > 0 {
		t.idleAt = time.Now()
		t.c.setReadDeadline(t.idleAt.Add(t.idle))
	}
	return nil
}

// run reads and dispatches requests until DISC, an error or the end of a drain.
func (t *tx) run() error {
	for {
		if t.idle > 0 && t.in.buffered() < nbd.RequestSize && time.Since(t.idleAt) > t.idle/2 {
			// A client that keeps us busy never lets the reader wait, so the deadline set
			// before the last wait would expire under it: push it back now and then.
			t.idleAt = time.Now()
			t.c.setReadDeadline(t.idleAt.Add(t.idle))
		}
		h, err := t.in.peek(nbd.RequestSize)
		if err != nil {
			return err
		}
		req, err := nbd.ParseRequest(h)
		if err != nil {
			return err
		}
		t.in.discard(nbd.RequestSize)
		if t.stats.requests == 0 {
			t.c.used.Store(true)
		}
		t.stats.requests++
		t.m.begin()
		if t.c.s.draining.Load() {
			t.shutdown.Store(true)
			if req.Type == nbd.CmdDisc {
				return nil
			}
			if err := t.refuseShutdown(req); err != nil {
				return err
			}
			continue
		}
		switch req.Type {
		case nbd.CmdRead:
			err = t.read(req)
		case nbd.CmdWrite:
			err = t.write(req)
		case nbd.CmdDisc:
			return nil
		case nbd.CmdFlush:
			t.stats.flushes++
			err = t.simple(req, nbd.CmdFlagFUA, false, false)
		case nbd.CmdTrim:
			t.stats.other++
			err = t.simple(req, nbd.CmdFlagFUA, true, true)
		case nbd.CmdWriteZeroes:
			t.stats.other++
			err = t.simple(req, nbd.CmdFlagFUA|nbd.CmdFlagNoHole|nbd.CmdFlagFastZero, true, true)
		case nbd.CmdCache:
			t.stats.other++
			err = t.simple(req, nbd.CmdFlagFUA, false, true)
		case nbd.CmdBlockStatus:
			t.stats.other++
			if !t.metaAlloc {
				// proto.md: block status without a selected context SHOULD get EINVAL.
				err = t.replyError(req, nbd.EINVAL, "no metadata context negotiated")
				break
			}
			err = t.simple(req, nbd.CmdFlagFUA|nbd.CmdFlagReqOne, false, true)
		default:
			err = t.replyError(req, nbd.EINVAL, "unknown command")
		}
		t.m.end(req.Type, &t.stats)
		if err != nil {
			return err
		}
	}
}

// inBounds reports whether [off, off+length) lies inside the export, without overflow.
func (t *tx) inBounds(r nbd.Request) bool {
	return r.Offset <= t.size && uint64(r.Length) <= t.size-r.Offset
}

// refuseShutdown answers a request that arrived after Shutdown began with ESHUTDOWN.
func (t *tx) refuseShutdown(r nbd.Request) error {
	if r.Type == nbd.CmdWrite {
		if err := t.skip(int(r.Length)); err != nil {
			return err
		}
	}
	return t.replyError(r, nbd.ESHUTDOWN, "server is shutting down")
}

func (t *tx) skip(n int) error { return t.in.skip(n) }

func (t *tx) read(r nbd.Request) error {
	t.stats.reads++
	allowed := nbd.CmdFlagFUA
	if t.structured {
		allowed |= nbd.CmdFlagDF
	}
	switch {
	case r.Flags&^allowed != 0:
		return t.replyError(r, nbd.EINVAL, "unsupported flags for READ")
	case !t.inBounds(r):
		return t.replyError(r, nbd.EINVAL, "READ beyond the end of the export")
	case r.Length == 0:
		return t.replyOK(r)
	case r.Length > nbd.MaxPayload:
		return t.readHuge(r)
	}
	n := int(r.Length)
	t.stats.bytesRead += uint64(n)
	holeCheck := t.structured && t.holes && n >= holeCheckMin && r.Flags&nbd.CmdFlagDF == 0
	if holeCheck && t.fileFD < 0 && t.nw != nil && n <= bigInlineMax && t.allData(int64(r.Offset), int64(n)) {
		holeCheck = false
	}
	hl := nbd.SimpleReplySize
	if t.structured {
		hl = nbd.OffsetDataHeaderSize
	}
	// A bulk transfer yields to the other clients (fairness.go): its large reads are sent
	// from a low-priority thread while others are being served.
	bulk := false
	if t.fileFD >= 0 && n >= sendfileMin {
		now := time.Now()
		bulk = t.meter.add(int64(n), now) && t.c.s.active.recent(now)
	}
	if t.nw != nil && n <= inlineMax && !holeCheck && !bulk {
		p := t.reserve(hl + n)
		ok, err := t.nw.ReadAtNoWait(p[hl:], int64(r.Offset))
		if ok {
			t.readHeader(p[:0], r)
			return nil
		}
		t.unreserve(hl + n)
		if err != nil {
			return t.replyError(r, errnoOf(err), "read failed")
		}
	}
	if t.fileFD >= 0 && n >= sendfileMin || n > streamChunk {
		// Sent with sendfile (see serveRead), no buffer needed: by the reader itself when
		// the range is in the page cache (sendfile will not wait for the disk), else by a
		// worker. Reads too large to buffer whole are streamed by a worker.
		req, err := t.newRequest(r, 0)
		if err != nil {
			return err
		}
		req.bulk = bulk
		if t.fileFD >= 0 && t.file.cached(int64(r.Offset), int64(n)) {
			if err := t.flush(); err != nil {
				req.release()
				return err
			}
			t.serveRead(req)
			return t.w.failed()
		}
		t.dispatch(req)
		return nil
	}
	req, err := t.newReadRequest(r, n)
	if err != nil {
		return err
	}
	if t.nw != nil && n > inlineMax && !holeCheck {
		// Too big for the batch, but maybe cached: read it here and send the buffer as its
		// own iovec, sparing a worker handoff.
		ok, err := t.nw.ReadAtNoWait(req.buf.b, int64(r.Offset))
		if ok {
			t.readHeader(t.reserve(hl)[:0], r)
			t.appendBig(req.buf.b, req)
			return nil
		}
		if err != nil {
			req.release()
			return t.replyError(r, errnoOf(err), "read failed")
		}
	}
	t.dispatch(req)
	return nil
}

// readHeader writes the reply header of a successful read into b (which has room for it).
func (t *tx) readHeader(b []byte, r nbd.Request) {
	if t.structured {
		nbd.AppendOffsetDataHeader(b, r.Handle, nbd.ReplyFlagDone, r.Offset, r.Length)
	} else {
		nbd.AppendSimpleReply(b, nbd.SimpleReply{Handle: r.Handle})
	}
}

// allData reports whether a range is all allocated data, so a structured read of it needs
// no hole chunks.
func (t *tx) allData(off, n int64) bool {
	all := false
	t.be.Extents(off, n, func(l int64, flags uint32) bool {
		all = l == n && flags&nbd.StateZero == 0
		return false
	})
	return all
}

// appendBig adds a buffer to the batch as its own iovec; rel frees it once it is sent.
func (t *tx) appendBig(b []byte, rel releaser) {
	if t.arena != nil && len(t.arena.b) > t.segStart {
		t.iov = append(t.iov, t.arena.b[t.segStart:])
		t.segStart = len(t.arena.b)
	}
	t.iov = append(t.iov, b)
	t.rel = append(t.rel, rel)
}

// checkWrite is why a WRITE is refused before its payload is read (0 when it is not):
// flags it may not carry, a read-only export, a range past the end.
func (t *tx) checkWrite(r nbd.Request) (errno uint32, msg string) {
	switch {
	case r.Flags&^nbd.CmdFlagFUA != 0:
		return nbd.EINVAL, "unsupported flags for WRITE"
	case t.readOnly:
		return nbd.EPERM, "export is read-only"
	case !t.inBounds(r):
		return nbd.ENOSPC, "WRITE beyond the end of the export"
	}
	return 0, ""
}

func (t *tx) write(r nbd.Request) error {
	t.stats.writes++
	if r.Length > nbd.MaxPayload {
		return t.writeHuge(r)
	}
	n := int(r.Length)
	if errno, msg := t.checkWrite(r); errno != 0 {
		if err := t.skip(n); err != nil {
			return err
		}
		return t.replyError(r, errno, msg)
	}
	if n == 0 {
		return t.replyOK(r)
	}
	t.stats.bytesWritten += uint64(n)
	fua := r.Flags&nbd.CmdFlagFUA != 0 || t.fuaAlways
	if n <= inlineMax && !fua {
		p, err := t.in.peek(n)
		if err != nil {
			return unexpected(err)
		}
		werr := t.be.WriteAt(p, int64(r.Offset), false)
		t.in.discard(n)
		if werr != nil {
			return t.replyError(r, errnoOf(werr), "write failed")
		}
		return t.replyOK(r)
	}
	if t.splice != nil && !fua && n-t.in.buffered() >= spliceMin && t.havePipe() {
		return t.writeSpliced(r)
	}
	if vw, ok := t.be.(vectorWriter); ok && !fua {
		// A large page-cache write, here rather than on a worker: the part of the payload
		// already in the read buffer is written from there, the rest is read straight from
		// the connection into a buffer, and one pwritev stores both — no byte is copied
		// twice in user space.
		return t.writeVector(r, vw)
	}
	req, err := t.newRequest(r, n)
	if err != nil {
		return err
	}
	if err := t.in.readFull(req.buf.b); err != nil {
		req.release()
		return err
	}
	if !fua && n <= bigInlineMax {
		// A page-cache write: cheaper here than a worker handoff.
		werr := t.be.WriteAt(req.buf.b, int64(r.Offset), false)
		req.release()
		if werr != nil {
			return t.replyError(r, errnoOf(werr), "write failed")
		}
		return t.replyOK(r)
	}
	t.dispatch(req)
	return nil
}

// writeSpliced stores a large page-cache write whose payload is still mostly in the
// socket: the buffered part with pwrite, the rest spliced from the socket into the file
// (rawSocket.spliceToFile), which copies each byte once instead of twice and takes the
// server's CPU time for a sequential write down by about a sixth.
func (t *tx) writeSpliced(r nbd.Request) error {
	n, off := int(r.Length), int64(r.Offset)
	k := t.in.buffered() // less than n
	var werr error
	if k > 0 {
		werr = t.be.WriteAt(t.in.b[t.in.r:t.in.r+k], off, false)
		t.in.discard(k)
	}
	rest := n - k
	if werr == nil {
		taken, noSplice, e, err := t.splice.spliceToFile(t.pipe, t.spliceFD, off+int64(k), rest, t.beforeWait)
		if err != nil {
			return err
		}
		if noSplice {
			t.c.logf("the image takes no spliced writes; writing through user space")
			t.splice = nil
		}
		rest -= taken
		if e != nil {
			werr = &BackendError{"write", off, int64(n), e}
		}
	}
	if rest > 0 {
		// Only after a failed write: the rest of the payload is read and dropped.
		if err := t.in.skip(rest); err != nil {
			return err
		}
	}
	// If the next request is another large write, its payload should stay in the socket.
	t.in.limit = nbd.RequestSize
	if werr != nil {
		return t.replyError(r, errnoOf(werr), "write failed")
	}
	return t.replyOK(r)
}

// havePipe makes the splice pipe at the first large write.
func (t *tx) havePipe() bool {
	if t.pipe == nil {
		p, err := newPipe()
		if err != nil {
			t.c.logf("not splicing writes: %v", err)
			t.splice = nil
			return false
		}
		t.pipe = p
	}
	return true
}

// vectorWriter is implemented by backends that store two buffers with one call.
type vectorWriter interface {
	WriteAt2(a, b []byte, off int64) error
}

func (t *tx) writeVector(r nbd.Request, vw vectorWriter) error {
	n := int(r.Length)
	k := min(t.in.buffered(), n)
	head := t.in.b[t.in.r : t.in.r+k] // already buffered: no I/O
	var tail *buffer
	if n > k {
		tail = getBuffer(n - k)
		// Straight from the socket: the buffer holds no more than head, and head stays
		// where it is until discarded below.
		if err := t.in.readDirect(tail.b); err != nil {
			tail.release()
			return err
		}
	}
	var werr error
	if tail != nil {
		werr = vw.WriteAt2(head, tail.b, int64(r.Offset))
		tail.release()
	} else {
		werr = vw.WriteAt2(head, nil, int64(r.Offset))
	}
	t.in.discard(k)
	if werr != nil {
		return t.replyError(r, errnoOf(werr), "write failed")
	}
	return t.replyOK(r)
}

// simple validates a request without payload and hands it to a worker.
func (t *tx) simple(r nbd.Request, allowed uint16, writes, ranged bool) error {
	switch {
	case r.Flags&^allowed != 0:
		return t.replyError(r, nbd.EINVAL, "unsupported flags for "+nbd.CmdName(r.Type))
	case writes && t.readOnly:
		return t.replyError(r, nbd.EPERM, "export is read-only")
	case ranged && !t.inBounds(r):
		if writes {
			return t.replyError(r, nbd.ENOSPC, nbd.CmdName(r.Type)+" beyond the end of the export")
		}
		return t.replyError(r, nbd.EINVAL, nbd.CmdName(r.Type)+" beyond the end of the export")
	case r.Type == nbd.CmdBlockStatus && r.Length == 0:
		return t.replyError(r, nbd.EINVAL, "BLOCK_STATUS of zero length")
	case ranged && r.Length == 0:
		return t.replyOK(r)
	}
	req, err := t.newRequest(r, 0)
	if err != nil {
		return err
	}
	t.dispatch(req)
	return nil
}

// newRequest makes a worker request with an n-byte buffer, within the payload budget.
func (t *tx) newRequest(r nbd.Request, n int) (*request, error) {
	req := requestPool.Get().(*request)
	req.Request, req.t = r, t
	if n > 0 {
		if !t.budget.TryAcquire(int64(n)) {
			if err := t.flush(); err != nil {
				requestPool.Put(req)
				return nil, err
			}
			if err := t.budget.Acquire(context.Background(), int64(n)); err != nil {
				requestPool.Put(req)
				return nil, err
			}
		}
		req.budget = int64(n)
		req.buf = getBuffer(n)
	}
	return req, nil
}

// newReadRequest makes a worker request with an n-byte reply buffer charged to the
// connection's reply memory. If there is no room, the batch goes out first (the reader
// must never wait for replies only it would send) and the reader waits: while it does, it
// reads no requests.
func (t *tx) newReadRequest(r nbd.Request, n int) (*request, error) {
	b, err := t.readerBuffer(n)
	if err != nil {
		return nil, err
	}
	req := requestPool.Get().(*request)
	req.Request, req.t, req.buf = r, t, b
	return req, nil
}

// readerBuffer returns a reply buffer for the reader, sending its batch before any wait.
func (t *tx) readerBuffer(n int) (*buffer, error) {
	size := int64(bufSize(n))
	if !t.acct.tryCharge(size) {
		if err := t.flush(); err != nil {
			return nil, err
		}
		if err := t.acct.charge(size); err != nil {
			return nil, err
		}
	}
	b := getBuffer(n)
	b.acct, b.charged = t.acct, size
	return b, nil
}

// dispatch hands a request to an idle worker, starts a worker if the pool is not full, or
// waits for one (after sending our batch, since waiting may take a while).
func (t *tx) dispatch(r *request) {
	t.m.dispatched, r.start = true, t.m.start()
	t.wg.Add(1)
	select {
	case t.work <- r:
		return
	default:
	}
	if t.nworkers < t.maxWorkers {
		t.nworkers++
		go t.worker(r)
		return
	}
	t.flush()
	t.work <- r
}

func (t *tx) worker(r *request) {
	for {
		typ, start := r.Type, r.start
		t.serve(r)
		t.m.worker(typ, start)
		t.wg.Done()
		var ok bool
		if r, ok = <-t.work; !ok {
			return
		}
	}
}

// serve runs one request on a worker and queues its reply.
func (t *tx) serve(r *request) {
	off, length := int64(r.Offset), int64(r.Length)
	fua := r.Flags&nbd.CmdFlagFUA != 0 || t.fuaAlways
	var err error
	switch r.Type {
	case nbd.CmdRead:
		t.serveRead(r)
		return
	case nbd.CmdBlockStatus:
		t.serveBlockStatus(r)
		return
	case nbd.CmdWrite:
		err = t.be.WriteAt(r.buf.b, off, fua)
		r.dropBuffer()
	case nbd.CmdFlush:
		err = t.be.Flush()
	case nbd.CmdTrim:
		err = t.be.Trim(off, length, fua)
	case nbd.CmdWriteZeroes:
		err = t.be.Zero(off, length, r.Flags&nbd.CmdFlagNoHole != 0, r.Flags&nbd.CmdFlagFastZero != 0, fua)
	case nbd.CmdCache:
		err = t.be.Cache(off, length)
	}
	if err != nil {
		t.workerError(r, errnoOf(err), fmt.Sprintf("%s failed", nbd.CmdName(r.Type)))
		if !errors.Is(err, ErrNotFast) {
			t.c.logf("%s %d+%d: %v", nbd.CmdName(r.Type), off, length, err)
		}
		return
	}
	b := nbd.AppendSimpleReply(r.hdr[:0], nbd.SimpleReply{Handle: r.Handle})
	t.w.submit2(b, nil, r, nil)
}

func (t *tx) workerError(r *request, errno uint32, msg string) {
	var b []byte
	if t.structured {
		b = nbd.AppendErrorChunk(r.hdr[:0], r.Handle, nbd.ReplyFlagDone, errno, truncate(msg, len(r.hdr)-nbd.StructuredReplyHdr-6))
	} else {
		b = nbd.AppendSimpleReply(r.hdr[:0], nbd.SimpleReply{Error: errno, Handle: r.Handle})
	}
	t.w.submit2(b, nil, r, nil)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (t *tx) serveRead(r *request) {
	off := int64(r.Offset)
	if r.buf == nil {
		// The sendfile path: unless the range has holes to report, the data goes from the
		// page cache to the socket without a copy through this process.
		sendfile := t.fileFD >= 0 && (!t.structured || !t.holes || r.Length < holeCheckMin || r.Flags&nbd.CmdFlagDF != 0 || t.allData(off, int64(r.Length)))
		if sendfile {
			var hdr []byte
			if t.structured {
				hdr = nbd.AppendOffsetDataHeader(r.hdr[:0], r.Handle, nbd.ReplyFlagDone, r.Offset, r.Length)
			} else {
				hdr = nbd.AppendSimpleReply(r.hdr[:0], nbd.SimpleReply{Handle: r.Handle})
			}
			var via func(func() error) error
			if r.bulk {
				via = t.c.s.bulk.run
			}
			t.w.sendFile(hdr, t.fileFD, off, int(r.Length), r, via)
			return
		}
		if r.Length > streamChunk {
			t.streamRead(r)
			return
		}
		b, err := t.acct.buffer(int(r.Length), false)
		if err != nil {
			r.release() // the connection is failing: nothing will be sent
			return
		}
		r.buf = b
	}
	if t.structured && t.holes && len(r.buf.b) >= holeCheckMin && r.Flags&nbd.CmdFlagDF == 0 {
		if t.serveSparseRead(r) {
			return
		}
	}
	if err := t.be.ReadAt(r.buf.b, off); err != nil {
		t.c.logf("READ %d+%d: %v", off, len(r.buf.b), err)
		t.workerError(r, errnoOf(err), "read failed")
		return
	}
	var hdr []byte
	if t.structured {
		hdr = nbd.AppendOffsetDataHeader(r.hdr[:0], r.Handle, nbd.ReplyFlagDone, r.Offset, r.Length)
	} else {
		hdr = nbd.AppendSimpleReply(r.hdr[:0], nbd.SimpleReply{Handle: r.Handle})
	}
	t.w.submit2(hdr, r.buf.b, r, nil)
}

// serveSparseRead answers a structured read with hole chunks for the parts that read as
// zeroes (proto.md NBD_REPLY_TYPE_OFFSET_HOLE), so sparse images cross the wire cheaply.
// It reports false, having sent nothing, when the range has no holes worth it.
func (t *tx) serveSparseRead(r *request) bool {
	type ext struct {
		off, n int64
		hole   bool
	}
	var exts [maxReadChunks]ext
	cnt, holes := 0, 0
	off, end := int64(r.Offset), int64(r.Offset)+int64(r.Length)
	pos := off
	err := t.be.Extents(off, end-off, func(n int64, flags uint32) bool {
		hole := flags&nbd.StateZero != 0
		if cnt > 0 && exts[cnt-1].hole == hole {
			exts[cnt-1].n += n
		} else {
			if cnt == len(exts) {
				cnt = -1
				return false
			}
			exts[cnt] = ext{pos, n, hole}
			cnt++
		}
		pos += n
		if hole {
			holes++
		}
		return true
	})
	if err != nil || cnt <= 0 || holes == 0 || pos < end {
		return false
	}
	hb := getBuffer(cnt * nbd.OffsetHoleSize)
	hdrs := hb.b[:0]
	bufs := make([][]byte, 0, 2*cnt)
	for i := 0; i < cnt; i++ {
		e := exts[i]
		var flags uint16
		if i == cnt-1 {
			flags = nbd.ReplyFlagDone
		}
		start := len(hdrs)
		if e.hole {
			hdrs = nbd.AppendOffsetHole(hdrs, r.Handle, flags, uint64(e.off), uint32(e.n))
			bufs = append(bufs, hdrs[start:])
			continue
		}
		data := r.buf.b[e.off-off : e.off-off+e.n]
		if err := t.be.ReadAt(data, e.off); err != nil {
			hb.release()
			t.c.logf("READ %d+%d: %v", e.off, e.n, err)
			t.workerError(r, errnoOf(err), "read failed")
			return true
		}
		hdrs = nbd.AppendOffsetDataHeader(hdrs, r.Handle, flags, uint64(e.off), uint32(e.n))
		bufs = append(bufs, hdrs[start:], data)
	}
	t.w.submit(bufs, []releaser{r, hb})
	return true
}

func (t *tx) serveBlockStatus(r *request) {
	limit := maxExtents
	if r.Flags&nbd.CmdFlagReqOne != 0 {
		limit = 1
	}
	hb := getBuffer(nbd.StructuredReplyHdr + 4 + limit*nbd.ExtentSize)
	exts := make([]nbd.Extent, 0, min(limit, 64))
	err := t.be.Extents(int64(r.Offset), int64(r.Length), func(n int64, flags uint32) bool {
		for n > 0 {
			// A descriptor length is 32 bits; requests are too, so one split at most.
			m := min(n, int64(r.Length))
			if k := len(exts); k > 0 && exts[k-1].Flags == flags && uint64(exts[k-1].Length)+uint64(m) <= uint64(r.Length) {
				exts[k-1].Length += uint32(m)
			} else {
				if len(exts) == limit {
					return false
				}
				exts = append(exts, nbd.Extent{Length: uint32(m), Flags: flags})
			}
			n -= m
		}
		return true
	})
	if err != nil || len(exts) == 0 {
		hb.release()
		t.c.logf("BLOCK_STATUS %d+%d: %v", r.Offset, r.Length, err)
		t.workerError(r, errnoOf(err), "block status failed")
		return
	}
	b := nbd.AppendBlockStatus(hb.b[:0], r.Handle, nbd.ReplyFlagDone, metaAllocID, exts)
	t.w.submit2(b, nil, r, hb)
}

// reserve returns n bytes at the end of the reader's batch.
func (t *tx) reserve(n int) []byte {
	if t.arena != nil && cap(t.arena.b)-len(t.arena.b) < n {
		t.flush()
	}
	if t.arena == nil {
		b, err := t.readerBuffer(arenaSize)
		if err != nil {
			// The connection has failed and this batch will never be sent; the next
			// flush reports why.
			b = getBuffer(arenaSize)
		}
		t.arena = b
		t.arena.b = t.arena.b[:0]
		t.segStart = 0
	}
	l := len(t.arena.b)
	t.arena.b = t.arena.b[:l+n]
	return t.arena.b[l : l+n]
}

func (t *tx) unreserve(n int) { t.arena.b = t.arena.b[:len(t.arena.b)-n] }

// flush hands the reader's batch to the reply writer.
func (t *tx) flush() error {
	if t.arena != nil && len(t.arena.b) > 0 {
		// The arena goes with the batch, also when only earlier segments of it are queued.
		if len(t.arena.b) > t.segStart {
			t.iov = append(t.iov, t.arena.b[t.segStart:])
		}
		t.rel = append(t.rel, t.arena)
		t.arena = nil
	}
	if len(t.iov) == 0 {
		return t.w.failed()
	}
	err := t.w.submit(t.iov, t.rel)
	clear(t.iov)
	clear(t.rel)
	t.iov, t.rel = t.iov[:0], t.rel[:0]
	return err
}

// replyOK queues a successful reply without data from the reader.
func (t *tx) replyOK(r nbd.Request) error {
	if t.structured && r.Type == nbd.CmdRead {
		// proto.md: a READ always gets a structured reply once negotiated.
		p := t.reserve(nbd.StructuredReplyHdr)
		nbd.AppendStructuredReply(p[:0], nbd.StructuredReply{Flags: nbd.ReplyFlagDone, Type: nbd.ReplyTypeNone, Handle: r.Handle})
		return nil
	}
	p := t.reserve(nbd.SimpleReplySize)
	nbd.AppendSimpleReply(p[:0], nbd.SimpleReply{Handle: r.Handle})
	return nil
}

// replyError queues an error reply from the reader: an error chunk with a message when
// structured replies are on, else a simple reply (which for READ carries no data).
func (t *tx) replyError(r nbd.Request, errno uint32, msg string) error {
	t.stats.errors++
	if t.structured {
		p := t.reserve(nbd.StructuredReplyHdr + 6 + len(msg))
		nbd.AppendErrorChunk(p[:0], r.Handle, nbd.ReplyFlagDone, errno, msg)
		return nil
	}
	p := t.reserve(nbd.SimpleReplySize)
	nbd.AppendSimpleReply(p[:0], nbd.SimpleReply{Error: errno, Handle: r.Handle})
	return nil
}

func isConnReset(err error) bool {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Syscall == "read" || se.Syscall == "readv" || se.Syscall == "write" || se.Syscall == "writev"
	}
	return false
}

// bigInlineMax bounds the larger reads (when sendfile is not available) and writes the
// reader serves itself rather than handing them to a worker: a page-cache copy costs less
// than the handoff.
const bigInlineMax = nbd.MaxPayload

// streamRead answers a read too large to buffer whole (over streamChunk) that cannot go
// out with sendfile: as the connection's writer it reads and sends one piece at a time,
// so the reply never holds more than one piece of memory however slowly the client takes
// it. Structured replies report holes as hole chunks and send each piece as a data chunk
// of its own. A simple reply's data must follow its header without a gap: its first
// piece is read before the header goes out, so a failure there is an ordinary error
// reply, but a failure after that can only end the connection.
func (t *tx) streamRead(r *request) {
	type ext struct {
		off, n int64
		hole   bool
	}
	off, end := int64(r.Offset), int64(r.Offset)+int64(r.Length)
	exts := []ext{{off, end - off, false}}
	if t.structured && t.holes && r.Flags&nbd.CmdFlagDF == 0 {
		var found []ext
		pos := off
		err := t.be.Extents(off, end-off, func(n int64, flags uint32) bool {
			hole := flags&nbd.StateZero != 0
			if k := len(found); k > 0 && found[k-1].hole == hole {
				found[k-1].n += n
			} else {
				if k == maxReadChunks {
					return false
				}
				found = append(found, ext{pos, n, hole})
			}
			pos += n
			return true
		})
		if err == nil && pos >= end && len(found) > 0 {
			found[len(found)-1].n = end - found[len(found)-1].off
			exts = found
		}
	}
	readFailed := func(at, n int64, err error) {
		t.c.logf("READ %d+%d: %v", at, n, err)
	}
	t.w.stream(func(send func(bufs ...[]byte) error) error {
		buf, _ := t.acct.buffer(streamChunk, true)
		defer buf.release()
		var hdr [nbd.StructuredReplyHdr + 64]byte
		if !t.structured {
			k := min(int64(streamChunk), end-off)
			if err := t.be.ReadAt(buf.b[:k], off); err != nil {
				readFailed(off, k, err)
				return send(nbd.AppendSimpleReply(hdr[:0], nbd.SimpleReply{Error: errnoOf(err), Handle: r.Handle}))
			}
			if err := send(nbd.AppendSimpleReply(hdr[:0], nbd.SimpleReply{Handle: r.Handle}), buf.b[:k]); err != nil {
				return err
			}
			for pos := off + k; pos < end; pos += k {
				k = min(int64(streamChunk), end-pos)
				if err := t.be.ReadAt(buf.b[:k], pos); err != nil {
					readFailed(pos, k, err)
					return fmt.Errorf("READ %d+%d failed after its reply began (simple replies cannot report that): %w", pos, k, err)
				}
				if err := send(buf.b[:k]); err != nil {
					return err
				}
			}
			return nil
		}
		for i, e := range exts {
			last := i == len(exts)-1
			var flags uint16
			if e.hole {
				if last {
					flags = nbd.ReplyFlagDone
				}
				if err := send(nbd.AppendOffsetHole(hdr[:0], r.Handle, flags, uint64(e.off), uint32(e.n))); err != nil {
					return err
				}
				continue
			}
			for pos := e.off; pos < e.off+e.n; {
				k := min(int64(streamChunk), e.off+e.n-pos)
				if err := t.be.ReadAt(buf.b[:k], pos); err != nil {
					readFailed(pos, k, err)
					return send(nbd.AppendErrorChunk(hdr[:0], r.Handle, nbd.ReplyFlagDone, errnoOf(err), "read failed"))
				}
				if last && pos+k == e.off+e.n {
					flags = nbd.ReplyFlagDone
				}
				if err := send(nbd.AppendOffsetDataHeader(hdr[:0], r.Handle, flags, uint64(pos), uint32(k)), buf.b[:k]); err != nil {
					return err
				}
				pos += k
			}
		}
		return nil
	}, r)
}
