package nbdserver

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// storeMedium keeps an overlay in an object store (package overlay's Remote: packs of chunks
// and a manifest, under the overlay's lease). Chunks are staged in a local file the size of
// the image, deleted when the overlay closes: a chunk the store has is fetched into it the
// first time a read or a write touches it; every change marks its chunk dirty; FLUSH
// uploads the dirty chunks (in new pack objects) and then commits the manifest with the
// bitmap — the engine's order, data before bitmap, is the store's order, chunks before
// manifest.
//
// Dirty marks are taken off a chunk before its upload reads the staging file, and a change
// marks its chunk after it wrote the file, so a change racing an upload is either in the
// upload or leaves the chunk dirty for the next FLUSH — never neither.
//
// Writes are acknowledged only while the lease is valid (objstore.Lease.Check); a FLUSH
// that cannot reach the store keeps trying while the lease lasts (a short outage costs
// the client a slow FLUSH, not an error). A lost lease or a fenced manifest poisons the
// overlay: this server was replaced and must not acknowledge anything more.
type storeMedium struct {
	r       *ovstore.Remote
	f       *os.File
	fd      int
	size    int64
	chunk   int64
	nchunks int64
	local   []atomic.Uint64 // chunk staged (fetched, or only ever written here)
	dirty   []atomic.Uint64 // chunk changed since its last upload

	fmu      sync.Mutex
	fetching map[int64]*chunkFetch

	pending   map[int64]ovstore.ChunkRef // uploaded, not yet committed (the engine's flushMu)
	committed []uint64                   // the bitmap of the last commit (the engine's flushMu)

	logf     func(string, ...any)
	desc     string
	lostOnce sync.Once
	done     chan struct{} // closed by close: ends watch
}

type chunkFetch struct {
	done chan struct{}
	err  error
}

// storeUploads bounds the pack uploads of one FLUSH in flight.
const storeUploads = 4

// attachStoreOverlay stages the store overlay h over base in a new file in dir.
func attachStoreOverlay(base cowBase, h *ovstore.Overlay, dir string, logf func(string, ...any)) (*overlay, error) {
	size := base.Size()
	if err := checkOverlaySize(h, size); err != nil {
		return nil, err
	}
	man := h.Remote.Manifest()
	if man.Size != size || man.BlockSize != cowBlock || man.ChunkSize != ovstore.ChunkSize {
		return nil, fmt.Errorf("overlay %s: manifest for %d bytes in %d-byte blocks and %d-byte chunks; this server has an image of %d bytes, %d-byte blocks and %d-byte chunks",
			h.ID, man.Size, man.BlockSize, man.ChunkSize, size, cowBlock, ovstore.ChunkSize)
	}
	f, err := os.CreateTemp(dir, "overlay-"+h.ID.String()+"-*")
	if err != nil {
		return nil, err
	}
	// Unlinked at once: the staging file lives as long as the descriptor, and no crash
	// leaves it behind.
	os.Remove(f.Name())
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, err
	}
	nchunks := (size + man.ChunkSize - 1) / man.ChunkSize
	m := &storeMedium{r: h.Remote, f: f, fd: int(f.Fd()), size: size, chunk: man.ChunkSize, nchunks: nchunks,
		local: make([]atomic.Uint64, (nchunks+63)/64), dirty: make([]atomic.Uint64, (nchunks+63)/64),
		fetching: map[int64]*chunkFetch{}, pending: map[int64]ovstore.ChunkRef{}, logf: logf, done: make(chan struct{}),
		desc: fmt.Sprintf("export %q: %s overlay %s of client %s", h.Export, h.Kind, h.ID, h.Client)}
	o, err := newOverlay(base, h, m, f, logf)
	if err != nil {
		f.Close()
		return nil, err
	}
	go m.watch()
	return o, nil
}

// watch logs the loss of the lease when it happens (a renewal found it taken over), not
// only when the next request fails.
func (m *storeMedium) watch() {
	select {
	case <-m.r.Lease.Lost():
		m.check(true)
	case <-m.done:
	}
}

func testBit(b []atomic.Uint64, i int64) bool { return b[i>>6].Load()&(1<<(i&63)) != 0 }
func setBit(b []atomic.Uint64, i int64)       { b[i>>6].Or(1 << (i & 63)) }

func (m *storeMedium) loadBitmap(words int) ([]uint64, error) {
	w := m.r.Manifest().BitmapWords()
	if len(w) != words {
		return nil, fmt.Errorf("manifest bitmap of %d words, want %d", len(w), words)
	}
	m.committed = slices.Clone(w)
	return w, nil
}

func (m *storeMedium) sparse() bool { return false }

// check fails once the lease is lost for good (reads too: this server no longer serves
// the overlay), and logs that once.
func (m *storeMedium) check(writing bool) error {
	err := m.r.Lease.Check()
	if err == nil || !writing && !errors.Is(err, objstore.ErrLeaseLost) {
		return nil
	}
	if errors.Is(err, objstore.ErrLeaseLost) {
		m.lostOnce.Do(func() {
			m.logf("%s: %v: another server serves it now; this one fails its requests with EIO", m.desc, err)
		})
	}
	return overlayIOError{err}
}

func (m *storeMedium) ready(off, n int64) bool {
	for c := off / m.chunk; c <= (off+n-1)/m.chunk; c++ {
		if !testBit(m.local, c) {
			if _, ok := m.r.Chunk(c); ok {
				return false
			}
		}
	}
	return true
}

func (m *storeMedium) prepare(off, n int64) error {
	if err := m.check(false); err != nil {
		return err
	}
	for c := off / m.chunk; c <= (off+n-1)/m.chunk; c++ {
		if testBit(m.local, c) {
			continue
		}
		ref, ok := m.r.Chunk(c)
		if !ok {
			// Never stored: the staging file's holes are its contents.
			setBit(m.local, c)
			continue
		}
		if err := m.fetch(c, ref); err != nil {
			return err
		}
	}
	return nil
}

