package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// exclFlag makes open(2) of a block device fail with EBUSY while it is mounted or otherwise
// claimed exclusively, so a mounted disk is never exported for writing.
const exclFlag = os.O_EXCL

var (
	errWouldBlock  = errors.New("would block")
	errNoNowait    = errors.New("RWF_NOWAIT not supported")
	errUnsupported = errors.New("not supported by this file system")
)

func pread(fd int, p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("pread", err)
		}
		return n, nil
	}
}

// preadNoWait reads only what is already in the page cache (preadv2 RWF_NOWAIT, Linux ≥ 4.14
// for buffered reads on most file systems). The iovec lives on the stack: no allocation.
func preadNoWait(fd int, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	iov := unix.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	// A raw call: it never waits for the disk, so the runtime need not know about it
	// (see rawSocket for why that is worth it).
	n, _, e := unix.RawSyscall6(unix.SYS_PREADV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1,
		uintptr(off), 0, unix.RWF_NOWAIT)
	switch e {
	case 0:
		return int(n), nil
	case unix.EAGAIN, unix.EINTR:
		return 0, errWouldBlock
	case unix.EOPNOTSUPP, unix.EINVAL, unix.ENOSYS:
		return 0, errNoNowait
	}
	return 0, os.NewSyscallError("preadv2", e)
}

// pwrite writes p at off; with dsync the data is on stable storage when it returns
// (pwritev2 RWF_DSYNC, falling back to pwrite + fdatasync on kernels without it).
func pwrite(fd int, p []byte, off int64, dsync bool) (int, error) {
	if dsync && len(p) > 0 {
		iov := unix.Iovec{Base: &p[0]}
		iov.SetLen(len(p))
		for {
			n, _, e := unix.Syscall6(unix.SYS_PWRITEV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1,
				uintptr(off), 0, unix.RWF_DSYNC)
			switch e {
			case 0:
				return int(n), nil
			case unix.EINTR:
				continue
			case unix.EOPNOTSUPP, unix.ENOSYS:
				// Old kernel: a plain write and a sync give the same guarantee.
				n, err := pwrite(fd, p, off, false)
				if err != nil {
					return n, err
				}
				return n, fdatasync(fd)
			}
			return 0, os.NewSyscallError("pwritev2", e)
		}
	}
	for {
		n, err := unix.Pwrite(fd, p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, os.NewSyscallError("pwrite", err)
		}
		return n, nil
	}
}

// pwrite2 writes a then b at off with one pwritev2 (RWF_DSYNC with dsync); either may be
// empty. It returns the bytes written, which may be fewer than asked.
func pwrite2(fd int, a, b []byte, off int64, dsync bool) (int, error) {
	var iov [2]unix.Iovec
	cnt := 0
	for _, p := range [][]byte{a, b} {
		if len(p) > 0 {
			iov[cnt].Base = &p[0]
			iov[cnt].SetLen(len(p))
			cnt++
		}
	}
	if cnt == 0 {
		return 0, nil
	}
	flags := 0
	if dsync {
		flags = unix.RWF_DSYNC
	}
	for {
		n, _, e := unix.Syscall6(unix.SYS_PWRITEV2, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(cnt),
			uintptr(off), 0, uintptr(flags))
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP, unix.ENOSYS:
			// An old kernel: write the pieces (then sync, for RWF_DSYNC).
			n1, err := pwrite(fd, a, off, false)
			if err != nil || n1 < len(a) {
				return n1, err
			}
			n2, err := pwrite(fd, b, off+int64(n1), false)
			if err != nil || !dsync {
				return n1 + n2, err
			}
			return n1 + n2, fdatasync(fd)
		}
		return 0, os.NewSyscallError("pwritev2", e)
	}
}

func fdatasync(fd int) error {
	for {
		err := unix.Fdatasync(fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return os.NewSyscallError("fdatasync", err)
		}
		return nil
	}
}

func fallocate(fd int, mode uint32, off, length int64) error {
	for {
		err := unix.Fallocate(fd, mode, off, length)
		switch err {
		case nil:
			return nil
		case unix.EINTR:
			continue
		case unix.EOPNOTSUPP, unix.ENOSYS:
			return errUnsupported
		}
		return os.NewSyscallError("fallocate", err)
	}
}

