package objstore

import (
	"context"
	"errors"
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
