package overlay

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
)

// Overlays in an object store. Layout under a prefix (by default IMAGEKEY.nbdroot beside
// the image object):
//
//	PREFIX/overlays/EXPORT/CLIENT/ID/meta.json   what the overlay is (written once)
//	PREFIX/overlays/EXPORT/CLIENT/ID/lease       which server holds it (objstore.Lease)
//	PREFIX/overlays/EXPORT/CLIENT/ID/manifest    the committed state: bitmap and chunk table
//	PREFIX/writes/ID/…                           the same for a read-write export's writes
//	PREFIX/chunks/ID/EPOCH-SEQ                   pack objects: chunks of ChunkSize bytes
//
// An overlay exists exactly when its manifest does: creation writes meta.json and the
// lease first and the manifest last (If-None-Match), removal deletes the manifest first.
//
// The data goes up in pack objects: the chunks one FLUSH uploads, ChunkSize bytes each, up to
// PackChunks of them per object — one PUT per FLUSH of scattered writes instead of one per
// chunk (stores bill and throttle by request). The manifest names each chunk's pack and
// place in it. Packs are immutable: each upload gets a key of its own (the writer's lease
// epoch and a sequence number), so a server that lost the lease can only add garbage — it
// never changes an object a manifest refers to. A pack is deleted once no chunk of the
// committed manifest lies in it. The manifest is rewritten
// on every FLUSH with If-Match on the ETag its holder last wrote; a new holder rewrites it
// with its epoch before serving anything. So the order of a FLUSH — chunks, then the
// manifest naming them — makes every acknowledged FLUSH durable in the store, and a
// manifest write by a server that was taken over fails instead of undoing the new
// holder's work. Chunks the new manifest no longer names are deleted after it is written;
// a crash in between leaves garbage that the next holder removes when it opens the
// overlay.

// File names (object key suffixes) of a store overlay.
const (
	ManifestObject = "manifest"
	LeaseObject    = "lease"
)

// ChunkSize is the unit of store overlays' data: what a write marks dirty and a FLUSH uploads.
// Small enough that a FLUSH after scattered 4 KiB writes uploads little more than was
// written; large enough that a big sequential write is not thousands of requests.
const ChunkSize = 128 << 10

// ManifestVersion is the version of manifests this package writes and reads.
const ManifestVersion = 1

// Objects is the overlays under a prefix of an object store bucket.
type Objects struct {
	B      objstore.Bucket
	Prefix string // key prefix, without a trailing "/"
	Leases *objstore.Leases
	// Logf, if set, receives notes on background work (garbage collection).
	Logf func(format string, args ...any)
}

var _ Store = (*Objects)(nil)

// Location is s3://BUCKET/PREFIX.
func (s *Objects) Location() string { return objstore.URL{Bucket: s.B.Name(), Key: s.Prefix}.String() }

// clientKey is the key prefix of client c's overlays on export (the writes overlays for
// the zero client).
func (s *Objects) clientKey(export string, c Client) string {
	if c == (Client{}) {
		return s.Prefix + "/writes"
	}
	return s.Prefix + "/overlays/" + escape(export) + "/" + c.dirName()
}

func (s *Objects) overlayKey(export string, c Client, id nbd.OverlayID) string {
	return s.clientKey(export, c) + "/" + id.String()
}

func (s *Objects) chunkPrefix(id nbd.OverlayID) string {
	return s.Prefix + "/chunks/" + id.String() + "/"
}

func (s *Objects) where(key string) string {
	return objstore.URL{Bucket: s.B.Name(), Key: key}.String()
}

func ctxStore() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Minute)
}

// PackChunks bounds the chunks of one pack object (8 MiB).
const PackChunks = 64

// ChunkRef names one stored version of a chunk: chunk Index is the Slot-th chunk of the
// pack written with lease epoch Epoch as upload Seq.
type ChunkRef struct {
	Index int64  `json:"i"`
	Epoch uint64 `json:"e"`
	Seq   uint64 `json:"s"`
	Slot  int    `json:"o,omitempty"`
}

