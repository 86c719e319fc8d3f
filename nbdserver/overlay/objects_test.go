package overlay

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
)

func objStore(b objstore.Bucket) *Objects {
	// An hour's TTL: renewals stay quiet during a test; takeovers are staged by hand.
	return &Objects{B: b, Prefix: "images/root.img.nbdroot", Leases: objstore.NewLeases(time.Hour)}
}

func TestObjectsLifecycle(t *testing.T) {
	b := objstore.NewMem("fleet")
	a, other := objStore(b), objStore(b)
	m := meta("thin/root", pc1, Temporary)
	o, err := a.Create(m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(o.Dir, "s3://fleet/images/root.img.nbdroot/overlays/thin%2Froot/id-52:54:00:12:34:56/") || o.Remote == nil {
		t.Fatalf("created %+v at %s", o.Meta, o.Dir)
	}
	if !a.Exists("thin/root", pc1, o.ID) || a.Exists("thin/root", Client{ID: "pc2"}, o.ID) {
		t.Error("Exists")
	}
	// Held by its creator: another server neither opens nor removes it.
	if _, err := other.Open("thin/root", pc1, o.ID); !errors.Is(err, ErrBusy) {
		t.Errorf("open while held: %v, want ErrBusy", err)
	}
	if err := other.Remove(o.Dir); !errors.Is(err, ErrBusy) {
		t.Errorf("remove while held: %v, want ErrBusy", err)
	}
	list, err := other.List()
	if err != nil || len(list) != 1 || !list[0].Attached || list[0].ID != o.ID {
		t.Errorf("list: %+v %v", list, err)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	// Released: the other server opens it at once.
	again, err := other.Open("thin/root", pc1, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Meta != o.Meta {
		t.Errorf("reopened meta %+v, want %+v", again.Meta, o.Meta)
	}
	found, err := a.Find("thin/root", pc1)
	if err != nil || len(found) != 1 || found[0].ID != o.ID {
		t.Errorf("find: %+v %v", found, err)
	}
	if _, err := a.Open("thin/root", Client{ID: "pc2"}, o.ID); !errors.Is(err, ErrGone) {
		t.Errorf("another client's view of it: %v, want ErrGone", err)
	}
	again.Close()
	// Reaped once unused for the grace period; persistent ones never.
	p, err := a.Create(meta("thin/root", pc1, Persistent), nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	removed, err := a.Reap(time.Now().Add(2*time.Hour), time.Time{}, time.Hour)
	if err != nil || len(removed) != 1 || removed[0].ID != o.ID {
		t.Errorf("reap: %+v %v", removed, err)
	}
	if a.Exists("thin/root", pc1, o.ID) || !a.Exists("thin/root", pc1, p.ID) {
		t.Error("reaped the wrong overlay")
	}
	if err := a.Remove(a.where(a.overlayKey("thin/root", pc1, p.ID))); err != nil {
		t.Fatal(err)
	}
	if keys := b.Keys(""); len(keys) != 0 {
		t.Errorf("left behind: %q", keys)
	}
}

// The manifest fences a server that was replaced: even while its own lease still looks
// valid to it (a stalled process, a clock that lied), its commits fail once another
// server opened the overlay, and nothing it uploads reaches the new holder's view.
func TestObjectsFencing(t *testing.T) {
	ctx := context.Background()
	b := objstore.NewMem("fleet")
	a, bsrv := objStore(b), objStore(b)
	o, err := a.Create(meta("root", pc1, Temporary), nil)
	if err != nil {
		t.Fatal(err)
	}
	ra := o.Remote
	words := make([]uint64, len(ra.Manifest().BitmapWords()))
	put := func(r *Remote, text string) ChunkRef {
		t.Helper()
		data := make([]byte, 2*ChunkSize)
		copy(data, text)
		copy(data[ChunkSize:], "chunk 5 of "+text)
		refs, err := r.PutChunks(ctx, []int64{0, 5}, data)
		if err != nil {
			t.Fatal(err)
		}
		if refs[1].Index != 5 || refs[1].Slot != 1 || refs[1].pack() != refs[0].pack() {
			t.Fatalf("refs %+v", refs)
		}
		return refs[0]
	}
	c1 := put(ra, "A's flushed chunk")
	words[0] = 1
	if err := ra.Commit(ctx, words, []ChunkRef{c1}); err != nil {
		t.Fatal(err)
	}
	// Stage a takeover: the lease looks released to B (A's renewals are an hour apart,
	// so A still believes it holds it).
	key := a.overlayKey("root", pc1, o.ID) + "/" + LeaseObject
	rec, _, err := objstore.ReadLease(ctx, b, key)
	if err != nil {
		t.Fatal(err)
	}
	rec.Holder = ""
	if _, err := b.Put(ctx, key, mustJSON(t, rec), objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	ob, err := bsrv.Open("root", pc1, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := ra.Lease.Check(); err != nil {
		t.Fatalf("A's lease should still look valid to A: %v", err)
	}
	c2 := put(ra, "A's late chunk")
	if err := ra.Commit(ctx, words, []ChunkRef{c2}); !errors.Is(err, ErrFenced) {
		t.Fatalf("A's commit after B opened the overlay: %v, want ErrFenced", err)
	}
	rb := ob.Remote
	got, ok := rb.Chunk(0)
	if !ok || got != c1 {
		t.Fatalf("B's chunk 0 is %+v, want A's flushed %+v", got, c1)
	}
	p := make([]byte, 17)
	if err := rb.ReadChunk(ctx, got, p); err != nil || string(p) != "A's flushed chunk" {
		t.Errorf("B reads %q %v", p, err)
	}
	if c5, ok := rb.Chunk(5); ok {
		t.Errorf("B sees chunk 5 %+v, which A uploaded but never committed", c5)
	}
	if c2.Epoch >= rb.Lease.Epoch() || rb.chunkKey(c2) == rb.chunkKey(got) {
		t.Errorf("A's late upload %+v could collide with B's epoch %d", c2, rb.Lease.Epoch())
	}
	// B's next commit supersedes chunk 0; the old pack goes once nothing in it is named.
	c3 := put(rb, "B's chunk")
	if err := rb.Commit(ctx, words, []ChunkRef{c3}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, func() bool {
		_, err := b.Head(ctx, rb.chunkKey(c1))
		return errors.Is(err, objstore.ErrNotFound)
	})
	// A's late, never committed pack is garbage the next opener removes.
	o.Close() // A lets go (its release finds the lease rewritten and leaves it alone)
	ob.Close()
	oc, err := a.Open("root", pc1, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer oc.Close()
	waitUntil(t, func() bool {
		_, err := b.Head(ctx, rb.chunkKey(c2))
		return errors.Is(err, objstore.ErrNotFound)
	})
	if _, err := b.Head(ctx, rb.chunkKey(c3)); err != nil {
		t.Errorf("the committed pack went: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
	}
}

func TestManifestRoundTrip(t *testing.T) {
	m := &Manifest{Version: ManifestVersion, ID: nbd.OverlayID{1, 2, 3}, Epoch: 4, Holder: "h/1", Commit: 9,
		Size: 1 << 30, ChunkSize: ChunkSize, BlockSize: nbdBlock, Bitmap: bitmapBytes(make([]uint64, (1<<30)/nbdBlock/64)),
		Chunks: []ChunkRef{{Index: 0, Epoch: 1, Seq: 2}, {Index: 8191, Epoch: 4, Seq: 1}}}
	data, err := encodeManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeManifest(data)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != m.ID || got.Commit != 9 || len(got.Chunks) != 2 || got.Chunks[1] != m.Chunks[1] || len(got.Bitmap) != len(m.Bitmap) {
		t.Errorf("round trip: %+v", got)
	}
	bad := *m
	bad.Chunks = []ChunkRef{{Index: 8192}}
	data, _ = encodeManifest(&bad)
	if _, err := decodeManifest(data); err == nil {
		t.Error("a chunk outside the image was accepted")
	}
}

func FuzzDecodeManifest(f *testing.F) {
	m := &Manifest{Version: ManifestVersion, Size: 1 << 20, ChunkSize: ChunkSize, BlockSize: nbdBlock,
		Bitmap: make([]byte, bitmapLen(1<<20, nbdBlock)), Chunks: []ChunkRef{{Index: 3, Epoch: 1, Seq: 1}}}
	data, _ := encodeManifest(m)
	f.Add(data)
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeManifest(data)
		if err != nil {
			return
		}
		// What decodes is consistent: the engine indexes bitmap and chunks with it.
		if int64(len(m.Bitmap)) != bitmapLen(m.Size, m.BlockSize) {
			t.Fatalf("bitmap of %d bytes for size %d", len(m.Bitmap), m.Size)
		}
		for _, c := range m.Chunks {
			if c.Index < 0 || c.Index*m.ChunkSize >= m.Size+m.ChunkSize {
				t.Fatalf("chunk %d outside", c.Index)
			}
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
