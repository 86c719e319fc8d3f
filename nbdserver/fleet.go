package nbdserver

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// The server counts, per export and client, what an administrator watching a fleet asks
// about: connections, reconnects, bytes, request latencies and last activity. `nbdroot
// status --server` and the Prometheus metrics (--metrics) read these counters.
//
// The counters cost the transmission phase next to nothing: a connection's reader counts
// into plain fields of its own and publishes them to the shared atomics once per batch of
// requests (see txMetrics). The clock is the expensive part — a read costs 20 ns on bare
// metal and 130 ns on some virtual machines, against about 5 µs of server CPU for a cached
// 4 KiB read — so the reader times one batch in txSampleEvery, and last activity comes
// from a coarse clock the server's housekeeping goroutine keeps (fleetStats.now).

// opKind indexes the latency histograms.
type opKind int

const (
	opRead opKind = iota
	opWrite
	opFlush
	opOther // TRIM, WRITE_ZEROES, CACHE, BLOCK_STATUS
	numOps
)

var opNames = [numOps]string{"read", "write", "flush", "other"}

func opOf(typ uint16) opKind {
	switch typ {
	case nbd.CmdRead:
		return opRead
	case nbd.CmdWrite:
		return opWrite
	case nbd.CmdFlush:
		return opFlush
	}
	return opOther
}

// latencyBuckets are the upper bounds of the latency histograms: a page-cache hit is tens
// of microseconds, a disk read milliseconds, an fdatasync up to seconds.
var latencyBuckets = [...]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond, 5 * time.Second, 10 * time.Second,
}

// histogram counts latencies into latencyBuckets (the last count is +Inf).
type histogram struct {
	counts [len(latencyBuckets) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

func (h *histogram) observe(d time.Duration, n uint64) {
	i := 0
	for i < len(latencyBuckets) && d > latencyBuckets[i] {
		i++
	}
	h.counts[i].Add(n)
	h.sum.Add(int64(d) * int64(n))
}

// snapshot returns the cumulative bucket counts (Prometheus's form), the total and the sum.
func (h *histogram) snapshot() (cum [len(latencyBuckets)]uint64, count uint64, sum time.Duration) {
	for i := range h.counts {
		count += h.counts[i].Load()
		if i < len(cum) {
			cum[i] = count
		}
	}
	return cum, count, time.Duration(h.sum.Load())
}

// clientStats are one client's counters on one export.
type clientStats struct {
	fleet      *fleetStats
	key        exportClient
	identified bool
	firstSeen  time.Time

	conns        atomic.Int64
	connsTotal   atomic.Uint64
	reconnects   atomic.Uint64
	readBytes    atomic.Uint64
	writtenBytes atomic.Uint64
	lastActive   atomic.Int64 // unix ns
	lat          [numOps]histogram
}

func (cs *clientStats) close() {
	cs.conns.Add(-1)
	cs.lastActive.Store(time.Now().UnixNano())
}

// fleetStats holds the counters of every client seen, for a day after its last activity.
type fleetStats struct {
	mu      sync.Mutex
	clients map[exportClient]*clientStats
	// now is a coarse clock (unix ns), moved on by the server's housekeeping goroutine
	// every coarseTick, for last-activity stamps that cost no clock read.
	now atomic.Int64
}

// coarseTick is the resolution of fleetStats.now.
const coarseTick = 500 * time.Millisecond

// statsRetention is how long the counters of a client without connections are kept.
const statsRetention = 24 * time.Hour

func newFleetStats() *fleetStats {
	f := &fleetStats{clients: map[exportClient]*clientStats{}}
	f.now.Store(time.Now().UnixNano())
	return f
}

// open counts a new session of client c on an export. first says the client had no other
// connection to it. A reconnect is a first connection that resumes an overlay, or, for a
// client without identity, that comes back after it was seen before (it cannot tell a
// reconnect from a reboot).
func (f *fleetStats) open(k exportClient, c client, first bool) *clientStats {
	now := time.Now()
	f.mu.Lock()
	cs := f.clients[k]
	seen := cs != nil
	if !seen {
		cs = &clientStats{fleet: f, key: k, firstSeen: now}
		f.clients[k] = cs
	}
	cs.identified = c.identified
	cs.conns.Add(1) // under f.mu, so evict never drops a client being connected
	f.mu.Unlock()
	cs.connsTotal.Add(1)
	if first && (!c.resume.IsZero() || !c.identified && seen) {
		cs.reconnects.Add(1)
	}
	cs.lastActive.Store(now.UnixNano())
	return cs
}

// all returns the counters of every client.
func (f *fleetStats) all() []*clientStats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]*clientStats, 0, len(f.clients))
	for _, cs := range f.clients {
		out = append(out, cs)
	}
	return out
}