// pack names the pack object a chunk lies in.
type pack struct{ epoch, seq uint64 }

func (c ChunkRef) pack() pack { return pack{c.Epoch, c.Seq} }

// Manifest is the committed state of a store overlay.
type Manifest struct {
	Version int           `json:"version"`
	ID      nbd.OverlayID `json:"id"`
	// Epoch is the lease epoch of the server that wrote it; Holder that server, Commit the
	// number of manifests written before this one.
	Epoch  uint64 `json:"epoch"`
	Holder string `json:"holder"`
	Commit uint64 `json:"commit"`
	// Size is the image size, ChunkSize the size of chunks and BlockSize the unit of
	// the bitmap.
	Size      int64 `json:"size"`
	ChunkSize int64 `json:"chunk_size"`
	BlockSize int64 `json:"block_size"`
	// Bitmap says which blocks are in the overlay (bit b of word b/64), little-endian
	// words, base64 in JSON.
	Bitmap []byte `json:"bitmap"`
	// Chunks are the stored chunk versions, by index.
	Chunks []ChunkRef `json:"chunks"`
}

func encodeManifest(m *Manifest) ([]byte, error) {
	js, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(js)
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// maxManifest bounds a decoded manifest: a 4 TiB image has a 128 MiB bitmap.
const maxManifest = 256 << 20

func decodeManifest(data []byte) (*Manifest, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	js, err := io.ReadAll(io.LimitReader(zr, maxManifest+1))
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if len(js) > maxManifest {
		return nil, errors.New("manifest: larger than 256 MiB")
	}
	var m Manifest
	if err := json.Unmarshal(js, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Version != ManifestVersion {
		return nil, fmt.Errorf("manifest version %d, this nbdroot reads version %d", m.Version, ManifestVersion)
	}
	if m.ChunkSize <= 0 || m.BlockSize <= 0 || m.ChunkSize%m.BlockSize != 0 || m.Size < 0 {
		return nil, fmt.Errorf("manifest: bad geometry (size %d, chunks %d, blocks %d)", m.Size, m.ChunkSize, m.BlockSize)
	}
	if want := bitmapLen(m.Size, m.BlockSize); int64(len(m.Bitmap)) != want {
		return nil, fmt.Errorf("manifest: bitmap of %d bytes for an image of %d bytes", len(m.Bitmap), m.Size)
	}
	nchunks := (m.Size + m.ChunkSize - 1) / m.ChunkSize
	stored := make(map[int64]bool, len(m.Chunks))
	for _, c := range m.Chunks {
		if c.Index < 0 || c.Index >= nchunks {
			return nil, fmt.Errorf("manifest: chunk %d outside the image", c.Index)
		}
		if c.Slot < 0 || c.Slot >= PackChunks {
			return nil, fmt.Errorf("manifest: chunk %d in slot %d of a pack", c.Index, c.Slot)
		}
		if stored[c.Index] {
			return nil, fmt.Errorf("manifest: chunk %d named twice", c.Index)
		}
		stored[c.Index] = true
	}
	// A block in the overlay lies in a stored chunk: a commit uploads a block's chunk
	// before the manifest that sets its bit. A bit without a chunk would read as zeroes,
	// a view nobody wrote.
	for i, w := range m.BitmapWords() {
		for w != 0 {
			b := int64(i)*64 + int64(bits.TrailingZeros64(w))
			w &= w - 1
			if c := b * m.BlockSize / m.ChunkSize; !stored[c] {
				return nil, fmt.Errorf("manifest: block %d is in the overlay but its chunk %d is not stored", b, c)
			}
		}
	}
	return &m, nil
}

// BitmapWords decodes the bitmap into words.
func (m *Manifest) BitmapWords() []uint64 {
	w := make([]uint64, len(m.Bitmap)/8)
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(m.Bitmap[8*i:])
	}
	return w
}

// bitmapLen is the size in bytes of the bitmap of an image: one bit per block, in 64-bit
// words.
func bitmapLen(size, block int64) int64 {
	blocks := (size + block - 1) / block
	return 8 * ((blocks + 63) / 64)
}

func bitmapBytes(words []uint64) []byte {
	b := make([]byte, 8*len(words))
	for i, w := range words {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
	return b
}

// Remote is a store overlay held by this process: its lease and committed manifest.
type Remote struct {
	s   *Objects
	key string // the overlay's key prefix
	id  nbd.OverlayID
	// Lease is the overlay's lease; its Check says whether writes may be acknowledged.
	Lease *objstore.Lease

	mu     sync.Mutex
	man    *Manifest
	etag   string
	chunks map[int64]ChunkRef
	seq    atomic.Uint64
	closed bool
}

// Manifest returns the committed manifest (do not modify it).
func (r *Remote) Manifest() *Manifest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.man
}

// Chunk returns the committed version of chunk i, if the store has one.
func (r *Remote) Chunk(i int64) (ChunkRef, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.chunks[i]
	return c, ok
}

func (r *Remote) packKey(p pack) string { return r.s.chunkPrefix(r.id) + p.name() }

// name is the last element of a pack's key.
func (p pack) name() string { return fmt.Sprintf("%08x-%08x", p.epoch, p.seq) }

func (r *Remote) chunkKey(c ChunkRef) string { return r.packKey(c.pack()) }

// parsePackKey reads the name of a pack object from a listing. Garbage collection deletes
// what it parses, so only the exact form packKey writes is a pack: any other object under
// the prefix (an upper-case or zero-padded variant, a stray upload) is left alone.
func parsePackKey(name string) (pack, bool) {
	a, b, ok := strings.Cut(name, "-")
	if !ok {
		return pack{}, false
	}
	e, e1 := strconv.ParseUint(a, 16, 64)
	q, e2 := strconv.ParseUint(b, 16, 64)
	if e1 != nil || e2 != nil {
		return pack{}, false
	}
	p := pack{e, q}
	if p.name() != name {
		return pack{}, false
	}
	return p, true
}

// ErrShortPack says a pack object holds fewer bytes than its manifest names: packs are
// written whole (ChunkSize bytes per chunk), so it was truncated or replaced. Reading it as
// zeroes would show the client a view it never wrote.
var ErrShortPack = errors.New("pack object shorter than its chunks (truncated or replaced in the store)")

// ReadChunk reads a stored chunk version into p (ChunkSize bytes, or less for the last
// chunk of the image).
func (r *Remote) ReadChunk(ctx context.Context, c ChunkRef, p []byte) error {
	n, err := r.s.B.ReadRange(ctx, r.chunkKey(c), p, int64(c.Slot)*ChunkSize, "")
	if err != nil {
		return err
	}
	if n < len(p) {
		return fmt.Errorf("%s: chunk %d in slot %d: %d of %d bytes: %w", r.s.where(r.chunkKey(c)), c.Index, c.Slot, n, len(p), ErrShortPack)
	}
	return nil
}

// PutChunks stores new versions of chunks idx (at most PackChunks) as one pack object,
// data holding ChunkSize bytes for each in order, under a key no other upload uses, and
// returns their references; the manifest names them from the next Commit on. It fails
// without a request once the lease is lost.
func (r *Remote) PutChunks(ctx context.Context, idx []int64, data []byte) ([]ChunkRef, error) {
	if len(idx) == 0 || len(idx) > PackChunks || int64(len(data)) != int64(len(idx))*ChunkSize {
		return nil, fmt.Errorf("a pack of %d chunks in %d bytes", len(idx), len(data))
	}
	if err := r.Lease.Check(); err != nil {
		return nil, err
	}
	p := pack{r.Lease.Epoch(), r.seq.Add(1)}
	if _, err := r.s.B.Put(ctx, r.packKey(p), data, objstore.Cond{}); err != nil {
		return nil, err
	}
	refs := make([]ChunkRef, len(idx))
	for k, i := range idx {
		refs[k] = ChunkRef{Index: i, Epoch: p.epoch, Seq: p.seq, Slot: k}
	}
	return refs, nil
}

// ErrFenced says a manifest write found the manifest rewritten by another server: this
// one was taken over and must not acknowledge anything more.
var ErrFenced = errors.New("the overlay's manifest was rewritten by another server (this server lost its lease)")

// Commit writes a new manifest with the bitmap words and the chunk versions in changed
// (on top of the committed ones), with If-Match on the last manifest this holder wrote.
// Chunk versions it supersedes are deleted afterwards.
func (r *Remote) Commit(ctx context.Context, words []uint64, changed []ChunkRef) error {
	if err := r.Lease.Check(); err != nil {
		return err
	}
	r.mu.Lock()
	next := *r.man
	etag := r.etag
	chunks := make(map[int64]ChunkRef, len(r.chunks)+len(changed))
	for k, v := range r.chunks {
		chunks[k] = v
	}
	r.mu.Unlock()
	var old []pack
	for _, c := range changed {
		if prev, ok := chunks[c.Index]; ok && prev.pack() != c.pack() {
			old = append(old, prev.pack())
		}
		chunks[c.Index] = c
	}
	// A superseded version's pack goes only when none of its chunks is still named.
	if len(old) > 0 {
		live := map[pack]bool{}
		for _, c := range chunks {
			live[c.pack()] = true
		}
		old = slices.DeleteFunc(slices.Compact(sortedPacks(old)), func(p pack) bool { return live[p] })
	}
	next.Commit++
	next.Bitmap = bitmapBytes(words)
	next.Chunks = sortedChunks(chunks)
	data, err := encodeManifest(&next)
	if err != nil {
		return err
	}
	newTag, err := r.s.B.Put(ctx, r.key+"/"+ManifestObject, data, objstore.Cond{IfMatch: etag})
	if errors.Is(err, objstore.ErrPrecondition) || errors.Is(err, objstore.ErrNotFound) {
		// Our own write may have landed with its answer lost: the manifest tells.
		cur, curTag, rerr := r.s.readManifest(ctx, r.key)
		switch {
		case rerr == nil && cur.Holder == next.Holder && cur.Epoch == next.Epoch && cur.Commit == next.Commit:
			newTag, err = curTag, nil
		case rerr == nil, errors.Is(rerr, objstore.ErrNotFound):
			return fmt.Errorf("%s: %w", r.s.where(r.key), ErrFenced)
		}
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.man, r.etag, r.chunks = &next, newTag, chunks
	r.mu.Unlock()
	r.s.deletePacks(r, old)
	return nil
}

func sortedPacks(p []pack) []pack {
	slices.SortFunc(p, func(a, b pack) int {
		if a.epoch != b.epoch {
			return cmpU(a.epoch, b.epoch)
		}
		return cmpU(a.seq, b.seq)
	})
	return p
}

func cmpU(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func sortedChunks(m map[int64]ChunkRef) []ChunkRef {
	out := make([]ChunkRef, 0, len(m))
	for _, c := range m {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b ChunkRef) int { return int(a.Index - b.Index) })
	return out
}

// deletePacks removes packs no committed chunk lies in any more, in the background (best
// effort: what is left is removed when the overlay is next opened).
func (s *Objects) deletePacks(r *Remote, packs []pack) {
	if len(packs) == 0 {
		return
	}
	go func() {
		ctx, cancel := ctxStore()
		defer cancel()
		for _, p := range packs {
			s.B.Delete(ctx, r.packKey(p), "")
		}
	}()
}

func (r *Remote) close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	r.mu.Unlock()
	ctx, cancel := ctxStore()
	defer cancel()
	return r.Lease.Release(ctx)
}

func (s *Objects) readManifest(ctx context.Context, key string) (*Manifest, string, error) {
	data, a, err := s.B.Get(ctx, key+"/"+ManifestObject)
	if err != nil {
		return nil, "", err
	}
	m, err := decodeManifest(data)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", s.where(key+"/"+ManifestObject), err)
	}
	return m, a.ETag, nil
}

