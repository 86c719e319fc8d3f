package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// fileBackend serves a regular file or a block device through one shared descriptor, so a
// FLUSH (fdatasync) on any connection covers writes acknowledged on all of them — the reason
// CAN_MULTI_CONN is honest.
type fileBackend struct {
	f        *os.File
	fd       int
	size     int64
	readOnly bool
	block    bool // a block device: no holes to report, discard via BLKDISCARD
	sync     bool // every write is durable before its reply (nbd-server "sync")

	// Learned at run time: once the filesystem says a fallocate mode is unsupported we stop
	// asking, so the fallback path costs no extra syscall.
	noPunch     atomic.Bool
	noZeroRange atomic.Bool
	noNowait    atomic.Bool

	// residency is a read-only mapping of the image. mincore(2) on it says whether a range
	// is in the page cache; small cached reads copy straight out of it (see copyResident).
	// Nil if unavailable.
	residency []byte
	// windows holds, per 1 MiB window of the image, the last mincore answer for it: the
	// time (monotonic ns since mapEpoch) until which the window counts as wholly in the
	// page cache, or, negated, until which it counts as not. Nil when reads do not use
	// the mapping.
	windows  []atomic.Int64
	mapBroke atomic.Bool // a read from the mapping faulted (the file shrank): stop using it
}

const (
	windowShift = 20 // 1 MiB residency windows
	// How long a mincore answer is trusted. A resident window is trusted for long: asking
	// costs 1–25 µs (a page-cache lookup per page whose mapping is not populated yet),
	// while a page evicted meanwhile only makes one read wait for the disk. A window with
	// a page missing is asked again soon, and meanwhile read with RWF_NOWAIT.
	windowTTL    = int64(time.Second)
	windowNegTTL = int64(50 * time.Millisecond)
	maxMapped    = 64 << 30 // images up to this size are read through the mapping
)

var mapEpoch = time.Now()

// copyResident copies p from the mapping when the windows it spans were recently seen
// resident, reporting false (having copied nothing useful) otherwise. A copy costs a
// memmove instead of a syscall. Should the kernel have evicted a page since the mincore
// check, the copy waits for the disk — rare, and only under memory pressure. A fault (the
// file truncated under us) is recovered and the mapping retired.
func (b *fileBackend) copyResident(p []byte, off int64) (ok bool) {
	n := int64(len(p))
	if n == 0 || off < 0 || off+n > int64(len(b.residency)) || b.mapBroke.Load() {
		return false
	}
	now := int64(time.Since(mapEpoch))
	for w := off >> windowShift; w <= (off+n-1)>>windowShift; w++ {
		switch v := b.windows[w].Load(); {
		case v > now:
			continue
		case -v > now:
			return false // recently seen with pages missing
		}
		start := w << windowShift
		if !resident(b.residency, start, min(int64(1)<<windowShift, int64(len(b.residency))-start)) {
			b.windows[w].Store(-(now + windowNegTTL))
			return false
		}
		b.windows[w].Store(now + windowTTL)
	}
	defer func() {
		if recover() != nil {
			b.mapBroke.Store(true)
			ok = false
		}
	}()
	old := debug.SetPanicOnFault(true)
	copy(p, b.residency[off:off+n])
	debug.SetPanicOnFault(old)
	return true
}

var (
	_ Backend      = (*fileBackend)(nil)
	_ nowaitReader = (*fileBackend)(nil)
	_ vectorWriter = (*fileBackend)(nil)
)

// openFile opens path as a backend. Read-write opens take an exclusive flock (shared for
// read-only ones) so two server processes cannot export the same image for writing; a
// read-write block device is opened O_EXCL, which the kernel refuses while it is mounted.
func openFile(path string, readOnly, syncWrites bool) (*fileBackend, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	block := st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	if !st.Mode().IsRegular() && !block {
		return nil, fmt.Errorf("%s: not a regular file or block device (%s)", path, st.Mode().Type())
	}
	if block && !readOnly {
		flag |= exclFlag
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, err
	}
	b := &fileBackend{f: f, fd: int(f.Fd()), readOnly: readOnly, block: block, sync: syncWrites}
	if err := lockFile(b.fd, !readOnly); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	// lseek(SEEK_END) gives the size of block devices as well as files.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: size: %w", path, err)
	}
	b.size = size
	b.residency = mapForResidency(b.fd, size)
	if b.residency != nil && size <= maxMapped {
		b.windows = make([]atomic.Int64, (size+(1<<windowShift)-1)>>windowShift)
	}
	return b, nil
}

// cached reports whether [off, off+n) is all in the page cache, so reading it will not
// wait for the disk. False when it cannot tell.
func (b *fileBackend) cached(off, n int64) bool {
	if b.residency == nil || off < 0 || n <= 0 || off+n > int64(len(b.residency)) {
		return false
	}
	return resident(b.residency, off, n)
}

// ErrLocked reports that another process holds a conflicting lock on an image.
var ErrLocked = errors.New("image is locked by another process (another server exporting it?)")

func (b *fileBackend) Size() int64 { return b.size }

