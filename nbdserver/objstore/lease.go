package objstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// The lease: which server may write an overlay (or a read-write export's writes) now.
//
// A lease is a small JSON object (LeaseRecord) changed only with conditional writes, so
// exactly one of two servers racing for it wins (the store compares ETags; see
// TestLeaseRace against SeaweedFS):
//
//   - acquire: create it with If-None-Match: *, or, when its holder released it, rewrite it
//     with If-Match on the ETag read; either way with the epoch one higher than before;
//   - renew: every TTL/6 the holder rewrites it (Seq+1) with If-Match on its own last ETag;
//     a 412 means someone took it over — the holder has lost it for good;
//   - take over: a holder that stops renewing (killed, cut off from the store) may be
//     replaced, but only by a server that itself saw the same ETag for a whole TTL on its
//     own monotonic clock — wall clocks of different machines are never compared;
//   - the holder acknowledges writes only until a tenth of a TTL before its last renewal
//     could expire: from the moment it sent that renewal, by its own clock. Any server that
//     takes over saw that renewal's ETag only after it was sent, and waited a whole TTL, so
//     the holder's validity always ends before a takeover (clock rates differ by ppm, not
//     by 10%);
//   - release: the holder rewrites it with no holder, so the next server takes it at once.
//
// The lease is not the last line of defence. Its epoch fences the data: an overlay's
// manifest is only ever rewritten with If-Match on the ETag its writer last saw, and a new
// holder rewrites the manifest with its epoch before it serves anything, so a holder that
// was taken over can no longer commit a FLUSH even if its clock lied (see package overlay).

// LeaseRecord is the content of a lease object.
type LeaseRecord struct {
	// Holder identifies the server process holding the lease; empty when released.
	Holder string `json:"holder"`
	// Server is the holder's host name and Client the client it serves, for messages.
	Server string `json:"server,omitempty"`
	Client string `json:"client,omitempty"`
	// Epoch grows by one with every new holder; it names the holder's writes.
	Epoch uint64 `json:"epoch"`
	// Seq grows with every renewal, so each rewrite has new content (and a new ETag).
	Seq uint64 `json:"seq"`
	// TTL is the holder's lease time in milliseconds: how long others wait after its last
	// renewal they saw.
	TTL int64 `json:"ttl_ms"`
	// Renewed is the holder's wall-clock time of the last renewal (for people and for
	// reaping; never for deciding who holds the lease).
	Renewed time.Time `json:"renewed"`
}

// Leases hands out leases for one server process and remembers, for leases others hold,
// since when it has seen them unchanged.
type Leases struct {
	self string
	host string
	ttl  time.Duration
	// now is the clock (monotonic readings); tests replace it.
	now func() time.Time

	mu   sync.Mutex
	seen map[URL]observation
	held map[URL]*Lease
}

type observation struct {
	etag  string
	first time.Time
}

// DefaultLeaseTTL is how long a lease outlives its holder's last renewal. It is what a
// failover waits after a server died holding a writer's lease, and the longest store
// outage a holder rides out before its writes fail; both must fit well inside a
// client's dead-connection timeout (120 s in nbdroot's keeper).
const DefaultLeaseTTL = 30 * time.Second

// NewLeases returns the lease manager of this process: a random instance ID (a restarted
// server is a new holder), the host name and the TTL it writes into its leases.
func NewLeases(ttl time.Duration) *Leases {
	if ttl <= 0 {
		ttl = DefaultLeaseTTL
	}
	var b [8]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	return &Leases{self: host + "/" + hex.EncodeToString(b[:]), host: host, ttl: ttl, now: time.Now,
		seen: map[URL]observation{}, held: map[URL]*Lease{}}
}

// Self is this process's holder ID.
func (ls *Leases) Self() string { return ls.self }

// TTL is the lease time this process writes.
func (ls *Leases) TTL() time.Duration { return ls.ttl }

// HeldError says someone else holds a lease.
type HeldError struct {
	URL    URL
	Record LeaseRecord
	// Wait is how much longer the holder must go without renewing before this server may
	// take the lease over.
	Wait time.Duration
}

func (e *HeldError) Error() string {
	who := e.Record.Server
	if who == "" {
		who = e.Record.Holder
	}
	s := fmt.Sprintf("held by server %s", who)
	if e.Record.Client != "" {
		s += " for client " + e.Record.Client
	}
	return fmt.Sprintf("%s (lease %s); if that server stopped, this one takes over once the lease has gone unrenewed for its TTL of %v (in %v at the earliest)",
		s, e.URL, time.Duration(e.Record.TTL)*time.Millisecond, e.Wait.Round(100*time.Millisecond))
}

// Errors of a held lease.
var (
	// ErrLeaseLost says another server took the lease over: this one must not write.
	ErrLeaseLost = errors.New("the lease was taken over by another server")
	// ErrLeaseLapsed says the lease could not be renewed in time (the store does not
	// answer); writes fail until a renewal gets through.
	ErrLeaseLapsed = errors.New("the lease could not be renewed in time (is the store reachable?)")
)