func (s *Objects) readMeta(ctx context.Context, key string) (Meta, error) {
	data, _, err := s.B.Get(ctx, key+"/"+MetaFile)
	if err != nil {
		return Meta{}, err
	}
	m, err := parseMeta(data)
	if err != nil {
		return m, fmt.Errorf("%s: %w", s.where(key+"/"+MetaFile), err)
	}
	return m, nil
}

// storeErr turns a store failure into the package's errors where one applies.
func storeErr(err error) error {
	var he *objstore.HeldError
	if errors.As(err, &he) {
		return fmt.Errorf("%w: %v", ErrBusy, he)
	}
	return err
}

// Create makes a new, empty overlay for m and returns it held.
func (s *Objects) Create(m Meta, _ func(dir string) error) (*Overlay, error) {
	if err := m.complete(); err != nil {
		return nil, err
	}
	ctx, cancel := ctxStore()
	defer cancel()
	key := s.overlayKey(m.Export, m.Client, m.ID)
	lease, err := s.Leases.Acquire(ctx, s.B, key+"/"+LeaseObject, m.Client.String())
	if err != nil {
		return nil, storeErr(err)
	}
	fail := func(err error) (*Overlay, error) {
		lease.Release(ctx)
		return nil, err
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fail(err)
	}
	if _, err := s.B.Put(ctx, key+"/"+MetaFile, append(js, '\n'), objstore.Cond{IfNoneMatch: true}); err != nil {
		return fail(err)
	}
	man := &Manifest{Version: ManifestVersion, ID: m.ID, Epoch: lease.Epoch(), Holder: s.Leases.Self(),
		Size: m.ImageSize, ChunkSize: ChunkSize, BlockSize: nbdBlock,
		Bitmap: make([]byte, bitmapLen(m.ImageSize, nbdBlock))}
	data, err := encodeManifest(man)
	if err != nil {
		return fail(err)
	}
	etag, err := s.B.Put(ctx, key+"/"+ManifestObject, data, objstore.Cond{IfNoneMatch: true})
	if err != nil {
		return fail(err)
	}
	r := &Remote{s: s, key: key, id: m.ID, Lease: lease, man: man, etag: etag, chunks: map[int64]ChunkRef{}}
	return &Overlay{Meta: m, Dir: s.where(key), Remote: r}, nil
}