func (b *fileBackend) ReadAt(p []byte, off int64) error {
	for len(p) > 0 {
		n, err := pread(b.fd, p, off)
		if err != nil {
			return &BackendError{"read", off, int64(len(p)), err}
		}
		if n == 0 {
			// The file shrank under us: what lies beyond reads as zeroes, as a hole would.
			clear(p)
			return nil
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (b *fileBackend) ReadAtNoWait(p []byte, off int64) (bool, error) {
	if b.windows != nil && b.copyResident(p, off) {
		return true, nil
	}
	if b.noNowait.Load() {
		return false, nil
	}
	n, err := preadNoWait(b.fd, p, off)
	switch {
	case err == errWouldBlock:
		return false, nil
	case err == errNoNowait:
		b.noNowait.Store(true)
		return false, nil
	case err != nil:
		return false, &BackendError{"read", off, int64(len(p)), err}
	case n < len(p):
		// A partial read means part of the range was not cached (or EOF); let a worker
		// finish it with a blocking read.
		return false, nil
	}
	return true, nil
}

func (b *fileBackend) WriteAt(p []byte, off int64, fua bool) error {
	if b.readOnly {
		return ErrReadOnly
	}
	dsync := fua || b.sync
	for len(p) > 0 {
		n, err := pwrite(b.fd, p, off, dsync)
		if err != nil {
			return &BackendError{"write", off, int64(len(p)), err}
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteAt2 stores a followed by b at off with one pwritev.
func (b *fileBackend) WriteAt2(p, q []byte, off int64) error {
	if b.readOnly {
		return ErrReadOnly
	}
	for len(p)+len(q) > 0 {
		n, err := pwrite2(b.fd, p, q, off, b.sync)
		if err != nil {
			return &BackendError{"write", off, int64(len(p) + len(q)), err}
		}
		off += int64(n)
		if n >= len(p) {
			q, p = q[n-len(p):], nil
		} else {
			p = p[n:]
		}
	}
	return nil
}

func (b *fileBackend) Flush() error {
	if b.readOnly {
		return nil
	}
	if err := fdatasync(b.fd); err != nil {
		return &BackendError{"flush", 0, b.size, err}
	}
	return nil
}

func (b *fileBackend) Trim(off, length int64, fua bool) error {
	if b.readOnly {
		return ErrReadOnly
	}
	var err error
	if b.block {
		err = discard(b.fd, off, length)
	} else if !b.noPunch.Load() {
		if err = punchHole(b.fd, off, length); errors.Is(err, errUnsupported) {
			b.noPunch.Store(true)
		}
	}
	// TRIM is advisory (proto.md): a filesystem that cannot punch holes simply keeps the data.
	if err != nil && !errors.Is(err, errUnsupported) {
		return &BackendError{"trim", off, length, err}
	}
	if fua || b.sync {
		return b.Flush()
	}
	return nil
}

func (b *fileBackend) Zero(off, length int64, noHole, fast, fua bool) error {
	if b.readOnly {
		return ErrReadOnly
	}
	done := false
	// Without NO_HOLE a punched hole is the cheapest way to read back zeroes; with it the
	// range must stay allocated, which ZERO_RANGE keeps (proto.md NBD_CMD_WRITE_ZEROES).
	if !noHole && !b.noPunch.Load() {
		err := punchHole(b.fd, off, length)
		switch {
		case err == nil:
			done = true
		case errors.Is(err, errUnsupported):
			b.noPunch.Store(true)
		default:
			return &BackendError{"zero", off, length, err}
		}
	}
	if !done && !b.noZeroRange.Load() {
		err := zeroRange(b.fd, off, length)
		switch {
		case err == nil:
			done = true
		case errors.Is(err, errUnsupported):
			b.noZeroRange.Store(true)
		default:
			return &BackendError{"zero", off, length, err}
		}
	}
	if !done {
		if fast {
			return ErrNotFast
		}
		if err := writeZeroes(b.fd, off, length); err != nil {
			return &BackendError{"zero", off, length, err}
		}
	}
	if fua || b.sync {
		return b.Flush()
	}
	return nil
}

func writeZeroes(fd int, off, length int64) error {
	for length > 0 {
		n := min(length, int64(len(zeroBuf)))
		w, err := pwrite(fd, zeroBuf[:n], off, false)
		if err != nil {
			return err
		}
		off, length = off+int64(w), length-int64(w)
	}
	return nil
}

// zeroBuf is a shared read-only source of zeroes.
var zeroBuf = make([]byte, 1<<20)

func (b *fileBackend) Extents(off, length int64, fn func(int64, uint32) bool) error {
	end := off + length
	if b.block {
		fn(length, 0)
		return nil
	}
	for off < end {
		data, err := seekData(b.fd, off)
		if err != nil {
			if errors.Is(err, errUnsupported) {
				fn(end-off, 0)
				return nil
			}
			return &BackendError{"block status", off, end - off, err}
		}
		if data < 0 || data >= end {
			// No data until the end of the range (or of the file).
			fn(end-off, nbd.StateHole|nbd.StateZero)
			return nil
		}
		if data > off {
			if !fn(data-off, nbd.StateHole|nbd.StateZero) {
				return nil
			}
			off = data
		}
		hole, err := seekHole(b.fd, off)
		if err != nil {
			return &BackendError{"block status", off, end - off, err}
		}
		if hole > end || hole <= off {
			hole = end
		}
		if !fn(hole-off, 0) {
			return nil
		}
		off = hole
	}
	return nil
}

func (b *fileBackend) Cache(off, length int64) error {
	if err := willNeed(b.fd, off, length); err != nil && !errors.Is(err, errUnsupported) {
		return &BackendError{"cache", off, length, err}
	}
	return nil
}

func (b *fileBackend) Close() error {
	unmapResidency(b.residency)
	b.residency = nil
	return b.f.Close()
}
