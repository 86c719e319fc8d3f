package nbdclient

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

func sysIoctl(fd uintptr, req uint, arg uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), arg)
	if errno != 0 {
		return errno
	}
	return nil
}

// pinOwner locks the calling goroutine to its OS thread for good and blocks every signal on
// that thread: NBD_DO_IT waits interruptibly, and a signal handled on its thread would end
// it and shut the device down (nbd_start_device_ioctl). Process-directed signals go to the
// other threads instead.
func pinOwner() {
	runtime.LockOSThread()
	var all unix.Sigset_t
	for i := range all.Val {
		all.Val[i] = ^uint64(0)
	}
	_ = unix.PthreadSigmask(unix.SIG_BLOCK, &all, nil)
}

// AttachLegacy attaches socks to the device at path (/dev/nbdN, index N) through the ioctl
// interface and returns once the device runs; a goroutine of this process keeps it running
// (see LegacySession). Partition scan and request size follow as for Kernel.Connect; their
// failure is a *SetupError next to the running session.
func AttachLegacy(path string, index int, dev Device, socks []*os.File) (*LegacySession, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("ioctl attach: %w (is the nbd module loaded?)", err)
		}
		return nil, fmt.Errorf("ioctl attach: %w", err)
	}
	running := func() bool {
		n, err := unix.IoctlGetUint64(int(f.Fd()), unix.BLKGETSIZE64)
		return err == nil && n > 0
	}
	s := newLegacySession(index, f.Fd(), dev, sysIoctl, running, pinOwner)
	// The session owns f for as long as its owner goroutine runs.
	go func() { <-s.done; f.Close() }()
	if err := s.start(fds(socks)); err != nil {
		s.Close()
		return nil, explainLegacy(path, err)
	}
	if err := SetupDevice("/dev", "/sys", index, dev); err != nil {
		return s, &SetupError{Index: index, Err: err}
	}
	return s, nil
}

func explainLegacy(path string, err error) error {
	switch {
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("ioctl attach %s: the device is in use or already connected: %w", path, err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("ioctl attach %s: not permitted (CAP_SYS_ADMIN is needed): %w", path, err)
	}
	return fmt.Errorf("ioctl attach %s: %w", path, err)
}

// DisconnectLegacy disconnects the device at path through the ioctl interface, as
// nbd-client -d does: NBD_DISCONNECT (the kernel sends NBD_CMD_DISC and NBD_DO_IT returns in
// the process that owns the device), then NBD_CLEAR_SOCK.
func DisconnectLegacy(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("ioctl detach: %w", err)
	}
	defer f.Close()
	if err := doIoctl(sysIoctl, f.Fd(), nbdDisconnect, 0); err != nil {
		return fmt.Errorf("ioctl detach %s: %w", path, err)
	}
	if err := doIoctl(sysIoctl, f.Fd(), nbdClearSock, 0); err != nil {
		return fmt.Errorf("ioctl detach %s: %w", path, err)
	}
	return nil
}
