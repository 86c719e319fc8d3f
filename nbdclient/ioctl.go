package nbdclient

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// The legacy ioctl interface of the nbd driver (include/uapi/linux/nbd.h), used where the
// generic netlink family is missing (kernels before 4.12). Every request is _IO(0xab, n).
const nbdIoctlType = 0xab

// ioctlIO is the kernel's _IO(type, nr) (include/uapi/asm-generic/ioctl.h): no direction and
// no size, so only the type (bits 8–15) and the number (bits 0–7) are set.
func ioctlIO(typ, nr uint) uint {
	const nrShift, typeShift, sizeShift, dirShift = 0, 8, 16, 30
	const dirNone, size = 0, 0
	return dirNone<<dirShift | typ<<typeShift | nr<<nrShift | size<<sizeShift
}

// The nbd ioctls nbdroot uses, by name and number.
var (
	nbdSetSock       = ioctlIO(nbdIoctlType, 0)
	nbdSetBlksize    = ioctlIO(nbdIoctlType, 1)
	nbdDoIt          = ioctlIO(nbdIoctlType, 3)
	nbdClearSock     = ioctlIO(nbdIoctlType, 4)
	nbdClearQue      = ioctlIO(nbdIoctlType, 5)
	nbdSetSizeBlocks = ioctlIO(nbdIoctlType, 7)
	nbdDisconnect    = ioctlIO(nbdIoctlType, 8)
	nbdSetTimeout    = ioctlIO(nbdIoctlType, 9)
	nbdSetFlags      = ioctlIO(nbdIoctlType, 10)
)

var ioctlNames = map[uint]string{
	nbdSetSock: "NBD_SET_SOCK", nbdSetBlksize: "NBD_SET_BLKSIZE", nbdDoIt: "NBD_DO_IT",
	nbdClearSock: "NBD_CLEAR_SOCK", nbdClearQue: "NBD_CLEAR_QUE", nbdSetSizeBlocks: "NBD_SET_SIZE_BLOCKS",
	nbdDisconnect: "NBD_DISCONNECT", nbdSetTimeout: "NBD_SET_TIMEOUT", nbdSetFlags: "NBD_SET_FLAGS",
}

// ioctlFunc performs one ioctl with an integer argument; the real one is a syscall, tests
// record the calls.
type ioctlFunc func(fd uintptr, req uint, arg uintptr) error

// IoctlError names the ioctl that failed.
type IoctlError struct {
	Request string
	Err     error
}

// Error implements error.
func (e *IoctlError) Error() string { return fmt.Sprintf("ioctl %s: %v", e.Request, e.Err) }

// Unwrap returns the errno.
func (e *IoctlError) Unwrap() error { return e.Err }

func doIoctl(fn ioctlFunc, fd uintptr, req uint, arg uintptr) error {
	if err := fn(fd, req, arg); err != nil {
		return &IoctlError{Request: ioctlNames[req], Err: err}
	}
	return nil
}

// configureLegacy sends the setup ioctls, in nbd-client's order: the block size before the
// size in blocks (NBD_SET_SIZE_BLOCKS multiplies by the current block size), the flags,
// the timeout, then one NBD_SET_SOCK per connection. The kernel remembers the thread that
// sent the first NBD_SET_SOCK (task_setup) and refuses sockets from any other: the caller
// runs this, and NBD_DO_IT, on one locked OS thread.
func configureLegacy(ioctl ioctlFunc, fd uintptr, dev Device, socks []int) error {
	if len(socks) == 0 {
		return errors.New("ioctl attach: no sockets")
	}
	if len(socks) > 1 && dev.ServerFlags&(1<<8) == 0 {
		return fmt.Errorf("ioctl attach: %d sockets but the server does not advertise CAN_MULTI_CONN", len(socks))
	}
	bs := uint64(dev.BlockSize)
	if bs == 0 {
		bs = 512
	}
	steps := []struct {
		req uint
		arg uintptr
	}{
		{nbdSetBlksize, uintptr(bs)},
		{nbdSetSizeBlocks, uintptr(dev.Size / bs)},
		{nbdSetFlags, uintptr(dev.ServerFlags)},
	}
	if dev.Timeout > 0 {
		steps = append(steps, struct {
			req uint
			arg uintptr
		}{nbdSetTimeout, uintptr(seconds(dev.Timeout))})
	}
	for _, s := range steps {
		if err := doIoctl(ioctl, fd, s.req, s.arg); err != nil {
			return err
		}
	}
	for _, s := range socks {
		if err := doIoctl(ioctl, fd, nbdSetSock, uintptr(s)); err != nil {
			return err
		}
	}
	return nil
}

// LegacySession is a device attached through the ioctl interface. NBD_DO_IT blocks for as
// long as the device runs, so a goroutine locked to its OS thread owns the device: it
// configures it, sits in NBD_DO_IT, and on Reconfigure clears the old sockets and starts
// again with new ones. The process must outlive the device: in the init, that process is
// the keeper.
//
// Unlike the netlink path, the kernel has no dead-connection timeout here: when the socket
// dies, NBD_DO_IT returns, the device loses its size and I/O fails until the sockets are
// replaced.
type LegacySession struct {
	// Index is the N of /dev/nbdN.
	Index int
	dev   Device
	fd    uintptr
	ioctl ioctlFunc
	// running reports whether the device runs (shows its size); nil: at once.
	running func() bool
	// pin locks the owner goroutine to its thread and blocks signals there; nil in tests.
	pin func()

	stopOnce sync.Once
	runs     chan []int    // to the owner: configure and run with these sockets
	reply    chan error    // from the owner: the result of a run request
	ended    chan error    // from the owner: NBD_DO_IT returned
	stop     chan struct{} // closed by Close
	done     chan struct{} // closed when the owner goroutine exits
}

