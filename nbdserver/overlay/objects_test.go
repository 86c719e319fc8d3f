package overlay

import (
	"bytes"
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
	words := make([]uint64, (1<<30)/nbdBlock/64)
	words[0] = 1                  // block 0: in chunk 0, which is stored
	words[len(words)-1] = 1 << 63 // the last block: in chunk 8191, stored
	withBits := *m
	withBits.Bitmap = bitmapBytes(words)
	data, _ = encodeManifest(&withBits)
	if _, err := decodeManifest(data); err != nil {
		t.Errorf("blocks in stored chunks: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Manifest)
		want string
	}{
		{"chunk outside the image", func(m *Manifest) { m.Chunks = []ChunkRef{{Index: 8192}} }, "outside the image"},
		{"chunk named twice", func(m *Manifest) { m.Chunks = []ChunkRef{{Index: 3, Seq: 1}, {Index: 3, Seq: 2}} }, "named twice"},
		{"slot outside a pack", func(m *Manifest) { m.Chunks = []ChunkRef{{Index: 3, Slot: PackChunks}} }, "slot"},
		{"block without its chunk", func(m *Manifest) {
			w := make([]uint64, len(words))
			w[1] = 1 // block 64: chunk 2, not stored
			m.Bitmap = bitmapBytes(w)
		}, "chunk 2 is not stored"},
		{"short bitmap", func(m *Manifest) { m.Bitmap = m.Bitmap[:8] }, "bitmap of 8 bytes"},
		{"other version", func(m *Manifest) { m.Version = 2 }, "version 2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := *m
			tc.edit(&bad)
			data, _ := encodeManifest(&bad)
			if _, err := decodeManifest(data); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("decode: %v, want an error with %q", err, tc.want)
			}
		})
	}
}

// A pack object cut short in the store fails the read loudly; it never reads as zeroes.
func TestReadChunkShortPack(t *testing.T) {
	b := objstore.NewMem("fleet")
	s := objStore(b)
	o, err := s.Create(meta("root", pc1, Temporary), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	data := make([]byte, 2*ChunkSize)
	for i := range data {
		data[i] = byte(i % 251)
	}
	refs, err := o.Remote.PutChunks(context.Background(), []int64{0, 1}, data)
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, ChunkSize)
	if err := o.Remote.ReadChunk(context.Background(), refs[1], p); err != nil || p[7] != data[ChunkSize+7] {
		t.Fatalf("read: %v", err)
	}
	key := o.Remote.chunkKey(refs[1])
	b.Put(context.Background(), key, data[:ChunkSize+100], objstore.Cond{})
	if err := o.Remote.ReadChunk(context.Background(), refs[1], p); !errors.Is(err, ErrShortPack) {
		t.Errorf("read of a truncated pack: %v, want ErrShortPack", err)
	}
}

func TestParsePackKey(t *testing.T) {
	for _, tc := range []struct {
		name string
		want pack
		ok   bool
	}{
		{"00000001-00000002", pack{1, 2}, true},
		{"123456789-00000002", pack{0x123456789, 2}, true},
		{"0000000A-00000002", pack{}, false}, // not how packKey writes it
		{"1-2", pack{}, false},
		{"00000001-00000002-x", pack{}, false},
		{"00000001", pack{}, false},
		{"+0000001-00000002", pack{}, false},
		{".conditional-write-probe-0123", pack{}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := parsePackKey(tc.name)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parsePackKey(%q) = %v, %v; want %v, %v", tc.name, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// FuzzParsePackKey: garbage collection deletes what parses, so whatever parses must be a
// key packKey writes.
func FuzzParsePackKey(f *testing.F) {
	f.Add("00000001-00000002")
	f.Add("ffffffffffffffff-ffffffffffffffff")
	f.Add("0000000A-00000002")
	f.Fuzz(func(t *testing.T, name string) {
		p, ok := parsePackKey(name)
		if ok && p.name() != name {
			t.Fatalf("parsed %q as %v, which packKey writes as %q", name, p, p.name())
		}
	})
}

// FuzzParseMeta feeds meta.json as a store or a directory could hold it.
func FuzzParseMeta(f *testing.F) {
	m := meta("thin/root", pc1, Temporary)
	m.Version = MetaVersion
	js, _ := json.Marshal(m)
	f.Add(js)
	f.Add([]byte(`{"version":1,"id":"zz"}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMeta(data)
		if err != nil {
			return
		}
		if m.Version != MetaVersion {
			t.Fatalf("accepted version %d", m.Version)
		}
		// What parses survives a round trip (it is written back by no one, but compared
		// with the key's export, client and ID).
		js, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseMeta(js)
		if err != nil {
			t.Fatalf("round trip of %s: %v", js, err)
		}
		if js2, _ := json.Marshal(back); !bytes.Equal(js, js2) {
			t.Fatalf("round trip: %s -> %s", js, js2)
		}
	})
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
		stored := map[int64]bool{}
		for _, c := range m.Chunks {
			if c.Index < 0 || c.Index*m.ChunkSize >= m.Size+m.ChunkSize {
				t.Fatalf("chunk %d outside", c.Index)
			}
			stored[c.Index] = true
		}
		// Every block in the overlay reads from a stored chunk.
		for i, w := range m.BitmapWords() {
			for b := range 64 {
				if w&(1<<b) != 0 && !stored[(int64(i)*64+int64(b))*m.BlockSize/m.ChunkSize] {
					t.Fatalf("block %d set without its chunk", i*64+b)
				}
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