// MaxLeaseTTL bounds the lease time a record may carry. A record's TTL decides how long
// other servers wait before taking a writer over, so a TTL that is not positive (or
// overflows a time.Duration) would let anyone take over at once: such a record is refused.
const MaxLeaseTTL = time.Hour

// ParseLeaseRecord decodes and checks the content of a lease object.
func ParseLeaseRecord(data []byte) (LeaseRecord, error) {
	var r LeaseRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return r, fmt.Errorf("not a lease record: %w", err)
	}
	if r.TTL <= 0 || r.TTL > MaxLeaseTTL.Milliseconds() {
		return r, fmt.Errorf("lease record with a TTL of %d ms, want 1 ms to %v", r.TTL, MaxLeaseTTL)
	}
	if r.Holder != "" && r.Epoch == 0 {
		return r, fmt.Errorf("lease record held by %q in epoch 0", r.Holder)
	}
	return r, nil
}

// ReadLease returns the record of a lease object and its ETag.
func ReadLease(ctx context.Context, b Bucket, key string) (LeaseRecord, string, error) {
	data, a, err := b.Get(ctx, key)
	if err != nil {
		return LeaseRecord{}, "", err
	}
	r, err := ParseLeaseRecord(data)
	if err != nil {
		return r, "", &OpError{Op: "get", URL: URL{b.Name(), key}, Err: err}
	}
	return r, a.ETag, nil
}

// Acquire takes the lease at key in b for client (named in the record for people). It
// returns a *HeldError while another live server holds it.
func (ls *Leases) Acquire(ctx context.Context, b Bucket, key, client string) (*Lease, error) {
	u := URL{b.Name(), key}
	ls.mu.Lock()
	if l := ls.held[u]; l != nil {
		ls.mu.Unlock()
		return nil, &HeldError{URL: u, Record: l.record()}
	}
	ls.mu.Unlock()
	for try := 0; ; try++ {
		rec, etag, err := ReadLease(ctx, b, key)
		var cond Cond
		switch {
		case errors.Is(err, ErrNotFound):
			cond.IfNoneMatch = true
		case err != nil:
			return nil, err
		case rec.Holder == "" || rec.Holder == ls.self:
			// Released, or left by this process (a release that did not get through).
			cond.IfMatch = etag
		default:
			ls.mu.Lock()
			now := ls.now()
			o, ok := ls.seen[u]
			if !ok || o.etag != etag {
				o = observation{etag: etag, first: now}
				ls.seen[u] = o
			}
			ls.mu.Unlock()
			ttl := time.Duration(rec.TTL) * time.Millisecond
			if waited := now.Sub(o.first); waited < ttl {
				return nil, &HeldError{URL: u, Record: rec, Wait: ttl - waited}
			}
			cond.IfMatch = etag
		}
		l := &Lease{ls: ls, b: b, key: key, url: u, lostCh: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
		l.rec = LeaseRecord{Holder: ls.self, Server: ls.host, Client: client, Epoch: rec.Epoch + 1, Seq: 1, TTL: ls.ttl.Milliseconds()}
		sent := ls.now()
		l.rec.Renewed = time.Now().UTC()
		data, _ := json.Marshal(l.rec)
		newTag, err := b.Put(ctx, key, data, cond)
		if errors.Is(err, ErrPrecondition) || errors.Is(err, ErrNotFound) {
			// Someone else was faster (or renewed just now): look again.
			if try < 2 {
				continue
			}
			return nil, &HeldError{URL: u, Record: rec, Wait: time.Duration(rec.TTL) * time.Millisecond}
		}
		if err != nil {
			return nil, err
		}
		l.etag = newTag
		l.validUntil = sent.Add(l.validity())
		ls.mu.Lock()
		delete(ls.seen, u)
		ls.held[u] = l
		ls.mu.Unlock()
		go l.renewLoop()
		return l, nil
	}
}

// Lease is a lease this process holds.
type Lease struct {
	ls  *Leases
	b   Bucket
	key string
	url URL

	mu         sync.Mutex
	rec        LeaseRecord
	etag       string
	validUntil time.Time // monotonic: writes are acknowledged until then
	lost       bool
	lostCh     chan struct{}
	released   bool

	stop, done chan struct{}
}

// validity is how long after sending a renewal the holder counts on it: nine tenths of the
// TTL (see the top of this file).
func (l *Lease) validity() time.Duration { return l.ls.ttl - l.ls.ttl/10 }

// Epoch is this holder's epoch.
func (l *Lease) Epoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec.Epoch
}

// URL names the lease object.
func (l *Lease) URL() URL { return l.url }

func (l *Lease) record() LeaseRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rec
}

// Check says whether writes may be acknowledged now: nil, ErrLeaseLost for good, or
// ErrLeaseLapsed until a renewal gets through.
func (l *Lease) Check() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.lost:
		return fmt.Errorf("%s: %w", l.url, ErrLeaseLost)
	case l.released:
		return fmt.Errorf("%s: released", l.url)
	case !l.ls.now().Before(l.validUntil):
		return fmt.Errorf("%s: %w", l.url, ErrLeaseLapsed)
	}
	return nil
}

