package nbdserver

import (
	"io"
	"net"
	"sync"
)

// replyWriter serialises replies from the connection reader and its workers onto one socket.
//
// Whoever submits while nobody is writing becomes the writer and keeps writing until the
// queue is empty; submitters arriving meanwhile only append. Replies that pile up during a
// write go out together in the next writev (net.Buffers), so under load one syscall carries
// many replies, and no goroutine exists just to write.
type replyWriter struct {
	w io.Writer
	// sendfile sends buffers and then file data to the socket, the data without passing
	// through user space; nil when the connection cannot (TLS).
	sendfile func(bufs [][]byte, fd int, off int64, n int) error
	// raw writes to a plain socket with raw writev calls (see rawSocket); nil otherwise.
	raw *rawSocket
	iov []iovec // scratch for raw, used by the writer only
	// acct is the connection's reply memory, told when writing fails; may be nil.
	acct *replyAcct

	mu      sync.Mutex
	idle    *sync.Cond // signalled when writing ends, for sendFile callers waiting their turn
	waiters int
	pending net.Buffers
	rel     []releaser
	writing bool
	err     error

	// Spare slices swapped with pending/rel on every write, so steady state allocates nothing.
	spareBufs net.Buffers
	spareRel  []releaser
}

func newReplyWriter(w io.Writer) *replyWriter {
	// Small to start with: an idle connection should cost little; they grow under load.
	rw := &replyWriter{w: w,
		pending: make(net.Buffers, 0, 8), spareBufs: make(net.Buffers, 0, 8),
		rel: make([]releaser, 0, 8), spareRel: make([]releaser, 0, 8)}
	rw.idle = sync.NewCond(&rw.mu)
	rw.sendfile = socketSendfile(w)
	if c, ok := w.(net.Conn); ok {
		rw.raw = newRawSocket(c)
	}
	return rw
}

// sendFile sends hdr followed by n bytes of the file fd at off, then frees rel. It waits to
// become the writer itself, so a sendfile that has to wait for the disk holds up only
// this worker and the replies queued behind it — never the connection reader. With via,
// the sending runs through it (a bulk transfer's, on a low-priority thread).
func (w *replyWriter) sendFile(hdr []byte, fd int, off int64, n int, rel releaser, via func(func() error) error) error {
	bufs, rels, err := w.takeTurn()
	if err != nil {
		releaseAll(rel)
		return err
	}
	bufs = append(bufs, hdr)
	if via != nil {
		err = via(func() error { return w.sendfile(bufs, fd, off, n) })
	} else {
		err = w.sendfile(bufs, fd, off, n)
	}
	releaseAll(rel)
	return w.endTurn(bufs, rels, err)
}

// stream sends a reply that is produced piece by piece while it is sent: it waits to become
// the writer, sends what was queued before it, then runs produce, whose send writes pieces
// straight to the socket. Nothing else is written meanwhile, so the pieces are contiguous
// (a simple reply's data must be). produce's error ends the connection; rel is freed at
// the end.
func (w *replyWriter) stream(produce func(send func(bufs ...[]byte) error) error, rel releaser) error {
	bufs, rels, err := w.takeTurn()
	if err != nil {
		releaseAll(rel)
		return err
	}
	err = w.writeOut(bufs)
	for _, r := range rels {
		r.release()
	}
	clear(rels)
	if err == nil {
		err = produce(func(p ...[]byte) error { return w.writeOut(p) })
	}
	releaseAll(rel)
	return w.endTurn(bufs, rels[:0], err)
}

// takeTurn waits until nobody writes, makes the caller the writer and hands it what was
// queued, which it must send first. endTurn ends the turn.
func (w *replyWriter) takeTurn() (net.Buffers, []releaser, error) {
	w.mu.Lock()
	for w.writing && w.err == nil {
		w.waiters++
		w.idle.Wait()
		w.waiters--
	}
	if w.err != nil {
		err := w.err
		w.idle.Broadcast()
		w.mu.Unlock()
		return nil, nil, err
	}
	w.writing = true
	bufs, rels := w.pending, w.rel
	w.pending, w.rel = w.spareBufs[:0], w.spareRel[:0]
	w.mu.Unlock()
	return bufs, rels, nil
}

