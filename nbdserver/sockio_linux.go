package nbdserver

import (
	"errors"
	"fmt"
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
	// in and out hold the arguments and results of the call in progress on each side —
	// reads are made by the connection reader only, writes by the reply writer only — and
	// inFn, peekFn and outFn are the functions RawConn.Read and Write run, made once per
	// socket. Closures capturing a call's arguments and results escape through the
	// RawConn interface and would be allocated on every call: several per request on a
	// client that waits for each reply, garbage that sets off collections, and every
	// collection starts mark workers on up to all of the server's Ps (run.go: more than
	// the CPUs), which delay the requests of the moment.
	in, out             rawCall
	inFn, peekFn, outFn func(fd uintptr) bool
}

// rawCall is one raw system call on a socket: its arguments, whether to wait for the
// socket, and its results.
type rawCall struct {
	trap  uintptr
	args  [5]uintptr // after the descriptor
	wait  bool
	n     int
	errno syscall.Errno
	// readWhenReady's: whether the socket was asked yet, the buffer's size and getter,
	// and the buffer once got.
	asked bool
	want  int
	get   func(int) []byte
	p     []byte
	// writev's iovecs.
	iov []iovec
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
	s := &rawSocket{rc: rc}
	s.inFn, s.peekFn, s.outFn = s.callIn, s.peekThenRead, s.callOut
	return s
}

// read implements source.
func (s *rawSocket) read(p []byte, wait bool) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := s.take("read", wait, syscall.SYS_READ, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)), 0, 0, 0)
	if err == nil && n == 0 {
		return 0, io.EOF
	}
	return n, err
}

// readWhenReady implements lazySource: it asks the socket whether it has anything with a
// one-byte MSG_PEEK, waits through the poller if not, and only then takes the buffer
// (get(want)) and reads — as many system calls as read with wait, and no buffer held
// while waiting.
func (s *rawSocket) readWhenReady(want int, get func(int) []byte) (int, error) {
	c := &s.in
	c.asked, c.want, c.get, c.p = false, want, get, nil
	err := s.rc.Read(s.peekFn)
	n, errno := c.n, c.errno
	c.get, c.p = nil, nil
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, os.NewSyscallError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// peekThenRead is readWhenReady's function for RawConn.Read.
func (s *rawSocket) peekThenRead(fd uintptr) bool {
	c := &s.in
	if !c.asked {
		c.asked = true
		var one byte
		for {
			_, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&one)), 1,
				syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
			if e == syscall.EINTR {
				continue
			}
			if e == syscall.EAGAIN {
				return false // wait until readable, then read below
			}
			break // data, the end of the stream or an error: the read tells which
		}
	}
	if c.p == nil {
		c.p = c.get(c.want)
	}
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&c.p[0])), uintptr(len(c.p)))
		c.n, c.errno = int(r), e
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true
	}
}

// take makes a raw system call that takes data from the socket (its descriptor is the
// first argument, a2…a6 the others). Without wait, an empty socket is errWouldBlock;
// with it, the call waits for data through the runtime's poller and is made again.
func (s *rawSocket) take(name string, wait bool, trap, a2, a3, a4, a5, a6 uintptr) (int, error) {
	c := &s.in
	c.trap, c.args, c.wait = trap, [5]uintptr{a2, a3, a4, a5, a6}, wait
	err := s.rc.Read(s.inFn)
	n, errno := c.n, c.errno
	switch {
	case err != nil:
		return 0, err // deadline, closed
	case errno == syscall.EAGAIN:
		return 0, errWouldBlock
	case errno != 0:
		return 0, os.NewSyscallError(name, errno)
	}
	return n, nil
}

// callIn is take's function for RawConn.Read.
func (s *rawSocket) callIn(fd uintptr) bool {
	c := &s.in
	for {
		r, _, e := syscall.RawSyscall6(c.trap, fd, c.args[0], c.args[1], c.args[2], c.args[3], c.args[4])
		c.n, c.errno = int(r), e
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return !c.wait // false: wait until readable and call again
		}
		return true
	}
}

// writev writes all of bufs, waiting for room in the socket as needed. iov is scratch
// space for the iovecs, returned (grown) for reuse.
func (s *rawSocket) writev(bufs [][]byte, iov []iovec) ([]iovec, error) {
	c := &s.out
	c.iov = iov
	err := s.writevAll(bufs)
	iov, c.iov = c.iov, nil
	return iov, err
}

func (s *rawSocket) writevAll(bufs [][]byte) error {
	c := &s.out
	for len(bufs) > 0 {
		c.iov = c.iov[:0]
		for _, b := range bufs {
			if len(b) == 0 {
				continue
			}
			if len(c.iov) == maxIovecs {
				break
			}
			v := unix.Iovec{Base: &b[0]}
			v.SetLen(len(b))
			c.iov = append(c.iov, v)
		}
		if len(c.iov) == 0 {
			return nil
		}
		err := s.rc.Write(s.outFn)
		clear(c.iov) // drop the pointers into buffers about to be recycled
		n, errno := c.n, c.errno
		if err != nil {
			return err
		}
		if errno != 0 {
			return os.NewSyscallError("writev", errno)
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
	return nil
}

// callOut is writev's function for RawConn.Write.
func (s *rawSocket) callOut(fd uintptr) bool {
	c := &s.out
	for {
		r, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&c.iov[0])), uintptr(len(c.iov)))
		c.n, c.errno = int(r), e
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until writable
		}
		return true
	}
}

