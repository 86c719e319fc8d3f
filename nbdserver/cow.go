package nbdserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// A copy-on-write export gives each client (by identity) an overlay: a sparse file the size
// of the image, plus a bitmap saying which 4 KiB blocks live in the overlay. Reads take each
// block from the overlay or the image; writes go to the overlay only, after copying up the
// image's contents of partially written blocks. The image is opened read-only, so no bug
// here can reach it. Where overlays live, their IDs and their locks belong to package
// overlay; this file is the block engine, the same for every overlay, over a medium that
// keeps its data and bitmap: two files in the overlay's directory (localMedium), or chunk
// objects and a manifest in an object store, staged in a local file (storeMedium,
// s3overlay.go).
//
// Correctness under concurrency (nbd-server's cow lost writes this way, nbd#43): a block's
// bit is set only after its overlay contents are complete, so a read racing a write sees
// either the old or the new block; writers of the same block serialise on a striped lock,
// so a copy-up never overwrites a newer write.
//
// Durability, the same for temporary, persistent and store overlays: FLUSH makes the data
// durable (fdatasync; uploads of the changed chunks) before it persists the bitmap (the
// bitmap file; the manifest), and persists only bits set before the data sync began, so
// the persisted bitmap never points at data that was not yet durable, and every write
// acknowledged before a FLUSH (or with FUA) is found again after a crash. The medium learns
// of every change of the data file before the change's bits are set (wrote), which is what
// lets a store medium know which chunks to upload. The bitmap grows only (bits are never
// cleared), so a bitmap write torn by a crash holds old bits and some new ones, all of
// which point at synced data. A failed local sync poisons the overlay (every later write
// and FLUSH fails): after fsync reports an error the page cache may have dropped
// acknowledged data, and a later successful sync would hide that. A store that does not
// answer is not such a failure (the staged data is intact, the next FLUSH retries); a lost
// lease is.

const (
	cowBlockShift = 12
	cowBlock      = 1 << cowBlockShift
	cowStripes    = 256
	cowMagic      = "NBDRCOW1"
	cowHeaderSize = 32 // magic, version u32, block size u32, image size u64, reserved u64
)

// cowBase is what an overlay lies over: an image file, or an image object read through
// the block cache.
type cowBase interface {
	Backend
	nowaitReader
}

// overlayMedium keeps an overlay's data and bitmap. The engine reads and writes the data
// through a local file (f/fd of the overlay) and tells the medium around that.
type overlayMedium interface {
	// loadBitmap returns the persisted bitmap, words long (zero for a new overlay).
	loadBitmap(words int) ([]uint64, error)
	// prepare makes [off, off+n) of the data file current before the engine reads or
	// writes overlay blocks there (a store medium fetches chunks not staged yet).
	prepare(off, n int64) error
	// ready reports, without waiting, whether prepare(off, n) has nothing to do.
	ready(off, n int64) bool
	// wrote is told of every change to the data file, after it and before the change's
	// bits are set; an error fails the change (a lost lease).
	wrote(off, n int64) error
	// syncData makes every change the medium was told of durable.
	syncData() error
	// persistBitmap makes words the persisted bitmap; it may keep a copy, not words.
	persistBitmap(words []uint64) error
	// sparse says whether holes of the data file are holes of the overlay (SEEK_DATA).
	sparse() bool
	// close releases the medium's files.
	close() error
}

type overlay struct {
	base    cowBase
	m       overlayMedium
	f       *os.File // the data file (a store medium's staging file)
	fd      int
	size    int64
	nblocks int64
	bits    []atomic.Uint64
	stripes [cowStripes]sync.Mutex

	// snap is the buffer each FLUSH takes its bitmap snapshot in (guarded by flushMu).
	snap    []uint64
	flushMu sync.Mutex

	h    *ovstore.Overlay // the overlay: ID, export, client, kind, location, lock or lease
	logf func(format string, args ...any)

	broken   atomic.Bool  // a sync failed: refuse further writes (see the top of this file)
	fullAt   atomic.Int64 // when "no space" was last logged (unix ns), to log it once in a while
	fullErrs atomic.Uint64

	// Guarded by overlaySet.mu.
	refs   int
	closed chan struct{} // closed once the last session released the overlay and it is closed

	noPunch atomic.Bool
}

