//go:build !linux

package nbdserver

import (
	"errors"
	"io"
	"net"
	"os"
	"syscall"
)

// Portable fallbacks: plain positional I/O and fsync. Hole punching, zero ranges, discard,
// SEEK_DATA and RWF_NOWAIT are Linux features; here they report errUnsupported and the
// callers take their slower, still correct paths.

const exclFlag = 0

var (
	errWouldBlock  = errors.New("would block")
	errNoNowait    = errors.New("RWF_NOWAIT not supported")
	errUnsupported = errors.New("not supported on this platform")
)

func pread(fd int, p []byte, off int64) (int, error) {
	n, err := syscall.Pread(fd, p, off)
	if err != nil {
		return 0, os.NewSyscallError("pread", err)
	}
	return n, nil
}

func preadNoWait(fd int, p []byte, off int64) (int, error) { return 0, errNoNowait }

func pwrite(fd int, p []byte, off int64, dsync bool) (int, error) {
	n, err := syscall.Pwrite(fd, p, off)
	if err != nil {
		return 0, os.NewSyscallError("pwrite", err)
	}
	if dsync {
		return n, fdatasync(fd)
	}
	return n, nil
}

func pwrite2(fd int, a, b []byte, off int64, dsync bool) (int, error) {
	n1, err := pwrite(fd, a, off, false)
	if err != nil || n1 < len(a) {
		return n1, err
	}
	n2, err := pwrite(fd, b, off+int64(n1), false)
	if err != nil {
		return n1 + n2, err
	}
	if dsync {
		return n1 + n2, fdatasync(fd)
	}
	return n1 + n2, nil
}

func fdatasync(fd int) error {
	if err := syscall.Fsync(fd); err != nil {
		return os.NewSyscallError("fsync", err)
	}
	return nil
}

func punchHole(fd int, off, length int64) error { return errUnsupported }
func zeroRange(fd int, off, length int64) error { return errUnsupported }
func discard(fd int, off, length int64) error   { return errUnsupported }
func seekData(fd int, off int64) (int64, error) { return 0, errUnsupported }
func seekHole(fd int, off int64) (int64, error) { return 0, errUnsupported }
func willNeed(fd int, off, length int64) error  { return errUnsupported }
func lockFile(fd int, exclusive bool) error     { return nil }

func keyOf(fi os.FileInfo) fileKey {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return fileKey{dev: uint64(st.Dev), ino: uint64(st.Ino)}
	}
	return fileKey{}
}

func unixPeerID(nc net.Conn) string { return "unix" }

func socketSendfile(w io.Writer) func(bufs [][]byte, fd int, off int64, n int) error { return nil }

func mapForResidency(fd int, size int64) []byte { return nil }
func unmapResidency(m []byte)                   {}
func resident(m []byte, off, n int64) bool      { return false }

func lowerThreadPriority(nice int) {}
func threadNice() (int, error)     { return 0, errUnsupported }
