package nbdserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/nbdroot/nbdroot/nbd"
)

// A copy-on-write export gives each client (by identity) an overlay: a sparse file the size
// of the image, plus a bitmap saying which 4 KiB blocks live in the overlay. Reads take each
// block from the overlay or the image; writes go to the overlay only, after copying up the
// image's contents of partially written blocks. The image is opened read-only, so no bug
// here can reach it.
//
// Correctness under concurrency (nbd-server's cow lost writes this way, nbd#43): a block's
// bit is set only after its overlay contents are complete, so a read racing a write sees
// either the old or the new block; writers of the same block serialise on a striped lock,
// so a copy-up never overwrites a newer write. FLUSH fdatasyncs the overlay before it
// persists the bitmap, and persists only bits set before that fdatasync began, so a
// persistent bitmap never points at data that was not yet stable.

const (
	cowBlockShift = 12
	cowBlock      = 1 << cowBlockShift
	cowStripes    = 256
	cowMagic      = "NBDRCOW1"
	cowHeaderSize = 32 // magic, version u32, block size u32, image size u64, reserved u64
)

type overlay struct {
	base    *fileBackend
	f       *os.File
	fd      int
	size    int64
	nblocks int64
	bits    []atomic.Uint64
	stripes [cowStripes]sync.Mutex

	// Persistent overlays keep their bitmap in mapFile, updated on every FLUSH; persisted
	// is what the file holds (guarded by flushMu).
	mapFile   *os.File
	persisted []uint64
	flushMu   sync.Mutex
	name      string // for logs: the overlay file, or "temporary"

	// Guarded by Server.mu.
	client string
	refs   int

	noPunch atomic.Bool
}

var (
	_ Backend      = (*overlay)(nil)
	_ nowaitReader = (*overlay)(nil)
)

func (o *overlay) describe() string { return o.name }

// overlayLocked returns the client's overlay of export e, creating or opening it.
func (s *Server) overlayLocked(e *export, c client) (*overlay, error) {
	if ov := e.cows[c.id]; ov != nil {
		ov.refs++
		return ov, nil
	}
	ov, err := newOverlay(e.img.fb, &e.cfg, c.id)
	if err != nil {
		return nil, fmt.Errorf("copy-on-write overlay for %s: %w", c.id, err)
	}
	if e.cows == nil {
		e.cows = map[string]*overlay{}
	}
	ov.refs = 1
	e.cows[c.id] = ov
	return ov, nil
}

// releaseOverlayLocked drops a session's reference; the last one closes the overlay (a
// temporary overlay's data is gone then, a persistent one is flushed first).
func (s *Server) releaseOverlayLocked(e *export, ov *overlay) {
	ov.refs--
	if ov.refs > 0 {
		return
	}
	delete(e.cows, ov.client)
	if err := ov.Close(); err != nil {
		s.log.Printf("export %q: closing overlay of %s: %v", e.cfg.Name, ov.client, err)
	}
}

// overlayPaths names a client's persistent overlay files; both parts are escaped so export
// names and IPv6 addresses make safe file names.
func overlayPaths(dir, export, client string) (data, bitmap string) {
	base := url.PathEscape(export) + "@" + url.PathEscape(client)
	return filepath.Join(dir, base+".cow"), filepath.Join(dir, base+".map")
}

