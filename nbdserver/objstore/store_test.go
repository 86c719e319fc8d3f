package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	"github.com/nbdroot/nbdroot/nbdserver/objstore/weedtest"
)

// What nbdroot relies on from a real store (SeaweedFS here): conditional writes that
// exactly one of many racing writers wins, ranged reads that insist on an ETag, and the
// error values. The same test against the in-memory fake keeps the fake honest.

func TestMain(m *testing.M) {
	code := m.Run()
	weedtest.StopShared()
	os.Exit(code)
}

func stores(t *testing.T) map[string]objstore.Bucket {
	w := weedtest.Shared(t)
	return map[string]objstore.Bucket{"mem": objstore.NewMem("nbdroot-test"), "seaweedfs": w.NewBucket(t)}
}

func TestBucketSemantics(t *testing.T) {
	ctx := context.Background()
	for name, b := range stores(t) {
		t.Run(name, func(t *testing.T) {
			if _, _, err := b.Get(ctx, "missing"); !errors.Is(err, objstore.ErrNotFound) {
				t.Errorf("get missing: %v, want ErrNotFound", err)
			}
			if _, err := b.Head(ctx, "missing"); !errors.Is(err, objstore.ErrNotFound) {
				t.Errorf("head missing: %v, want ErrNotFound", err)
			}
			e1, err := b.Put(ctx, "k", []byte("one"), objstore.Cond{IfNoneMatch: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.Put(ctx, "k", []byte("two"), objstore.Cond{IfNoneMatch: true}); !errors.Is(err, objstore.ErrPrecondition) {
				t.Errorf("If-None-Match on an existing key: %v, want ErrPrecondition", err)
			}
			if _, err := b.Put(ctx, "k", []byte("two"), objstore.Cond{IfMatch: `"0123456789abcdef0123456789abcdef"`}); !errors.Is(err, objstore.ErrPrecondition) {
				t.Errorf("If-Match with a wrong ETag: %v, want ErrPrecondition", err)
			}
			e2, err := b.Put(ctx, "k", []byte("two!"), objstore.Cond{IfMatch: e1})
			if err != nil || e2 == e1 {
				t.Fatalf("If-Match with the right ETag: %q %v", e2, err)
			}
			data, a, err := b.Get(ctx, "k")
			if err != nil || string(data) != "two!" || a.ETag != e2 || a.Size != 4 {
				t.Errorf("get: %q %+v %v", data, a, err)
			}
			p := make([]byte, 3)
			if n, err := b.ReadRange(ctx, "k", p, 1, e2); err != nil || n != 3 || string(p) != "wo!" {
				t.Errorf("range 1+3: %d %q %v", n, p, err)
			}
			if n, err := b.ReadRange(ctx, "k", p, 2, ""); err != nil || n != 2 || string(p[:2]) != "o!" {
				t.Errorf("range past the end: %d %q %v", n, p[:n], err)
			}
			if n, err := b.ReadRange(ctx, "k", p, 4, ""); err != nil || n != 0 {
				t.Errorf("range at the end: %d %v", n, err)
			}
			if _, err := b.ReadRange(ctx, "k", p, 0, e1); !errors.Is(err, objstore.ErrPrecondition) {
				t.Errorf("range with a stale ETag: %v, want ErrPrecondition", err)
			}
			if err := b.Delete(ctx, "k", e1); !errors.Is(err, objstore.ErrPrecondition) {
				t.Errorf("delete with a stale ETag: %v, want ErrPrecondition", err)
			}
			if err := b.Delete(ctx, "k", e2); err != nil {
				t.Errorf("delete with the right ETag: %v", err)
			}
			if err := b.Delete(ctx, "k", ""); err != nil {
				t.Errorf("delete of a missing key: %v", err)
			}
			for i := range 3 {
				b.Put(ctx, fmt.Sprintf("dir/%d", i), []byte{byte(i)}, objstore.Cond{})
			}
			b.Put(ctx, "dirx", nil, objstore.Cond{})
			var keys []string
			if err := b.List(ctx, "dir/", func(o objstore.Object) error { keys = append(keys, o.Key); return nil }); err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(keys) != "[dir/0 dir/1 dir/2]" {
				t.Errorf("list dir/: %q", keys)
			}
		})
	}
}

// TestConditionalRace is the property the lease and the manifest rest on: of many writers
// racing with one condition, exactly one wins.
func TestConditionalRace(t *testing.T) {
	ctx := context.Background()
	for name, b := range stores(t) {
		t.Run(name, func(t *testing.T) {
			for round := range 3 {
				key := fmt.Sprintf("race/%d", round)
				etag, err := b.Put(ctx, key, []byte("start"), objstore.Cond{})
				if err != nil {
					t.Fatal(err)
				}
				for _, cond := range []objstore.Cond{{IfMatch: etag}, {IfNoneMatch: true}} {
					if cond.IfNoneMatch {
						key += "-new"
					}
					var wins atomic.Int32
					var wg sync.WaitGroup
					for w := range 8 {
						wg.Add(1)
						go func() {
							defer wg.Done()
							_, err := b.Put(ctx, key, []byte(fmt.Sprintf("writer %d", w)), cond)
							switch {
							case err == nil:
								wins.Add(1)
							case !errors.Is(err, objstore.ErrPrecondition):
								t.Errorf("writer %d: %v", w, err)
							}
						}()
					}
					wg.Wait()
					if n := wins.Load(); n != 1 {
						t.Errorf("round %d, %+v: %d writers won, want exactly 1", round, cond, n)
					}
				}
			}
		})
	}
}

// Leases on the real store: exactly one of several servers acquiring at once gets it;
// the others learn who holds it.
func TestLeaseRace(t *testing.T) {
	ctx := context.Background()
	for name, b := range stores(t) {
		t.Run(name, func(t *testing.T) {
			var wins atomic.Int32
			var wg sync.WaitGroup
			held := make(chan *objstore.Lease, 8)
			for range 8 {
				ls := objstore.NewLeases(5 * time.Second)
				wg.Add(1)
				go func() {
					defer wg.Done()
					l, err := ls.Acquire(ctx, b, "lease-race", "pc1")
					var he *objstore.HeldError
					switch {
					case err == nil:
						wins.Add(1)
						held <- l
					case !errors.As(err, &he):
						t.Errorf("acquire: %v", err)
					}
				}()
			}
			wg.Wait()
			if n := wins.Load(); n != 1 {
				t.Fatalf("%d servers hold the lease, want 1", n)
			}
			l := <-held
			if err := l.Check(); err != nil {
				t.Error(err)
			}
			l.Release(ctx)
			l2, err := objstore.NewLeases(time.Second).Acquire(ctx, b, "lease-race", "pc2")
			if err != nil {
				t.Fatalf("acquire after release: %v", err)
			}
			if l2.Epoch() != l.Epoch()+1 {
				t.Errorf("epoch %d after %d", l2.Epoch(), l.Epoch())
			}
			l2.Release(ctx)
		})
	}
}

func TestS3ImageThroughCache(t *testing.T) {
	b := weedtest.Shared(t).NewBucket(t)
	ctx := context.Background()
	img := make([]byte, 3<<20+12345)
	for i := range img {
		img[i] = byte(i*7 + i>>12)
	}
	if _, err := b.Put(ctx, "root.img", img, objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	c := objstore.NewCache(1<<20, 64<<10, 0)
	im, err := c.OpenImage(ctx, b, "root.img")
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n int }{{0, 4096}, {65530, 20}, {1 << 20, 300 << 10}, {len(img) - 100, 100}} {
		p := make([]byte, r.n)
		if err := im.ReadAt(ctx, p, int64(r.off)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, img[r.off:r.off+r.n]) {
			t.Errorf("read %d+%d differs", r.off, r.n)
		}
	}
	// A new upload under the key: reads fail instead of mixing versions.
	if _, err := b.Put(ctx, "root.img", img[:len(img)-1], objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4096)
	if err := im.ReadAt(ctx, p, 2<<20); !errors.Is(err, objstore.ErrImageChanged) {
		t.Errorf("read after a new upload: %v, want ErrImageChanged", err)
	}
}