func newLegacySession(index int, fd uintptr, dev Device, ioctl ioctlFunc, running func() bool, pin func()) *LegacySession {
	s := &LegacySession{Index: index, dev: dev, fd: fd, ioctl: ioctl, running: running, pin: pin,
		runs: make(chan []int), reply: make(chan error), ended: make(chan error, 1),
		stop: make(chan struct{}), done: make(chan struct{})}
	go s.own()
	return s
}

// Reconfigure replaces the sockets after NBD_DO_IT returned: NBD_CLEAR_SOCK, the setup
// ioctls and NBD_DO_IT again, on the owner thread. Only dev.Index is read: the ioctl
// interface has no dead-connection timeout and no backend identifier.
func (s *LegacySession) Reconfigure(dev Device, socks []*os.File) error {
	if dev.Index != s.Index {
		return fmt.Errorf("ioctl session for nbd%d asked to reconfigure nbd%d", s.Index, dev.Index)
	}
	return s.start(fds(socks))
}

func (s *LegacySession) start(socks []int) error {
	select {
	case s.runs <- socks:
	case <-s.done:
		return ErrNotConfigured
	}
	select {
	case err := <-s.reply:
		return err
	case <-s.done:
		return ErrNotConfigured
	}
}

// Next blocks until NBD_DO_IT returns and reports it like a LINK_DEAD event for the device.
// A device disconnected on request (NBD_DO_IT returned without error) is ErrNotConfigured.
func (s *LegacySession) Next() ([]int, error) {
	select {
	case err := <-s.ended:
		if err == nil {
			return nil, ErrNotConfigured
		}
		return []int{s.Index}, nil
	case <-s.stop:
		return nil, errors.New("ioctl session closed")
	}
}

// Disconnect fails the device for good, as nbd-client -d does (NBD_DISCONNECT, then
// NBD_CLEAR_SOCK): the keeper calls it only after NBD_DO_IT returned, when I/O already
// fails, so that nothing restarts the device.
func (s *LegacySession) Disconnect(index int) error {
	if index != s.Index {
		return fmt.Errorf("ioctl session for nbd%d asked to disconnect nbd%d", s.Index, index)
	}
	err := doIoctl(s.ioctl, s.fd, nbdDisconnect, 0)
	if cerr := doIoctl(s.ioctl, s.fd, nbdClearSock, 0); err == nil {
		err = cerr
	}
	return err
}

// Close stops the owner goroutine once NBD_DO_IT returned; it does not disconnect the device.
func (s *LegacySession) Close() error {
	s.stopOnce.Do(func() { close(s.stop) })
	return nil
}

// Status reports the device as connected while the owner thread runs it.
func (s *LegacySession) Status(index int) ([]DeviceStatus, error) {
	select {
	case <-s.done:
		return []DeviceStatus{{Index: s.Index}}, nil
	default:
		return []DeviceStatus{{Index: s.Index, Connected: true}}, nil
	}
}

// own is the owner goroutine: configure, NBD_DO_IT, report, wait for the next sockets.
func (s *LegacySession) own() {
	if s.pin != nil {
		s.pin()
	}
	defer close(s.done)
	for {
		var socks []int
		select {
		case socks = <-s.runs:
		case <-s.stop:
			return
		}
		// A previous NBD_DO_IT left its dead sockets behind; the first run finds none.
		_ = s.ioctl(s.fd, nbdClearSock, 0)
		if err := configureLegacy(s.ioctl, s.fd, s.dev, socks); err != nil {
			s.reply <- err
			continue
		}
		// NBD_DO_IT blocks while the device runs: a helper answers the caller once the
		// device shows its size, or gives up and disconnects it.
		var once sync.Once
		started := false
		answer := func(err error) {
			once.Do(func() {
				started = err == nil
				s.reply <- err
			})
		}
		quit := make(chan struct{})
		helperDone := make(chan struct{})
		go func() {
			defer close(helperDone)
			if err := s.waitRunning(quit); err != nil {
				answer(err)
				_ = s.ioctl(s.fd, nbdDisconnect, 0)
				return
			}
			answer(nil)
		}()
		err := s.ioctl(s.fd, nbdDoIt, 0)
		close(quit)
		early := errors.New("returned at once")
		if err != nil {
			early = fmt.Errorf("returned at once: %w", err)
		}
		answer(&IoctlError{Request: "NBD_DO_IT", Err: early})
		<-helperDone
		if !started {
			continue
		}
		if err != nil {
			err = &IoctlError{Request: "NBD_DO_IT", Err: err}
		}
		select {
		case s.ended <- err:
		case <-s.stop:
			return
		}
	}
}

func (s *LegacySession) waitRunning(quit <-chan struct{}) error {
	if s.running == nil {
		return nil
	}
	limit := time.NewTimer(5 * time.Second)
	defer limit.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !s.running() {
		select {
		case <-quit:
			return errors.New("NBD_DO_IT returned")
		case <-limit.C:
			return errors.New("ioctl attach: the device did not show its size within 5s of NBD_DO_IT")
		case <-tick.C:
		}
	}
	return nil
}
