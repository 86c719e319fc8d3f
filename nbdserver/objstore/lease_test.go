package objstore

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a monotonic clock the test moves.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// testLeases is a lease manager on a fake clock that renews only when told (renewal
// goroutines tick on real time; a TTL of an hour keeps them quiet).
func testLeases(clock *fakeClock) *Leases {
	ls := NewLeases(time.Hour)
	ls.now = clock.Now
	return ls
}

func TestLeaseTakeover(t *testing.T) {
	ctx := context.Background()
	b := NewMem("leases")
	clock := &fakeClock{now: time.Unix(1000, 0)}
	a, bsrv := testLeases(clock), testLeases(clock)
	la, err := a.Acquire(ctx, b, "ov/lease", "pc1")
	if err != nil {
		t.Fatal(err)
	}
	if la.Epoch() != 1 || la.Check() != nil {
		t.Fatalf("epoch %d, check %v", la.Epoch(), la.Check())
	}
	// B sees A's lease: held, for a whole TTL from B's first look.
	_, err = bsrv.Acquire(ctx, b, "ov/lease", "pc1")
	var he *HeldError
	if !errors.As(err, &he) || he.Record.Holder != a.Self() || he.Record.Client != "pc1" || he.Wait != time.Hour {
		t.Fatalf("B's first try: %v", err)
	}
	clock.advance(50 * time.Minute)
	// A renews: B's observation starts again.
	if err := la.renew(); err != nil {
		t.Fatal(err)
	}
	clock.advance(20 * time.Minute)
	if _, err := bsrv.Acquire(ctx, b, "ov/lease", "pc1"); !errors.As(err, &he) || he.Wait != time.Hour {
		t.Fatalf("B after A renewed: %v", err)
	}
	// A stops renewing. Its validity ends at 9/10 of a TTL after its last renewal...
	clock.advance(35 * time.Minute)
	if err := la.Check(); !errors.Is(err, ErrLeaseLapsed) {
		t.Errorf("A 55 min after its renewal: %v, want ErrLeaseLapsed", err)
	}
	// ...before B, which first saw that renewal 20 min after it, may take over.
	if _, err := bsrv.Acquire(ctx, b, "ov/lease", "pc1"); !errors.As(err, &he) {
		t.Fatalf("B takes over before a TTL passed since it saw the renewal: %v", err)
	}
	clock.advance(26 * time.Minute)
	lb, err := bsrv.Acquire(ctx, b, "ov/lease", "pc1")
	if err != nil {
		t.Fatalf("B after a whole TTL without renewal: %v", err)
	}
	if lb.Epoch() != 2 {
		t.Errorf("B's epoch %d, want 2", lb.Epoch())
	}
	// A's next renewal finds the lease taken: lost for good.
	if err := la.renew(); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("A's renewal after the takeover: %v", err)
	}
	if err := la.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Errorf("A's check: %v", err)
	}
	select {
	case <-la.Lost():
	default:
		t.Error("A's Lost channel is open")
	}
	la.Release(ctx) // a lost lease is left alone
	if rec, _, _ := ReadLease(ctx, b, "ov/lease"); rec.Holder != bsrv.Self() {
		t.Errorf("A's release touched B's lease: %+v", rec)
	}
	// B releases: A takes it at once.
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
	la2, err := a.Acquire(ctx, b, "ov/lease", "pc1")
	if err != nil || la2.Epoch() != 3 {
		t.Fatalf("A after B released: %v", err)
	}
	la2.Release(ctx)
}

// A renewal the store applied but whose answer was lost: the retry's If-Match fails on
// the holder's own new ETag, and the record shows the holder's own write — not a takeover.
func TestLeaseRenewalAnswerLost(t *testing.T) {
	ctx := context.Background()
	b := NewMem("leases")
	clock := &fakeClock{now: time.Unix(1000, 0)}
	ls := testLeases(clock)
	l, err := ls.Acquire(ctx, b, "k", "pc1")
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	rec, etag := l.rec, l.etag
	l.mu.Unlock()
	if err := l.renew(); err != nil {
		t.Fatal(err)
	}
	// Forget that answer, as if it never arrived: the holder retries the same renewal.
	l.mu.Lock()
	l.rec, l.etag = rec, etag
	l.mu.Unlock()
	if err := l.renew(); err != nil {
		t.Fatalf("retried renewal: %v, want it recognised as our own", err)
	}
	if err := l.Check(); err != nil {
		t.Errorf("check: %v", err)
	}
	// The next renewal goes through with the adopted ETag.
	if err := l.renew(); err != nil {
		t.Errorf("renewal after the recovery: %v", err)
	}
}

func TestLeaseCheckBeforeRelease(t *testing.T) {
	ctx := context.Background()
	b := NewMem("leases")
	ls := NewLeases(time.Second)
	l, err := ls.Acquire(ctx, b, "k", "pc1")
	if err != nil {
		t.Fatal(err)
	}
	// Renewals keep it valid well past its TTL.
	time.Sleep(1500 * time.Millisecond)
	if err := l.Check(); err != nil {
		t.Errorf("a renewed lease: %v", err)
	}
	// The same process cannot take a lease it holds.
	if _, err := ls.Acquire(ctx, b, "k", "pc2"); err == nil {
		t.Error("acquired a lease this process holds")
	}
	l.Release(ctx)
	if err := l.Check(); err == nil {
		t.Error("a released lease still checks valid")
	}
}