// fetch stages chunk c; concurrent callers share one GET.
func (m *storeMedium) fetch(c int64, ref ovstore.ChunkRef) error {
	m.fmu.Lock()
	if testBit(m.local, c) {
		m.fmu.Unlock()
		return nil
	}
	if f := m.fetching[c]; f != nil {
		m.fmu.Unlock()
		<-f.done
		return f.err
	}
	f := &chunkFetch{done: make(chan struct{})}
	m.fetching[c] = f
	m.fmu.Unlock()

	off := c * m.chunk
	n := min(m.chunk, m.size-off)
	buf := getBuffer(int(n))
	ctx, cancel := context.WithTimeout(context.Background(), objstore.DefaultTimeout)
	err := m.r.ReadChunk(ctx, ref, buf.b)
	cancel()
	if err == nil {
		err = pwriteFull(m.fd, buf.b, off)
	}
	buf.release()
	if err == nil {
		setBit(m.local, c)
	} else {
		err = transientError{&BackendError{"fetch overlay chunk", off, n, err}}
	}
	m.fmu.Lock()
	delete(m.fetching, c)
	f.err = err
	close(f.done)
	m.fmu.Unlock()
	return err
}

func pwriteFull(fd int, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := pwrite(fd, p, off, false)
		if err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (m *storeMedium) wrote(off, n int64) error {
	for c := off / m.chunk; c <= (off+n-1)/m.chunk; c++ {
		setBit(m.local, c)
		setBit(m.dirty, c)
	}
	return m.check(true)
}

// retry runs op until it succeeds, fails for good, or the lease stops being valid: a
// store that does not answer for a moment delays a FLUSH instead of failing it.
func (m *storeMedium) retry(op func() error) error {
	wait := 100 * time.Millisecond
	for {
		err := op()
		if err == nil || m.fatal(err) {
			return err
		}
		if m.r.Lease.Check() != nil {
			return err
		}
		time.Sleep(wait)
		wait = min(2*wait, 2*time.Second)
	}
}

// fatal says whether err means this server was replaced.
func (m *storeMedium) fatal(err error) bool {
	return errors.Is(err, objstore.ErrLeaseLost) || errors.Is(err, ovstore.ErrFenced)
}

func (m *storeMedium) wrap(err error) error {
	if err == nil {
		return nil
	}
	if m.fatal(err) {
		m.check(true) // logs the loss
		return err
	}
	return transientError{err}
}

func (m *storeMedium) syncData() error {
	var chunks []int64
	for i := range m.dirty {
		w := m.dirty[i].Swap(0)
		for w != 0 {
			b := bits.TrailingZeros64(w)
			chunks = append(chunks, int64(i)*64+int64(b))
			w &^= 1 << b
		}
	}
	if len(chunks) == 0 {
		return nil
	}
	// One pack object per PackChunks dirty chunks, the packs uploaded in parallel.
	var packs [][]int64
	for len(chunks) > 0 {
		n := min(len(chunks), ovstore.PackChunks)
		packs, chunks = append(packs, chunks[:n]), chunks[n:]
	}
	var (
		mu    sync.Mutex
		first error
		wg    sync.WaitGroup
		next  atomic.Int64
	)
	for range min(storeUploads, len(packs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				k := next.Add(1) - 1
				if k >= int64(len(packs)) {
					return
				}
				p := packs[k]
				if err := m.retry(func() error { return m.upload(p, &mu) }); err != nil {
					for _, c := range p {
						setBit(m.dirty, c) // still to be uploaded
					}
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return m.wrap(first)
}

// upload stores chunks from the staging file as one pack, pending until the next commit.
func (m *storeMedium) upload(chunks []int64, mu *sync.Mutex) error {
	buf := make([]byte, int64(len(chunks))*m.chunk)
	for k, c := range chunks {
		off := c * m.chunk
		p := buf[int64(k)*m.chunk:][:min(m.chunk, m.size-off)]
		for got := 0; got < len(p); {
			n, err := pread(m.fd, p[got:], off+int64(got))
			if err != nil {
				return &BackendError{"read staged chunk", off, int64(len(p)), err}
			}
			if n == 0 {
				break // past the end of the staging file: zeroes (buf is fresh)
			}
			got += n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), objstore.DefaultTimeout)
	defer cancel()
	refs, err := m.r.PutChunks(ctx, chunks, buf)
	if err != nil {
		return err
	}
	mu.Lock()
	for _, r := range refs {
		m.pending[r.Index] = r
	}
	mu.Unlock()
	return nil
}

func (m *storeMedium) persistBitmap(words []uint64) error {
	if len(m.pending) == 0 && slices.Equal(words, m.committed) {
		// Nothing new since the last commit: a FLUSH with nothing to flush costs no
		// request (file systems flush often).
		if err := m.r.Lease.Check(); err != nil {
			return m.wrap(err)
		}
		return nil
	}
	refs := make([]ovstore.ChunkRef, 0, len(m.pending))
	for _, r := range m.pending {
		refs = append(refs, r)
	}
	err := m.retry(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), objstore.DefaultTimeout)
		defer cancel()
		return m.r.Commit(ctx, words, refs)
	})
	if err != nil {
		return m.wrap(err)
	}
	clear(m.pending)
	copy(m.committed, words)
	return nil
}

func (m *storeMedium) close() error {
	close(m.done)
	return m.f.Close()
}

// allocated is what the overlay takes in the store: its committed chunks.
func (m *storeMedium) allocated() int64 {
	man := m.r.Manifest()
	return int64(len(man.Chunks)) * man.ChunkSize
}