func newOverlay(base *fileBackend, cfg *Export, clientID string) (*overlay, error) {
	size := base.size
	o := &overlay{base: base, size: size, nblocks: (size + cowBlock - 1) / cowBlock, client: clientID}
	o.bits = make([]atomic.Uint64, (o.nblocks+63)/64)
	if !cfg.CowPersistent {
		dir := cfg.CowDir
		if dir == "" {
			dir = os.TempDir()
		}
		f, err := os.CreateTemp(dir, "nbdroot-cow-*")
		if err != nil {
			return nil, err
		}
		// Unlinked at once: a crash leaves nothing behind.
		os.Remove(f.Name())
		if err := f.Truncate(size); err != nil {
			f.Close()
			return nil, err
		}
		o.f, o.fd, o.name = f, int(f.Fd()), "temporary overlay"
		return o, nil
	}
	if err := os.MkdirAll(cfg.CowDir, 0o700); err != nil {
		return nil, err
	}
	dataPath, mapPath := overlayPaths(cfg.CowDir, cfg.Name, clientID)
	mf, err := os.OpenFile(mapPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := lockFile(int(mf.Fd()), true); err != nil {
		mf.Close()
		return nil, fmt.Errorf("%s: %w", mapPath, err)
	}
	df, err := os.OpenFile(dataPath, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		mf.Close()
		return nil, err
	}
	o.f, o.fd, o.mapFile, o.name = df, int(df.Fd()), mf, dataPath
	if err := o.loadBitmap(); err != nil {
		o.Close()
		return nil, fmt.Errorf("%s: %w", mapPath, err)
	}
	if err := df.Truncate(size); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

// loadBitmap reads a persistent bitmap, or writes a fresh one for a new overlay.
func (o *overlay) loadBitmap() error {
	st, err := o.mapFile.Stat()
	if err != nil {
		return err
	}
	words := len(o.bits)
	if st.Size() == 0 {
		return o.writeBitmap(make([]uint64, words))
	}
	want := int64(cowHeaderSize + 8*words)
	if st.Size() != want {
		return fmt.Errorf("bitmap is %d bytes, want %d (image size changed? remove the overlay)", st.Size(), want)
	}
	buf := make([]byte, want)
	if _, err := o.mapFile.ReadAt(buf, 0); err != nil {
		return err
	}
	le := binary.LittleEndian
	if string(buf[:8]) != cowMagic || le.Uint32(buf[8:]) != 1 || le.Uint32(buf[12:]) != cowBlock {
		return errors.New("not an nbdroot overlay bitmap")
	}
	if int64(le.Uint64(buf[16:])) != o.size {
		return fmt.Errorf("overlay made for an image of %d bytes, this one has %d (remove the overlay)", le.Uint64(buf[16:]), o.size)
	}
	o.persisted = make([]uint64, words)
	for i := range o.bits {
		o.bits[i].Store(le.Uint64(buf[cowHeaderSize+8*i:]))
		o.persisted[i] = o.bits[i].Load()
	}
	return nil
}

// writeBitmap persists words: the whole file the first time (persisted == nil), afterwards
// only the 4 KiB pieces that changed since the last time, so a FLUSH costs in proportion to
// what was written rather than to the image size.
func (o *overlay) writeBitmap(words []uint64) error {
	le := binary.LittleEndian
	if o.persisted == nil {
		buf := make([]byte, cowHeaderSize+8*len(words))
		copy(buf, cowMagic)
		le.PutUint32(buf[8:], 1)
		le.PutUint32(buf[12:], cowBlock)
		le.PutUint64(buf[16:], uint64(o.size))
		for i, w := range words {
			le.PutUint64(buf[cowHeaderSize+8*i:], w)
		}
		if _, err := o.mapFile.WriteAt(buf, 0); err != nil {
			return err
		}
	} else {
		const chunk = 512 // words per 4 KiB piece
		var buf [8 * chunk]byte
		for i := 0; i < len(words); i += chunk {
			j := min(i+chunk, len(words))
			if slices.Equal(words[i:j], o.persisted[i:j]) {
				continue
			}
			for k, w := range words[i:j] {
				le.PutUint64(buf[8*k:], w)
			}
			if _, err := o.mapFile.WriteAt(buf[:8*(j-i)], int64(cowHeaderSize+8*i)); err != nil {
				return err
			}
		}
	}
	if err := fdatasync(int(o.mapFile.Fd())); err != nil {
		return err
	}
	o.persisted = words
	return nil
}

func (o *overlay) has(b int64) bool { return o.bits[b>>6].Load()&(1<<(b&63)) != 0 }

func (o *overlay) set(first, last int64) {
	for b := first; b <= last; {
		w := b >> 6
		lo := b & 63
		hi := min(63, last-(w<<6))
		mask := ^uint64(0) >> (63 - (hi - lo)) << lo
		o.bits[w].Or(mask)
		b = (w + 1) << 6
	}
}

// runs calls fn for the maximal runs of blocks in [off, off+n) that are all in the overlay
// or all in the image, with byte ranges clipped to the request.
func (o *overlay) runs(off, n int64, fn func(off, n int64, inOverlay bool) error) error {
	end := off + n
	for off < end {
		b := off >> cowBlockShift
		in := o.has(b)
		// Extend the run block by block; whole words at a time when they agree.
		nb := b + 1
		for nb<<cowBlockShift < end {
			if nb&63 == 0 {
				w := o.bits[nb>>6].Load()
				if in && w == ^uint64(0) || !in && w == 0 {
					nb += 64
					continue
				}
			}
			if o.has(nb) != in {
				break
			}
			nb++
		}
		runEnd := min(nb<<cowBlockShift, end)
		if err := fn(off, runEnd-off, in); err != nil {
			return err
		}
		off = runEnd
	}
	return nil
}

func (o *overlay) Size() int64 { return o.size }

func (o *overlay) ReadAt(p []byte, off int64) error {
	return o.runs(off, int64(len(p)), func(roff, rn int64, in bool) error {
		q := p[roff-off : roff-off+rn]
		if !in {
			return o.base.ReadAt(q, roff)
		}
		for len(q) > 0 {
			n, err := pread(o.fd, q, roff)
			if err != nil {
				return &BackendError{"read overlay", roff, int64(len(q)), err}
			}
			if n == 0 {
				clear(q)
				return nil
			}
			q, roff = q[n:], roff+int64(n)
		}
		return nil
	})
}

var errMiss = errors.New("not cached")

func (o *overlay) ReadAtNoWait(p []byte, off int64) (bool, error) {
	err := o.runs(off, int64(len(p)), func(roff, rn int64, in bool) error {
		q := p[roff-off : roff-off+rn]
		if !in {
			ok, err := o.base.ReadAtNoWait(q, roff)
			if err == nil && !ok {
				return errMiss
			}
			return err
		}
		n, err := preadNoWait(o.fd, q, roff)
		if err != nil || n < len(q) {
			return errMiss
		}
		return nil
	})
	if errors.Is(err, errMiss) {
		return false, nil
	}
	return err == nil, err
}

// lockRange takes the stripe locks of the blocks a change touches, in stripe order so
// concurrent writers cannot deadlock; it returns the unlock function.
func (o *overlay) lockRange(off, n int64) func() {
	first, last := off>>cowBlockShift, (off+n-1)>>cowBlockShift
	var mask [cowStripes / 64]uint64
	if last-first+1 >= cowStripes {
		for i := range mask {
			mask[i] = ^uint64(0)
		}
	} else {
		for b := first; b <= last; b++ {
			s := b % cowStripes
			mask[s/64] |= 1 << (s % 64)
		}
	}
	for i, m := range mask {
		for m != 0 {
			j := bits.TrailingZeros64(m)
			o.stripes[i*64+j].Lock()
			m &^= 1 << j
		}
	}
	return func() {
		for i, m := range mask {
			for m != 0 {
				j := bits.TrailingZeros64(m)
				o.stripes[i*64+j].Unlock()
				m &^= 1 << j
			}
		}
	}
}

// copyUp copies block b from the image into the overlay unless it is there already. The
// caller holds b's stripe lock.
func (o *overlay) copyUp(b int64) error {
	if o.has(b) {
		return nil
	}
	off := b << cowBlockShift
	n := min(int64(cowBlock), o.size-off)
	buf := getBuffer(int(n))
	defer buf.release()
	if err := o.base.ReadAt(buf.b, off); err != nil {
		return err
	}
	if err := o.pwriteAll(buf.b, off); err != nil {
		return err
	}
	o.set(b, b)
	return nil
}

func (o *overlay) pwriteAll(p []byte, off int64) error {
	for len(p) > 0 {
		n, err := pwrite(o.fd, p, off, false)
		if err != nil {
			return &BackendError{"write overlay", off, int64(len(p)), err}
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// copyUpEdges copies up the first and last block of a change if it covers them only in
// part; blocks covered whole need no copy.
func (o *overlay) copyUpEdges(off, n int64) error {
	end := off + n
	first, last := off>>cowBlockShift, (end-1)>>cowBlockShift
	if off&(cowBlock-1) != 0 || (first == last && end < min((first+1)<<cowBlockShift, o.size)) {
		if err := o.copyUp(first); err != nil {
			return err
		}
	}
	if last != first && end&(cowBlock-1) != 0 && end < o.size {
		if err := o.copyUp(last); err != nil {
			return err
		}
	}
	return nil
}

func (o *overlay) WriteAt(p []byte, off int64, fua bool) error {
	if len(p) == 0 {
		return nil
	}
	n := int64(len(p))
	unlock := o.lockRange(off, n)
	err := o.copyUpEdges(off, n)
	if err == nil {
		err = o.pwriteAll(p, off)
	}
	if err == nil {
		o.set(off>>cowBlockShift, (off+n-1)>>cowBlockShift)
	}
	unlock()
	if err == nil && fua {
		err = o.Flush()
	}
	return err
}

// Flush makes the overlay durable: data first, then the bitmap bits set before the data
// sync began (see the comment at the top of this file).
func (o *overlay) Flush() error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	var snap []uint64
	if o.mapFile != nil {
		snap = make([]uint64, len(o.bits))
		for i := range o.bits {
			snap[i] = o.bits[i].Load()
		}
	}
	if err := fdatasync(o.fd); err != nil {
		return &BackendError{"flush overlay", 0, o.size, err}
	}
	if o.mapFile != nil {
		if err := o.writeBitmap(snap); err != nil {
			return &BackendError{"flush overlay bitmap", 0, o.size, err}
		}
	}
	return nil
}

// zeroRange makes [off, off+n) of the overlay read as zeroes and marks it present.
func (o *overlay) zero(off, n int64, fast bool) error {
	unlock := o.lockRange(off, n)
	defer unlock()
	if err := o.copyUpEdges(off, n); err != nil {
		return err
	}
	done := false
	if !o.noPunch.Load() {
		switch err := punchHole(o.fd, off, n); {
		case err == nil:
			done = true
		case errors.Is(err, errUnsupported):
			o.noPunch.Store(true)
		default:
			return &BackendError{"zero overlay", off, n, err}
		}
	}
	if !done {
		if fast {
			return ErrNotFast
		}
		if err := writeZeroes(o.fd, off, n); err != nil {
			return &BackendError{"zero overlay", off, n, err}
		}
	}
	o.set(off>>cowBlockShift, (off+n-1)>>cowBlockShift)
	return nil
}

func (o *overlay) Trim(off, length int64, fua bool) error {
	// TRIM leaves contents unspecified (proto.md), so zeroing is a valid way to honour it
	// and it gives the overlay's space back.
	if length == 0 {
		return nil
	}
	if err := o.zero(off, length, false); err != nil {
		return err
	}
	if fua {
		return o.Flush()
	}
	return nil
}

func (o *overlay) Zero(off, length int64, noHole, fast, fua bool) error {
	if length == 0 {
		return nil
	}
	if err := o.zero(off, length, fast); err != nil {
		return err
	}
	if fua {
		return o.Flush()
	}
	return nil
}

func (o *overlay) Extents(off, length int64, fn func(int64, uint32) bool) error {
	stop := errors.New("stop")
	err := o.runs(off, length, func(roff, rn int64, in bool) error {
		if !in {
			cont := true
			if err := o.base.Extents(roff, rn, func(n int64, f uint32) bool {
				cont = fn(n, f)
				return cont
			}); err != nil {
				return err
			}
			if !cont {
				return stop
			}
			return nil
		}
		// Overlay blocks are allocated unless zeroed by a punched hole.
		end := roff + rn
		for roff < end {
			data, err := seekData(o.fd, roff)
			if err != nil {
				if !fn(end-roff, 0) {
					return stop
				}
				return nil
			}
			if data < 0 || data >= end {
				if !fn(end-roff, nbd.StateHole|nbd.StateZero) {
					return stop
				}
				return nil
			}
			if data > roff {
				if !fn(data-roff, nbd.StateHole|nbd.StateZero) {
					return stop
				}
				roff = data
			}
			hole, err := seekHole(o.fd, roff)
			if err != nil || hole > end || hole <= roff {
				hole = end
			}
			if !fn(hole-roff, 0) {
				return stop
			}
			roff = hole
		}
		return nil
	})
	if errors.Is(err, stop) {
		return nil
	}
	return err
}

func (o *overlay) Cache(off, length int64) error { return o.base.Cache(off, length) }

// Close flushes a persistent overlay and closes its files; a temporary overlay just goes.
func (o *overlay) Close() error {
	var err error
	if o.mapFile != nil {
		err = o.Flush()
		if cerr := o.mapFile.Close(); err == nil {
			err = cerr
		}
	}
	if cerr := o.f.Close(); err == nil {
		err = cerr
	}
	return err
}