var (
	_ Backend      = (*overlay)(nil)
	_ nowaitReader = (*overlay)(nil)
)

// describe names the overlay for logs: "temporary overlay 3f2a…".
func (o *overlay) describe() string { return fmt.Sprintf("%s overlay %s", o.h.Kind, o.h.ID) }

// initOverlayFiles creates an overlay's data file (sparse, size bytes) and an empty bitmap
// in dir, both synced; attachOverlay writes the bitmap's header and bits on first open.
func initOverlayFiles(dir string, size int64) error {
	df, err := os.OpenFile(filepath.Join(dir, ovstore.DataFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = df.Truncate(size)
	if err == nil {
		err = df.Sync()
	}
	if cerr := df.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	mf, err := os.OpenFile(filepath.Join(dir, ovstore.BitmapFile), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = mf.Sync()
	if cerr := mf.Close(); err == nil {
		err = cerr
	}
	return err
}

// attachOverlay opens the files of a local overlay held as h over the image base. On
// error h is left to the caller.
func attachOverlay(base cowBase, h *ovstore.Overlay, logf func(string, ...any)) (*overlay, error) {
	size := base.Size()
	if err := checkOverlaySize(h, size); err != nil {
		return nil, err
	}
	df, err := os.OpenFile(h.Path(ovstore.DataFile), os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	mf, err := os.OpenFile(h.Path(ovstore.BitmapFile), os.O_RDWR, 0)
	if err != nil {
		df.Close()
		return nil, err
	}
	fail := func(err error) (*overlay, error) {
		df.Close()
		mf.Close()
		return nil, err
	}
	if st, err := df.Stat(); err != nil {
		return fail(err)
	} else if st.Size() != size {
		// Only an overlay adopted from an older nbdroot, or one whose image grew, gets here.
		if err := df.Truncate(size); err != nil {
			return fail(err)
		}
	}
	m := &localMedium{data: df, mapFile: mf, size: size}
	o, err := newOverlay(base, h, m, df, logf)
	if err != nil {
		return fail(fmt.Errorf("%s: %w", h.Path(ovstore.BitmapFile), err))
	}
	return o, nil
}

func checkOverlaySize(h *ovstore.Overlay, size int64) error {
	if h.ImageSize != size {
		return fmt.Errorf("overlay %s was made for an image of %d bytes, %s has %d: remove the overlay (nbdroot overlays rm %s)",
			h.ID, h.ImageSize, h.Image, size, h.ID)
	}
	return nil
}

// newOverlay is the engine for overlay h over base, its data in f, kept by m.
func newOverlay(base cowBase, h *ovstore.Overlay, m overlayMedium, f *os.File, logf func(string, ...any)) (*overlay, error) {
	size := base.Size()
	o := &overlay{base: base, m: m, f: f, fd: int(f.Fd()), size: size, nblocks: (size + cowBlock - 1) / cowBlock,
		h: h, logf: logf, closed: make(chan struct{})}
	o.bits = make([]atomic.Uint64, (o.nblocks+63)/64)
	words, err := m.loadBitmap(len(o.bits))
	if err != nil {
		return nil, err
	}
	for i, w := range words {
		o.bits[i].Store(w)
	}
	return o, nil
}

// localMedium keeps an overlay in two files of its directory: the data file (sparse, the
// size of the image) and the bitmap file.
type localMedium struct {
	data    *os.File
	mapFile *os.File
	size    int64
	// persisted is what the bitmap file holds (guarded by the engine's flushMu).
	persisted []uint64
}

func (m *localMedium) prepare(off, n int64) error { return nil }
func (m *localMedium) ready(off, n int64) bool    { return true }
func (m *localMedium) wrote(off, n int64) error   { return nil }
func (m *localMedium) sparse() bool               { return true }

func (m *localMedium) syncData() error {
	if err := fdatasync(int(m.data.Fd())); err != nil {
		return &BackendError{"flush overlay", 0, m.size, err}
	}
	return nil
}

func (m *localMedium) persistBitmap(words []uint64) error {
	if err := m.writeBitmap(words); err != nil {
		return &BackendError{"flush overlay bitmap", 0, m.size, err}
	}
	return nil
}

func (m *localMedium) close() error {
	err := m.mapFile.Close()
	if cerr := m.data.Close(); err == nil {
		err = cerr
	}
	return err
}

// loadBitmap reads the bitmap, or writes a fresh one for a new overlay.
func (m *localMedium) loadBitmap(words int) ([]uint64, error) {
	st, err := m.mapFile.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() == 0 {
		w := make([]uint64, words)
		return w, m.writeBitmap(w)
	}
	want := int64(cowHeaderSize + 8*words)
	if st.Size() != want {
		return nil, fmt.Errorf("bitmap is %d bytes, want %d (image size changed? remove the overlay)", st.Size(), want)
	}
	buf := make([]byte, want)
	if _, err := m.mapFile.ReadAt(buf, 0); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	if string(buf[:8]) != cowMagic || le.Uint32(buf[8:]) != 1 || le.Uint32(buf[12:]) != cowBlock {
		return nil, errors.New("not an nbdroot overlay bitmap")
	}
	if int64(le.Uint64(buf[16:])) != m.size {
		return nil, fmt.Errorf("overlay made for an image of %d bytes, this one has %d (remove the overlay)", le.Uint64(buf[16:]), m.size)
	}
	m.persisted = make([]uint64, words)
	for i := range m.persisted {
		m.persisted[i] = le.Uint64(buf[cowHeaderSize+8*i:])
	}
	return slices.Clone(m.persisted), nil
}

// writeBitmap persists words: the whole file the first time (persisted == nil), afterwards
// only the 4 KiB pieces that changed since the last time, so a FLUSH costs in proportion to
// what was written rather than to the image size. It copies words into persisted (no
// garbage per FLUSH).
func (m *localMedium) writeBitmap(words []uint64) error {
	le := binary.LittleEndian
	if m.persisted == nil {
		buf := make([]byte, cowHeaderSize+8*len(words))
		copy(buf, cowMagic)
		le.PutUint32(buf[8:], 1)
		le.PutUint32(buf[12:], cowBlock)
		le.PutUint64(buf[16:], uint64(m.size))
		for i, w := range words {
			le.PutUint64(buf[cowHeaderSize+8*i:], w)
		}
		if _, err := m.mapFile.WriteAt(buf, 0); err != nil {
			return err
		}
	} else {
		const chunk = 512 // words per 4 KiB piece
		var buf [8 * chunk]byte
		for i := 0; i < len(words); i += chunk {
			j := min(i+chunk, len(words))
			if slices.Equal(words[i:j], m.persisted[i:j]) {
				continue
			}
			for k, w := range words[i:j] {
				le.PutUint64(buf[8*k:], w)
			}
			if _, err := m.mapFile.WriteAt(buf[:8*(j-i)], int64(cowHeaderSize+8*i)); err != nil {
				return err
			}
		}
	}
	if err := fdatasync(int(m.mapFile.Fd())); err != nil {
		return err
	}
	if m.persisted == nil {
		m.persisted = make([]uint64, len(words))
	}
	copy(m.persisted, words)
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
		if err := o.m.prepare(roff, rn); err != nil {
			return err
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
		if !o.m.ready(roff, rn) {
			return errMiss
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

// pwriteAll writes p to the data file at off and tells the medium.
func (o *overlay) pwriteAll(p []byte, off int64) error {
	start, total := off, int64(len(p))
	for len(p) > 0 {
		n, err := pwrite(o.fd, p, off, false)
		if err != nil {
			return &BackendError{"write overlay", off, int64(len(p)), err}
		}
		p, off = p[n:], off+int64(n)
	}
	return o.m.wrote(start, total)
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
	if o.broken.Load() {
		return errBrokenOverlay
	}
	n := int64(len(p))
	unlock := o.lockRange(off, n)
	err := o.m.prepare(off, n)
	if err == nil {
		err = o.copyUpEdges(off, n)
	}
	if err == nil {
		err = o.pwriteAll(p, off)
	}
	if err == nil {
		o.set(off>>cowBlockShift, (off+n-1)>>cowBlockShift)
	}
	unlock()
	if err != nil {
		return o.failed(err)
	}
	if fua {
		return o.Flush()
	}
	return nil
}

// Flush makes the overlay durable: data first, then the bitmap bits set before the data
// sync began (see the comment at the top of this file).
func (o *overlay) Flush() error {
	o.flushMu.Lock()
	defer o.flushMu.Unlock()
	if o.broken.Load() {
		return errBrokenOverlay
	}
	if len(o.snap) != len(o.bits) {
		o.snap = make([]uint64, len(o.bits))
	}
	snap := o.snap
	for i := range o.bits {
		snap[i] = o.bits[i].Load()
	}
	if err := o.m.syncData(); err != nil {
		return o.syncFailed(err)
	}
	if err := o.m.persistBitmap(snap); err != nil {
		return o.syncFailed(err)
	}
	return nil
}

// transientError is a failure of a medium that loses nothing (a store that did not
// answer): the FLUSH fails, and the next one tries again.
type transientError struct{ err error }

func (e transientError) Error() string { return e.err.Error() }
func (e transientError) Unwrap() error { return e.err }

// errBrokenOverlay answers writes and flushes to an overlay whose sync failed.
var errBrokenOverlay = overlayIOError{errors.New("a sync of this overlay failed earlier; its data may be incomplete, so it takes no more writes")}

// overlayIOError is an overlay failure the client sees as EIO, whatever the system call
// said: an overlay that ran out of space is the server's problem, not a full disk on the
// client (the issue asks for EIO), and the client must not retry into it.
type overlayIOError struct{ err error }

func (e overlayIOError) Error() string { return e.err.Error() }

// Unwrap gives errnoOf the EIO and errors.Is the cause.
func (e overlayIOError) Unwrap() []error { return []error{nbd.Errno(nbd.EIO), e.err} }

// failed turns an error of a write into what the client gets, logging (now and then, with
// a count) when the overlay's file system is full, naming the export, client and overlay.
func (o *overlay) failed(err error) error {
	if !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EDQUOT) {
		return err
	}
	n := o.fullErrs.Add(1)
	now := time.Now().UnixNano()
	if last := o.fullAt.Load(); (last == 0 || now-last > int64(10*time.Second)) && o.fullAt.CompareAndSwap(last, now) {
		o.logf("export %q: %s of client %s: no space left in %s (%d failed writes so far): the client's writes fail with EIO until space is freed; other overlays are not touched: %v",
			o.h.Export, o.describe(), o.h.Client, filepath.Dir(o.h.Dir), n, err)
	}
	return overlayIOError{err}
}

// syncFailed poisons the overlay after a failed sync (see the top of this file), unless
// the failure lost nothing.
func (o *overlay) syncFailed(err error) error {
	var te transientError
	if errors.As(err, &te) {
		return overlayIOError{err}
	}
	if !o.broken.Swap(true) {
		o.logf("export %q: %s of client %s: sync failed, the overlay takes no more writes (its data may be incomplete): %v",
			o.h.Export, o.describe(), o.h.Client, err)
	}
	return overlayIOError{err}
}

// zeroRange makes [off, off+n) of the overlay read as zeroes and marks it present.
func (o *overlay) zero(off, n int64, fast bool) error {
	if o.broken.Load() {
		return errBrokenOverlay
	}
	unlock := o.lockRange(off, n)
	defer unlock()
	if err := o.m.prepare(off, n); err != nil {
		return o.failed(err)
	}
	if err := o.copyUpEdges(off, n); err != nil {
		return o.failed(err)
	}
	done := false
	if !o.noPunch.Load() {
		switch err := punchHole(o.fd, off, n); {
		case err == nil:
			done = true
		case errors.Is(err, errUnsupported):
			o.noPunch.Store(true)
		default:
			return o.failed(&BackendError{"zero overlay", off, n, err})
		}
	}
	if !done {
		if fast {
			return ErrNotFast
		}
		if err := writeZeroes(o.fd, off, n); err != nil {
			return o.failed(&BackendError{"zero overlay", off, n, err})
		}
	}
	if err := o.m.wrote(off, n); err != nil {
		return o.failed(err)
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
		if !o.m.sparse() {
			if !fn(rn, 0) {
				return stop
			}
			return nil
		}
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

// Close flushes the overlay, closes its files and releases it on disk (for other
// processes, and for the reaper once it is temporary and unused for the grace period).
func (o *overlay) Close() error {
	var err error
	if !o.broken.Load() {
		err = o.Flush()
	}
	if cerr := o.m.close(); err == nil {
		err = cerr
	}
	if cerr := o.h.Close(); err == nil {
		err = cerr
	}
	return err
}