// nbdBlock is the bitmap's unit: the block size of nbdserver's copy-on-write engine.
const nbdBlock = 4096

// Open opens and holds overlay id of client c on export.
func (s *Objects) Open(export string, c Client, id nbd.OverlayID) (*Overlay, error) {
	ctx, cancel := ctxStore()
	defer cancel()
	key := s.overlayKey(export, c, id)
	if _, err := s.B.Head(ctx, key+"/"+ManifestObject); errors.Is(err, objstore.ErrNotFound) {
		return nil, ErrGone
	} else if err != nil {
		return nil, err
	}
	m, err := s.readMeta(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, ErrGone
	}
	if err != nil {
		return nil, err
	}
	if m.ID != id || m.Export != export || m.Client != c {
		return nil, fmt.Errorf("%s: %s describes overlay %s of client %s on export %q, not the one its key names",
			s.where(key), MetaFile, m.ID, m.Client, m.Export)
	}
	lease, err := s.Leases.Acquire(ctx, s.B, key+"/"+LeaseObject, c.String())
	if err != nil {
		return nil, storeErr(err)
	}
	// Fence: rewrite the manifest with our epoch before serving anything, so that a
	// commit of a server we took over from fails from now on. A commit of that server
	// that landed after our read makes our write fail: read again.
	for try := 0; ; try++ {
		man, etag, err := s.readManifest(ctx, key)
		if errors.Is(err, objstore.ErrNotFound) {
			lease.Release(ctx)
			return nil, ErrGone // removed meanwhile
		}
		if err != nil {
			lease.Release(ctx)
			return nil, err
		}
		if man.ID != id {
			lease.Release(ctx)
			return nil, fmt.Errorf("%s: manifest of overlay %s", s.where(key), man.ID)
		}
		next := *man
		next.Epoch, next.Holder = lease.Epoch(), s.Leases.Self()
		next.Commit++
		data, err := encodeManifest(&next)
		if err != nil {
			lease.Release(ctx)
			return nil, err
		}
		newTag, err := s.B.Put(ctx, key+"/"+ManifestObject, data, objstore.Cond{IfMatch: etag})
		if errors.Is(err, objstore.ErrPrecondition) && try < 5 {
			continue
		}
		if err != nil {
			lease.Release(ctx)
			return nil, err
		}
		chunks := make(map[int64]ChunkRef, len(next.Chunks))
		for _, c := range next.Chunks {
			chunks[c.Index] = c
		}
		r := &Remote{s: s, key: key, id: id, Lease: lease, man: &next, etag: newTag, chunks: chunks}
		go s.collectGarbage(r)
		return &Overlay{Meta: m, Dir: s.where(key), Remote: r}, nil
	}
}