// evict forgets clients without connections whose last activity is older than keep.
func (f *fleetStats) evict(now time.Time, keep time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, cs := range f.clients {
		if cs.conns.Load() == 0 && now.Sub(time.Unix(0, cs.lastActive.Load())) > keep {
			delete(f.clients, k)
		}
	}
}

// txMetrics feeds one connection's requests into its client's counters. Requests the reader
// serves itself (most of them) cost an increment of a plain field; the shared atomics are
// updated once per batch — when the reader is about to wait for the client, or every
// txBatchMax requests when it never does. One batch in txSampleEvery is timed, from its
// first request's parsing to its end, when every reply of the batch has been handed to the
// reply writer; the untimed batches after it count their requests with its latency, so the
// histograms count every request at once. Requests served by a worker (disk reads, FLUSH,
// FUA, zeroing: the slow ones) are each timed on their own.
type txMetrics struct {
	cs         *clientStats
	batchN     int // requests in the current batch
	batches    int // batches ended, to pick the timed ones
	timed      bool
	batchStart time.Time      // when the current batch started, if timed
	lastD      time.Duration  // the latency of the last timed batch
	pend       [numOps]uint64 // inline requests of the current batch
	dispatched bool           // the current request went to a worker, which times it itself
	published  txStats        // the part of the connection's txStats already added to cs
}

const (
	txBatchMax    = 64
	txSampleEvery = 8
)

// begin is called for each request the reader parses.
func (m *txMetrics) begin() {
	if m.batchN == 0 {
		m.timed = m.batches%txSampleEvery == 0
		if m.timed {
			m.batchStart = time.Now()
		}
	}
	m.batchN++
	m.dispatched = false
}

// end is called when the reader is done with a request (served, or handed to a worker).
func (m *txMetrics) end(typ uint16, st *txStats) {
	if !m.dispatched {
		m.pend[opOf(typ)]++
	}
	if m.batchN >= txBatchMax {
		m.flush(st)
	}
}

// flush ends the current batch and publishes the connection's counters.
func (m *txMetrics) flush(st *txStats) {
	if m.cs == nil || m.batchN == 0 {
		return
	}
	if m.timed {
		m.lastD = time.Since(m.batchStart)
	}
	for op, n := range m.pend {
		if n > 0 {
			m.cs.lat[op].observe(m.lastD, n)
		}
	}
	m.pend = [numOps]uint64{}
	m.batchN = 0
	m.batches++
	m.cs.readBytes.Add(st.bytesRead - m.published.bytesRead)
	m.cs.writtenBytes.Add(st.bytesWritten - m.published.bytesWritten)
	m.published = *st
	m.cs.lastActive.Store(m.cs.fleet.now.Load())
}

// start is when a request handed to a worker started: its batch's start when the batch is
// timed, else now.
func (m *txMetrics) start() time.Time {
	if m.timed {
		return m.batchStart
	}
	return time.Now()
}

// worker times a request a worker served; typ and start were read before it was served
// (the request may be recycled once its reply is queued).
func (m *txMetrics) worker(typ uint16, start time.Time) {
	if m.cs != nil {
		m.cs.lat[opOf(typ)].observe(time.Since(start), 1)
	}
}