func punchHole(fd int, off, length int64) error {
	return fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func zeroRange(fd int, off, length int64) error {
	return fallocate(fd, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

// discard issues BLKDISCARD on a block device; devices without discard support report
// errUnsupported, which callers treat as "TRIM ignored".
func discard(fd int, off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	_, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKDISCARD, uintptr(unsafe.Pointer(&r)))
	switch e {
	case 0:
		return nil
	case unix.EOPNOTSUPP, unix.ENOTTY, unix.EINVAL:
		return errUnsupported
	}
	return os.NewSyscallError("ioctl BLKDISCARD", e)
}

// seekData returns the next data offset at or after off, or -1 when only a hole follows.
func seekData(fd int, off int64) (int64, error) {
	n, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch err {
	case nil:
		return n, nil
	case unix.ENXIO:
		return -1, nil
	case unix.EINVAL, unix.EOPNOTSUPP:
		return 0, errUnsupported
	}
	return 0, os.NewSyscallError("lseek SEEK_DATA", err)
}

func seekHole(fd int, off int64) (int64, error) {
	n, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil {
		return 0, os.NewSyscallError("lseek SEEK_HOLE", err)
	}
	return n, nil
}

func willNeed(fd int, off, length int64) error {
	if err := unix.Fadvise(fd, off, length, unix.FADV_WILLNEED); err != nil {
		return os.NewSyscallError("fadvise", err)
	}
	return nil
}

// lockFile takes a non-blocking flock on the image: exclusive for writers, shared for readers.
func lockFile(fd int, exclusive bool) error {
	how := unix.LOCK_SH | unix.LOCK_NB
	if exclusive {
		how = unix.LOCK_EX | unix.LOCK_NB
	}
	err := unix.Flock(fd, how)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return ErrLocked
	}
	if err != nil {
		return os.NewSyscallError("flock", err)
	}
	return nil
}

func keyOf(fi os.FileInfo) fileKey {
	st := fi.Sys().(*syscall.Stat_t)
	return fileKey{dev: uint64(st.Dev), ino: st.Ino}
}

// unixPeerID names a Unix-socket client by its user (SO_PEERCRED): the socket's file
// permissions decide who may connect, and one user's connections count as one client.
func unixPeerID(nc net.Conn) string {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return "unix"
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return "unix"
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	if err != nil || cred == nil {
		return "unix"
	}
	return fmt.Sprintf("unix:uid=%d", cred.Uid)
}

// socketSendfile returns a function that sends some buffers (reply headers) and then file
// data to the connection: the buffers with MSG_MORE, so the kernel packs them with the data
// that follows, and the data with sendfile(2) — the socket takes page-cache pages by
// reference, so the data is copied once (by the receiver) instead of three times. It
// returns nil when w is not a plain socket.
func socketSendfile(w io.Writer) func(bufs [][]byte, fd int, off int64, n int) error {
	sc, ok := w.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return func(bufs [][]byte, in int, off int64, n int) error {
		for len(bufs) > 0 {
			var sent int
			var serr error
			werr := rc.Write(func(out uintptr) bool {
				for {
					sent, serr = unix.SendmsgBuffers(int(out), bufs, nil, nil, unix.MSG_MORE|unix.MSG_NOSIGNAL)
					switch serr {
					case unix.EINTR:
						continue
					case unix.EAGAIN:
						return false
					}
					return true
				}
			})
			if werr != nil {
				return werr
			}
			if serr != nil {
				return os.NewSyscallError("sendmsg", serr)
			}
			for sent > 0 && len(bufs) > 0 {
				if sent >= len(bufs[0]) {
					sent -= len(bufs[0])
					bufs = bufs[1:]
				} else {
					bufs[0] = bufs[0][sent:]
					sent = 0
				}
			}
		}
		for n > 0 {
			var sent int
			var serr error
			werr := rc.Write(func(out uintptr) bool {
				for {
					sent, serr = unix.Sendfile(int(out), in, &off, min(n, sendfileChunk))
					switch serr {
					case unix.EINTR:
						continue
					case unix.EAGAIN:
						if sent > 0 {
							serr = nil
							return true
						}
						return false // wait until the socket is writable
					}
					return true
				}
			})
			if werr != nil {
				return werr
			}
			if serr != nil {
				return os.NewSyscallError("sendfile", serr)
			}
			if sent == 0 {
				// The file ended early (truncated under us): the header promised n bytes, and
				// beyond the end a file reads as zeroes.
				for n > 0 {
					k, err := w.Write(zeroBuf[:min(n, len(zeroBuf))])
					if err != nil {
						return err
					}
					n -= k
				}
				return nil
			}
			n -= sent
			if n > 0 {
				// Let the connections waiting for this P go first (sendfileChunk).
				runtime.Gosched()
			}
		}
		return nil
	}
}

// sendfileChunk bounds one sendfile call. Over loopback or a fast NIC a single call for a
// large read does all the TCP work of megabytes while holding a P of the runtime; in
// pieces, with a Gosched between them, a client copying a large file yields to the small
// requests of the others (their p90/p99 latency during such a copy dropped by a third in
// the fairness benchmark, the copy's throughput unchanged).
const sendfileChunk = 128 << 10

// lowerThreadPriority gives the calling thread a higher nice value (a lower CPU priority),
// which any thread may do (setpriority(2) on its thread ID).
func lowerThreadPriority(nice int) {
	unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), nice)
}

// threadNice is the calling thread's nice value.
func threadNice() (int, error) {
	// The raw system call returns 20 - nice, so that it is never negative.
	p, err := unix.Getpriority(unix.PRIO_PROCESS, unix.Gettid())
	return 20 - p, err
}

// mapForResidency maps the image read-only for mincore(2). The kernel reports page-cache
// residency of a file mapping only to callers that may write the file (or own it); for
// others every page looks absent and reads simply take the worker path.
func mapForResidency(fd int, size int64) []byte {
	if size <= 0 || size != int64(int(size)) {
		return nil
	}
	m, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return nil
	}
	return m
}

func unmapResidency(m []byte) {
	if m != nil {
		unix.Munmap(m)
	}
}

const pageSize = 4096

// resident asks mincore about the pages under [off, off+n) of the mapping m.
func resident(m []byte, off, n int64) bool {
	start := off &^ (pageSize - 1)
	end := off + n
	pages := (end - start + pageSize - 1) / pageSize
	var small [256]byte // 1 MiB worth of pages without allocating
	vec := small[:]
	if pages > int64(len(small)) {
		if pages > 8192 {
			return false // beyond 32 MiB: not worth asking
		}
		vec = make([]byte, pages)
	}
	vec = vec[:pages]
	region := m[start:min(int64(len(m)), start+pages*pageSize)]
	// mincore never blocks: a raw call, like preadNoWait.
	_, _, e := unix.RawSyscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&region[0])), uintptr(len(region)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return false
	}
	for _, v := range vec {
		if v&1 == 0 {
			return false
		}
	}
	return true
}
