package nbdserver

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rawSocket does a plain socket's transmission-phase I/O with raw system calls on its
// non-blocking descriptor, waiting through the runtime's poller (syscall.RawConn) only when
// the socket has nothing to give or no room to take.
//
// Raw calls skip the runtime's syscall bookkeeping (entersyscall/exitsyscall). That matters
// more than the few nanoseconds it saves: every entersyscall while the runtime's monitor
// thread (sysmon) sleeps wakes it, and it then polls every 20 µs until the process is idle
// again. A server that idles between bursts of requests — every few hundred microseconds —
// paid for that with a busy extra thread on a machine whose CPUs the clients need too.
// Calls on a non-blocking socket return at once, so holding the P through them is safe.
type rawSocket struct {
	rc syscall.RawConn
}

// newRawSocket returns nil when c is not a plain socket (TLS, pipes in tests).
func newRawSocket(c net.Conn) *rawSocket {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return nil
	}
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return nil
	}
	return &rawSocket{rc: rc}
}

// read implements source.
func (s *rawSocket) read(p []byte, wait bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := s.rc.Read(func(fd uintptr) bool {
		for {
			r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
			n, errno = int(r), e
			switch e {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return !wait // false: wait until readable and call again
			}
			return true
		}
	})
	switch {
	case err != nil:
		return 0, err // deadline, closed
	case errno == syscall.EAGAIN:
		return 0, errWouldBlock
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// writev writes all of bufs, waiting for room in the socket as needed. iov is scratch
// space for the iovecs, returned (grown) for reuse.
func (s *rawSocket) writev(bufs [][]byte, iov []iovec) ([]iovec, error) {
	for len(bufs) > 0 {
		iov = iov[:0]
		for _, b := range bufs {
			if len(b) == 0 {
				continue
			}
			if len(iov) == maxIovecs {
				break
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			iov = append(iov, v)
		}
		if len(iov) == 0 {
			return iov, nil
		}
		var n int
		var errno syscall.Errno
		err := s.rc.Write(func(fd uintptr) bool {
			for {
				r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
				n, errno = int(r), e
				switch e {
				case syscall.EINTR:
					continue
				case syscall.EAGAIN:
					return false // wait until writable
				}
				return true
			}
		})
		clear(iov) // drop the pointers into buffers about to be recycled
		if err != nil {
			return iov, err
		}
		if errno != 0 {
			return iov, os.NewSyscallError("writev", errno)
		}
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
	}
	return iov, nil
}

// iovec is struct iovec of readv/writev.
type iovec = unix.Iovec

// maxIovecs is IOV_MAX on Linux: writev takes no more buffers at once.
const maxIovecs = 1024
