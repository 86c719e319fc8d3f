package nbdserver

import (
	"errors"
	"fmt"
	"io/fs"
	"syscall"

	"github.com/nbdroot/nbdroot/nbd"
)

// Backend is the storage behind an export. Every method may be called concurrently from many
// connections; offsets and lengths are already checked against Size by the caller.
type Backend interface {
	// Size is the export size in bytes; it does not change while the backend is open.
	Size() int64
	// ReadAt fills p from off.
	ReadAt(p []byte, off int64) error
	// WriteAt stores p at off; with fua it returns only once the data is on stable storage.
	WriteAt(p []byte, off int64, fua bool) error
	// Flush makes every write that returned before it started durable (fdatasync).
	Flush() error
	// Trim discards a range (a hint: contents become unspecified until rewritten).
	Trim(off, length int64, fua bool) error
	// Zero makes a range read as zeroes. noHole asks to keep it allocated; fast asks to fail
	// with ErrNotFast instead of falling back to writing zero buffers.
	Zero(off, length int64, noHole, fast, fua bool) error
	// Extents reports the allocation of [off, off+length) as consecutive extents, calling fn
	// for each until it returns false.
	Extents(off, length int64, fn func(length int64, flags uint32) bool) error
	// Cache asks for a range to be read ahead into memory (a hint).
	Cache(off, length int64) error
	// Close releases the backend.
	Close() error
}

// nowaitReader is implemented by backends that can try a read without blocking on storage
// (preadv2 RWF_NOWAIT). The connection reader serves such reads itself and hands only the
// misses to workers, which keeps page-cache hits free of goroutine handoffs.
type nowaitReader interface {
	// ReadAtNoWait fills p from off and reports true, or reports false (without error) when
	// the read would have to wait for storage.
	ReadAtNoWait(p []byte, off int64) (bool, error)
}

// ErrNotFast is returned by Backend.Zero when a fast zero was asked for and the backend can
// only zero by writing (proto.md NBD_CMD_FLAG_FAST_ZERO → ENOTSUP).
var ErrNotFast = errors.New("fast zeroing not supported")

// ErrReadOnly is returned by a read-only backend for any change.
var ErrReadOnly = errors.New("export is read-only")

// errnoOf maps a backend error to the NBD error value a client receives (proto.md "Error
// values": EDQUOT and EFBIG become ENOSPC; anything unknown is EIO).
func errnoOf(err error) uint32 {
	if err == nil {
		return 0
	}
	var ne nbd.Errno
	if errors.As(err, &ne) {
		return uint32(ne)
	}
	if errors.Is(err, ErrNotFast) {
		return nbd.ENOTSUP
	}
	if errors.Is(err, ErrReadOnly) || errors.Is(err, fs.ErrPermission) {
		return nbd.EPERM
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		switch en {
		case syscall.EPERM, syscall.EACCES, syscall.EROFS:
			return nbd.EPERM
		case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
			return nbd.ENOSPC
		case syscall.EINVAL:
			return nbd.EINVAL
		case syscall.ENOMEM:
			return nbd.ENOMEM
		case syscall.EOPNOTSUPP:
			return nbd.ENOTSUP
		case syscall.EOVERFLOW:
			return nbd.EOVERFLOW
		}
	}
	return nbd.EIO
}

// BackendError wraps a backend failure with the operation and range it concerned.
type BackendError struct {
	Op     string
	Offset int64
	Length int64
	Err    error
}

func (e *BackendError) Error() string {
	return fmt.Sprintf("%s %d+%d: %v", e.Op, e.Offset, e.Length, e.Err)
}

// Unwrap returns the underlying error.
func (e *BackendError) Unwrap() error { return e.Err }