func TestParseLeaseRecord(t *testing.T) {
	for _, tc := range []struct {
		name, data string
		ok         bool
	}{
		{"held", `{"holder":"a/01","epoch":3,"seq":9,"ttl_ms":30000,"renewed":"2026-12-04T23:00:00Z"}`, true},
		{"released", `{"holder":"","epoch":3,"seq":10,"ttl_ms":30000}`, true},
		{"not JSON", `lease`, false},
		{"no TTL", `{"holder":"a/01","epoch":3}`, false},
		{"negative TTL", `{"holder":"a/01","epoch":3,"ttl_ms":-1}`, false},
		// As a time.Duration this overflows to a negative wait: an instant takeover.
		{"huge TTL", `{"holder":"a/01","epoch":3,"ttl_ms":9223372036854775}`, false},
		{"held in epoch 0", `{"holder":"a/01","epoch":0,"ttl_ms":30000}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseLeaseRecord([]byte(tc.data))
			if (err == nil) != tc.ok {
				t.Errorf("ParseLeaseRecord(%s): %v, want ok=%v", tc.data, err, tc.ok)
			}
		})
	}
}

// A bad lease record is refused, never taken as "expired": Acquire fails with the reason
// instead of taking the writer over.
func TestAcquireBadRecord(t *testing.T) {
	ctx := context.Background()
	b := NewMem("b")
	b.Put(ctx, "lease", []byte(`{"holder":"other/01","epoch":4,"ttl_ms":-5}`), Cond{})
	if _, err := NewLeases(time.Second).Acquire(ctx, b, "lease", "pc1"); err == nil || !strings.Contains(err.Error(), "TTL") {
		t.Errorf("acquire over a record with a negative TTL: %v, want a refusal naming the TTL", err)
	}
}

// FuzzParseLeaseRecord feeds lease objects as a store could hold them: what parses is a
// record whose wait is a real, bounded duration.
func FuzzParseLeaseRecord(f *testing.F) {
	f.Add([]byte(`{"holder":"a/01","server":"a","client":"52:54:00:12:34:56","epoch":3,"seq":9,"ttl_ms":30000,"renewed":"2026-12-04T23:00:00Z"}`))
	f.Add([]byte(`{"holder":"","epoch":1,"seq":2,"ttl_ms":1000}`))
	f.Add([]byte(`{"ttl_ms":1e30}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseLeaseRecord(data)
		if err != nil {
			return
		}
		if d := time.Duration(r.TTL) * time.Millisecond; d <= 0 || d > MaxLeaseTTL {
			t.Fatalf("accepted a TTL of %d ms (%v)", r.TTL, d)
		}
		if r.Holder != "" && r.Epoch == 0 {
			t.Fatalf("accepted a holder in epoch 0")
		}
	})
}

// heldPuts is a bucket whose PUTs of one key wait, once armed, until released: a renewal
// caught in flight.
type heldPuts struct {
	Bucket
	key      string
	armed    chan struct{} // closed by the test: the next PUT of key waits
	inFlight chan struct{} // closed when that PUT waits
	proceed  chan struct{} // closed by the test: it goes on
	once     sync.Once
}

func (h *heldPuts) Put(ctx context.Context, key string, data []byte, c Cond) (string, error) {
	select {
	case <-h.armed:
		if key == h.key {
			waited := false
			h.once.Do(func() { waited = true; close(h.inFlight) })
			if waited {
				<-h.proceed
			}
		}
	default:
	}
	return h.Bucket.Put(ctx, key, data, c)
}

// A release while a renewal is in flight: the release must use the ETag that renewal
// produces, or its conditional PUT fails and the lease stays held for a whole TTL — the
// next server is refused a writer that nobody holds.
func TestLeaseReleaseDuringRenewal(t *testing.T) {
	ctx := context.Background()
	b := &heldPuts{Bucket: NewMem("leases"), key: "k", armed: make(chan struct{}), inFlight: make(chan struct{}), proceed: make(chan struct{})}
	l, err := NewLeases(300*time.Millisecond).Acquire(ctx, b, "k", "pc1")
	if err != nil {
		t.Fatal(err)
	}
	close(b.armed)
	select {
	case <-b.inFlight:
	case <-time.After(5 * time.Second):
		t.Fatal("no renewal within 5 s")
	}
	released := make(chan error, 1)
	go func() { released <- l.Release(ctx) }()
	// Release has started (and, before the fix, taken the ETag the renewal is replacing).
	time.Sleep(50 * time.Millisecond)
	close(b.proceed)
	if err := <-released; err != nil {
		t.Fatalf("release: %v", err)
	}
	l2, err := NewLeases(time.Hour).Acquire(ctx, b, "k", "pc2")
	if err != nil {
		t.Fatalf("acquire after a release during a renewal: %v", err)
	}
	l2.Release(ctx)
}
