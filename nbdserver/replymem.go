package nbdserver

import (
	"sync"
	"sync/atomic"
)

// Reply memory: the buffers a connection fills with replies that are not on the wire yet —
// the reader's batches, workers' read buffers, pieces of streamed reads — are charged to
// the connection (replyAcct) and to the server (replyMem). A client that stops reading
// its replies fills its socket; then its replies wait here, and without a bound a client
// sending large READs it never reads could make the server buffer gigabytes.
//
// The rule: a connection that already holds reply memory waits before it takes more when
// that would pass its own limit (connReplyLimit) or the server's (Config.ReplyMemory). A
// connection holding none never waits. So a stalled client holds at most about its limit
// and then stops being served — its reader stops reading its requests, and TCP pushes
// back on the client — while every other connection, holding nothing between its replies,
// always gets the memory for its next one: stalled clients cannot starve the rest. The
// server's total stays within Config.ReplyMemory plus, in the worst case, one buffer per
// connection.
const (
	// connReplyLimit bounds one connection's reply memory. Four MiB keeps a socket's worth
	// of replies queued (loopback and LAN send buffers reach a few MiB) and a few disk
	// reads in flight, which is all a client can take at once anyway.
	connReplyLimit = 4 << 20
	// streamChunk is the piece size of reads streamed without sendfile (streamRead):
	// larger reads are never buffered whole.
	streamChunk = 1 << 20
)

// replyMem is the server-wide count of reply memory.
type replyMem struct {
	held  atomic.Int64
	limit atomic.Int64 // Config.ReplyMemory
}

// replyAcct is one connection's reply memory.
type replyAcct struct {
	srv   *replyMem
	limit int64

	mu    sync.Mutex
	room  *sync.Cond // signalled when held drops or the connection fails
	held  int64
	err   error
	waits uint64 // times a charge had to wait (logged when the connection closes)
}

func newReplyAcct(srv *replyMem, limit int64) *replyAcct {
	a := &replyAcct{srv: srv, limit: limit}
	a.room = sync.NewCond(&a.mu)
	return a
}

// fitsLocked says whether n more bytes may be taken now.
func (a *replyAcct) fitsLocked(n int64) bool {
	return a.held == 0 || a.held+n <= a.limit && a.srv.held.Load()+n <= a.srv.limit.Load()
}

// tryCharge takes n bytes if that needs no wait.
func (a *replyAcct) tryCharge(n int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || !a.fitsLocked(n) {
		return false
	}
	a.takeLocked(n)
	return true
}

// charge takes n bytes, waiting as the rule above says; it fails once the connection has
// failed (its replies will never be written, so waiting for them is pointless). The caller
// must not be the one who would write the connection's queued replies.
func (a *replyAcct) charge(n int64) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err == nil && !a.fitsLocked(n) {
		a.waits++
		for a.err == nil && !a.fitsLocked(n) {
			a.room.Wait()
		}
	}
	if a.err != nil {
		return a.err
	}
	a.takeLocked(n)
	return nil
}

// force takes n bytes without waiting: for the connection's writer, which must not wait
// for replies only it can send.
func (a *replyAcct) force(n int64) {
	a.mu.Lock()
	a.takeLocked(n)
	a.mu.Unlock()
}

func (a *replyAcct) takeLocked(n int64) {
	a.held += n
	a.srv.held.Add(n)
}

// credit gives back n bytes once they are written (or dropped).
func (a *replyAcct) credit(n int64) {
	a.mu.Lock()
	a.held -= n
	a.srv.held.Add(-n)
	a.mu.Unlock()
	a.room.Broadcast()
}

// fail wakes every waiter with err: the connection's replies will not be written.
func (a *replyAcct) fail(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
	a.room.Broadcast()
}

// buffer returns an n-byte buffer charged to the connection, waiting for room (charge);
// with force it never waits (the writer's own pieces).
func (a *replyAcct) buffer(n int, force bool) (*buffer, error) {
	size := int64(bufSize(n))
	if force {
		a.force(size)
	} else if err := a.charge(size); err != nil {
		return nil, err
	}
	b := getBuffer(n)
	b.acct, b.charged = a, size
	return b, nil
}