// collectGarbage deletes the packs of r that its manifest does not name and that earlier
// holders wrote (uploads whose commit never came, packs whose deletion a crash
// interrupted). Packs of the current epoch are left alone: they may be uploads of ours
// that the next commit names.
func (s *Objects) collectGarbage(r *Remote) {
	ctx, cancel := ctxStore()
	defer cancel()
	epoch := r.Lease.Epoch()
	live := map[pack]bool{}
	r.mu.Lock()
	for _, c := range r.chunks {
		live[c.pack()] = true
	}
	r.mu.Unlock()
	var dead []string
	err := s.B.List(ctx, s.chunkPrefix(r.id), func(o objstore.Object) error {
		p, ok := parsePackKey(strings.TrimPrefix(o.Key, s.chunkPrefix(r.id)))
		if !ok || p.epoch >= epoch || live[p] {
			return nil
		}
		dead = append(dead, o.Key)
		return nil
	})
	for _, k := range dead {
		if r.Lease.Check() != nil {
			return
		}
		s.B.Delete(ctx, k, "")
	}
	if err != nil && s.Logf != nil {
		s.Logf("overlay %s: listing its chunks for garbage: %v", r.id, err)
	}
}

// Exists reports whether the overlay's manifest exists.
func (s *Objects) Exists(export string, c Client, id nbd.OverlayID) bool {
	ctx, cancel := ctxStore()
	defer cancel()
	_, err := s.B.Head(ctx, s.overlayKey(export, c, id)+"/"+ManifestObject)
	return err == nil
}