// Lost is closed once the lease is lost for good.
func (l *Lease) Lost() <-chan struct{} { return l.lostCh }

func (l *Lease) renewLoop() {
	defer close(l.done)
	every := max(l.ls.ttl/6, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		if err := l.renew(); errors.Is(err, ErrLeaseLost) {
			return
		}
	}
}

// renew rewrites the lease once.
func (l *Lease) renew() error {
	l.mu.Lock()
	if l.lost || l.released {
		l.mu.Unlock()
		return ErrLeaseLost
	}
	next := l.rec
	next.Seq++
	next.Renewed = time.Now().UTC()
	etag := l.etag
	l.mu.Unlock()
	data, _ := json.Marshal(next)
	sent := l.ls.now()
	ctx, cancel := context.WithTimeout(context.Background(), l.ls.ttl/2)
	defer cancel()
	newTag, err := l.b.Put(ctx, l.key, data, Cond{IfMatch: etag})
	if errors.Is(err, ErrPrecondition) || errors.Is(err, ErrNotFound) {
		// Either someone took it over, or our write landed and only its answer was lost
		// (then a retry found our own ETag changed). The record tells which.
		cur, curTag, rerr := ReadLease(ctx, l.b, l.key)
		if rerr == nil && cur.Holder == next.Holder && cur.Epoch == next.Epoch && cur.Seq == next.Seq {
			newTag, err = curTag, nil
		} else if rerr == nil || errors.Is(rerr, ErrNotFound) {
			l.mu.Lock()
			if !l.lost {
				l.lost = true
				close(l.lostCh)
			}
			l.mu.Unlock()
			return ErrLeaseLost
		}
	}
	if err != nil {
		return err
	}
	l.mu.Lock()
	l.rec, l.etag = next, newTag
	l.validUntil = sent.Add(l.validity())
	l.mu.Unlock()
	return nil
}

// Release gives the lease up (rewriting it without a holder, so the next server takes it
// at once) and stops renewing it. A lost lease is left alone.
func (l *Lease) Release(ctx context.Context) error {
	l.mu.Lock()
	if l.released {
		l.mu.Unlock()
		return nil
	}
	l.released = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	// The record and its ETag once the renewals have stopped: one in flight a moment ago
	// has changed both, and a release with the older ETag would fail its condition and
	// leave the lease held until its TTL ran out.
	l.mu.Lock()
	lost := l.lost
	next := l.rec
	etag := l.etag
	l.mu.Unlock()
	l.ls.mu.Lock()
	if l.ls.held[l.url] == l {
		delete(l.ls.held, l.url)
	}
	l.ls.mu.Unlock()
	if lost {
		return nil
	}
	next.Holder, next.Client = "", ""
	next.Seq++
	next.Renewed = time.Now().UTC()
	data, _ := json.Marshal(next)
	if _, err := l.b.Put(ctx, l.key, data, Cond{IfMatch: etag}); err != nil && !errors.Is(err, ErrPrecondition) {
		return fmt.Errorf("releasing lease: %w", err)
	}
	return nil
}

// ErrNoConditionalWrites says a store ignores the conditions of conditional writes.
var ErrNoConditionalWrites = errors.New("the store does not honour conditional writes (If-None-Match: * and If-Match on PUT), " +
	"which the leases and manifests of writable s3:// exports rely on: without them two servers could both believe they " +
	"hold a writer. Serve its images read-only, or use a store that honours them (AWS S3, SeaweedFS, MinIO, Ceph RGW)")

// CheckConditionalWrites verifies, with a probe object at prefix, that b honours
// conditional writes: a PUT with If-None-Match: * over an existing object and one with
// If-Match on a wrong ETag must both fail with 412.
func CheckConditionalWrites(ctx context.Context, b Bucket, prefix string) error {
	var r [8]byte
	rand.Read(r[:])
	key := prefix + "/.conditional-write-probe-" + hex.EncodeToString(r[:])
	if _, err := b.Put(ctx, key, []byte("nbdroot probe\n"), Cond{}); err != nil {
		return err
	}
	defer b.Delete(ctx, key, "")
	if _, err := b.Put(ctx, key, []byte("overwritten\n"), Cond{IfNoneMatch: true}); !errors.Is(err, ErrPrecondition) {
		return fmt.Errorf("%s: %w (a PUT with If-None-Match: * over an existing object gave %v)", URL{b.Name(), key}, ErrNoConditionalWrites, err)
	}
	if _, err := b.Put(ctx, key, []byte("overwritten\n"), Cond{IfMatch: `"00000000000000000000000000000000"`}); !errors.Is(err, ErrPrecondition) {
		return fmt.Errorf("%s: %w (a PUT with If-Match on a wrong ETag gave %v)", URL{b.Name(), key}, ErrNoConditionalWrites, err)
	}
	return nil
}