// iovec is struct iovec of readv/writev.
type iovec = unix.Iovec

// maxIovecs is IOV_MAX on Linux: writev takes no more buffers at once.
const maxIovecs = 1024

// pipe is a kernel pipe that write payloads pass through on their way from the socket to
// the image (spliceToFile).
type pipe struct {
	r, w int
	size int // capacity in bytes
}

// pipeSize is what we ask for: a 256 KiB write (nbdcopy's request size) in one pass.
const pipeSize = 1 << 20

func newPipe() (*pipe, error) {
	var p [2]int
	// Non-blocking, so that no bookkeeping mistake can leave us waiting on our own pipe.
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil, os.NewSyscallError("pipe2", err)
	}
	// Larger than the default 64 KiB if the system allows (fs.pipe-max-size); if not, the
	// default works, in more passes.
	size, err := unix.FcntlInt(uintptr(p[1]), unix.F_SETPIPE_SZ, pipeSize)
	if err != nil {
		size, err = unix.FcntlInt(uintptr(p[1]), unix.F_GETPIPE_SZ, 0)
	}
	if err != nil || size < pageSize {
		unix.Close(p[0])
		unix.Close(p[1])
		return nil, fmt.Errorf("pipe capacity: %w", err)
	}
	return &pipe{r: p[0], w: p[1], size: size}, nil
}

func (p *pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceToFile moves the next n bytes of the socket into fd at off through p, without
// copying them into user space: splice(2) hands the socket's pages to the pipe by
// reference, and the second splice copies them into the page cache — one copy instead of
// two (socket to buffer, buffer to file).
//
// It reports how many bytes it took from the socket. A write error (werr) stops it with
// the pipe drained, the bytes taken so far dropped; the caller still has n - taken bytes
// of payload to consume. err is an error of the connection. Should fd not take spliced
// data (a file system without splice_write), the bytes are written from user space
// instead and noSplice tells the caller not to try again. onWait runs before any wait for
// the client, as for inbuf.
func (s *rawSocket) spliceToFile(p *pipe, fd int, off int64, n int, onWait func() error) (taken int, noSplice bool, werr, err error) {
	for taken < n {
		// The pipe is empty here, so EAGAIN means the socket is.
		m, rerr := s.spliceIn(p, min(n-taken, p.size), false)
		if errors.Is(rerr, errWouldBlock) {
			if rerr = onWait(); rerr == nil {
				m, rerr = s.spliceIn(p, min(n-taken, p.size), true)
			}
		}
		switch {
		case rerr != nil:
			return taken, noSplice, nil, rerr
		case m == 0:
			return taken, noSplice, nil, io.ErrUnexpectedEOF
		}
		taken += m
		for m > 0 {
			var w int
			var e error
			if noSplice {
				w, e = p.copyOut(fd, off, m)
			} else {
				w, e = spliceOut(p.r, fd, off, m)
				if errors.Is(e, errUnsupported) {
					noSplice = true
					continue
				}
			}
			if e != nil {
				return taken, noSplice, e, p.drain(m - w)
			}
			off += int64(w)
			m -= w
		}
	}
	return taken, noSplice, nil, nil
}

// spliceIn moves up to n bytes from the socket into the (empty) pipe; without wait it
// reports errWouldBlock when the socket is empty.
func (s *rawSocket) spliceIn(p *pipe, n int, wait bool) (int, error) {
	// Raw: with SPLICE_F_NONBLOCK, splicing from a socket never waits.
	return s.take("splice", wait, unix.SYS_SPLICE, 0, uintptr(p.w), 0, uintptr(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
}

// spliceOut writes up to n bytes from the pipe r to fd at off. It may wait for the disk
// (dirty page throttling), so it is an ordinary system call. errUnsupported means fd
// takes no spliced data, and nothing was taken from the pipe.
func spliceOut(r, fd int, off int64, n int) (int, error) {
	for {
		o := off
		w, err := unix.Splice(r, nil, fd, &o, n, unix.SPLICE_F_MOVE)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EINVAL || err == unix.EOPNOTSUPP || err == unix.ENOSYS:
			return 0, errUnsupported
		case err != nil:
			return 0, os.NewSyscallError("splice", err)
		case w == 0:
			return 0, io.ErrShortWrite // a file that takes nothing
		}
		return int(w), nil
	}
}

// copyOut writes up to n bytes from the pipe to fd at off through user space. It reports
// how many bytes it took from the pipe, also when writing them failed.
func (p *pipe) copyOut(fd int, off int64, n int) (int, error) {
	buf := getBuffer(min(n, 64<<10))
	defer buf.release()
	k, err := unix.Read(p.r, buf.b)
	for err == unix.EINTR {
		k, err = unix.Read(p.r, buf.b)
	}
	if k == 0 && err == nil {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return 0, fmt.Errorf("reading the splice pipe: %w", err)
	}
	for w := 0; w < k; {
		c, err := pwrite(fd, buf.b[w:k], off+int64(w), false)
		if err != nil {
			return k, err
		}
		w += c
	}
	return k, nil
}

// drain reads and drops the n bytes left in the pipe after a failed write, so the pipe is
// empty for the next payload.
func (p *pipe) drain(n int) error {
	var buf [4096]byte
	for n > 0 {
		k, err := unix.Read(p.r, buf[:min(n, len(buf))])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil || k == 0:
			return fmt.Errorf("draining the splice pipe (%d bytes left): %w", n, err)
		}
		n -= k
	}
	return nil
}