// Find returns the overlays of client c on export, newest first.
func (s *Objects) Find(export string, c Client) ([]Meta, error) {
	ctx, cancel := ctxStore()
	defer cancel()
	var keys []string
	prefix := s.clientKey(export, c) + "/"
	err := s.B.List(ctx, prefix, func(o objstore.Object) error {
		if k, ok := strings.CutSuffix(o.Key, "/"+ManifestObject); ok && !strings.Contains(strings.TrimPrefix(k, prefix), "/") {
			keys = append(keys, k)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, k := range keys {
		m, err := s.readMeta(ctx, k)
		if errors.Is(err, objstore.ErrNotFound) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// List returns every overlay under the prefix.
func (s *Objects) List() ([]Info, error) {
	ctx, cancel := ctxStore()
	defer cancel()
	keys, err := s.overlayKeys(ctx)
	var out []Info
	for _, k := range keys {
		out = append(out, s.info(ctx, k, true))
	}
	return out, err
}

// overlayKeys lists the key prefixes of every overlay (every manifest).
func (s *Objects) overlayKeys(ctx context.Context) ([]string, error) {
	var keys []string
	var errs []error
	for _, sub := range []string{"/overlays/", "/writes/"} {
		err := s.B.List(ctx, s.Prefix+sub, func(o objstore.Object) error {
			if k, ok := strings.CutSuffix(o.Key, "/"+ManifestObject); ok {
				keys = append(keys, k)
			}
			return nil
		})
		errs = append(errs, err)
	}
	return keys, errors.Join(errs...)
}

// info describes the overlay at key; the size (from its manifest, the largest object) only
// when asked for.
func (s *Objects) info(ctx context.Context, key string, size bool) Info {
	in := Info{Dir: s.where(key)}
	m, err := s.readMeta(ctx, key)
	in.Meta = m
	if err != nil {
		in.Err = err.Error()
		if id, perr := nbd.ParseOverlayID(key[strings.LastIndex(key, "/")+1:]); perr == nil {
			in.ID = id
		}
	}
	if size {
		if man, _, err := s.readManifest(ctx, key); err == nil {
			in.Allocated = int64(len(man.Chunks)) * man.ChunkSize
		}
	}
	if rec, _, err := objstore.ReadLease(ctx, s.B, key+"/"+LeaseObject); err == nil {
		in.LastUsed = rec.Renewed
		// For people only: a holder renews every TTL/6, so one not seen for a TTL is gone.
		in.Attached = rec.Holder != "" && time.Since(rec.Renewed) < time.Duration(rec.TTL)*time.Millisecond
	}
	return in
}

// keyOf turns a location back into an overlay's key prefix.
func (s *Objects) keyOf(where string) (string, error) {
	u, err := objstore.ParseURL(where, false)
	if err != nil || u.Bucket != s.B.Name() || !strings.HasPrefix(u.Key, s.Prefix+"/") {
		return "", fmt.Errorf("%s is not an overlay in %s", where, s.Location())
	}
	return u.Key, nil
}

// Remove deletes the overlay at where: the manifest first, then its chunks, meta.json and
// lease. It takes the lease for that, so it fails with ErrBusy while a server holds it.
func (s *Objects) Remove(where string) error {
	key, err := s.keyOf(where)
	if err != nil {
		return err
	}
	ctx, cancel := ctxStore()
	defer cancel()
	if _, err := s.B.Head(ctx, key+"/"+ManifestObject); errors.Is(err, objstore.ErrNotFound) {
		return ErrGone
	}
	lease, err := s.Leases.Acquire(ctx, s.B, key+"/"+LeaseObject, "")
	if err != nil {
		return storeErr(err)
	}
	defer lease.Release(ctx)
	id, err := nbd.ParseOverlayID(key[strings.LastIndex(key, "/")+1:])
	if err != nil {
		return err
	}
	if err := s.B.Delete(ctx, key+"/"+ManifestObject, ""); err != nil {
		return err
	}
	var chunks []string
	if err := s.B.List(ctx, s.chunkPrefix(id), func(o objstore.Object) error {
		chunks = append(chunks, o.Key)
		return nil
	}); err != nil {
		return err
	}
	for _, k := range chunks {
		if err := s.B.Delete(ctx, k, ""); err != nil {
			return err
		}
	}
	if err := s.B.Delete(ctx, key+"/"+MetaFile, ""); err != nil {
		return err
	}
	// The lease object goes last; the released lease is rewritten by the deferred
	// Release, so delete it after that.
	lease.Release(ctx)
	return s.B.Delete(ctx, key+"/"+LeaseObject, "")
}

// Reap removes the temporary overlays nobody holds whose lease was last renewed or
// released more than grace before now (a time before notBefore counts as notBefore).
func (s *Objects) Reap(now, notBefore time.Time, grace time.Duration) ([]Meta, error) {
	ctx, cancel := ctxStore()
	defer cancel()
	keys, err := s.overlayKeys(ctx)
	var removed []Meta
	errs := []error{err}
	for _, k := range keys {
		in := s.info(ctx, k, false)
		if in.Err != "" || in.Kind != Temporary || in.Attached {
			continue
		}
		last := in.LastUsed
		if last.Before(notBefore) {
			last = notBefore
		}
		if now.Sub(last) < grace {
			continue
		}
		switch err := s.Remove(in.Dir); {
		case err == nil:
			removed = append(removed, in.Meta)
		case errors.Is(err, ErrBusy), errors.Is(err, ErrGone):
		default:
			errs = append(errs, fmt.Errorf("reaping %s: %w", in.Dir, err))
		}
	}
	return removed, errors.Join(errs...)
}