// endTurn frees what takeTurn handed out, records err and writes what was queued meanwhile.
func (w *replyWriter) endTurn(bufs net.Buffers, rels []releaser, err error) error {
	for _, r := range rels {
		r.release()
	}
	clear(bufs)
	clear(rels)
	w.mu.Lock()
	w.spareBufs, w.spareRel = bufs[:0], rels[:0]
	if err != nil && w.err == nil {
		w.setErrLocked(err)
	}
	w.writing = false
	return w.writeLocked()
}

// writeOut writes bufs to the socket; only the writer calls it.
func (w *replyWriter) writeOut(bufs [][]byte) error {
	if w.raw != nil {
		var err error
		w.iov, err = w.raw.writev(bufs, w.iov)
		return err
	}
	out := net.Buffers(bufs) // WriteTo consumes its receiver; the caller's slice stays intact
	_, err := out.WriteTo(w.w)
	return err
}

// setErrLocked records the connection's write error: nothing more will be written, so
// whoever waits for reply memory to drain is woken.
func (w *replyWriter) setErrLocked(err error) {
	w.err = err
	if w.acct != nil {
		w.acct.fail(err)
	}
}

// submit queues bufs (written in order, contiguously) and, once they are written or the
// connection has failed, releases rel. It returns the first write error of the connection.
func (w *replyWriter) submit(bufs [][]byte, rel []releaser) error {
	w.mu.Lock()
	return w.queueLocked(bufs, rel)
}

// submit2 is submit for the common worker reply: a header, optional data and what to free.
func (w *replyWriter) submit2(hdr, data []byte, r1, r2 releaser) error {
	w.mu.Lock()
	if w.err != nil {
		w.mu.Unlock()
		releaseAll(r1, r2)
		return w.err
	}
	w.pending = append(w.pending, hdr)
	if len(data) > 0 {
		w.pending = append(w.pending, data)
	}
	if r1 != nil {
		w.rel = append(w.rel, r1)
	}
	if r2 != nil {
		w.rel = append(w.rel, r2)
	}
	return w.writeLocked()
}

func releaseAll(rs ...releaser) {
	for _, r := range rs {
		if r != nil {
			r.release()
		}
	}
}

func (w *replyWriter) queueLocked(bufs [][]byte, rel []releaser) error {
	if w.err != nil {
		w.mu.Unlock()
		releaseAll(rel...)
		return w.err
	}
	w.pending = append(w.pending, bufs...)
	w.rel = append(w.rel, rel...)
	return w.writeLocked()
}

// writeLocked is entered with w.mu held and returns with it released.
func (w *replyWriter) writeLocked() error {
	if w.writing {
		w.mu.Unlock()
		return nil
	}
	w.writing = true
	for len(w.pending) > 0 && w.err == nil {
		bufs, rel := w.pending, w.rel
		w.pending, w.rel = w.spareBufs[:0], w.spareRel[:0]
		w.mu.Unlock()

		err := w.writeOut(bufs)
		for _, r := range rel {
			r.release()
		}
		clear(bufs)
		clear(rel)

		w.mu.Lock()
		w.spareBufs, w.spareRel = bufs[:0], rel[:0]
		if err != nil && w.err == nil {
			w.setErrLocked(err)
		}
	}
	if w.err != nil {
		// Nothing queued after a failure will ever be written: free it now.
		for _, r := range w.rel {
			r.release()
		}
		clear(w.pending)
		clear(w.rel)
		w.pending, w.rel = w.pending[:0], w.rel[:0]
	}
	w.writing = false
	if w.waiters > 0 {
		if w.err != nil {
			w.idle.Broadcast() // everyone waiting learns of the failure
		} else {
			w.idle.Signal() // one waiter takes the turn, and signals the next when done
		}
	}
	err := w.err
	w.mu.Unlock()
	return err
}

// failed reports the connection's write error, if any.
func (w *replyWriter) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
