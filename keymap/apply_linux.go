//go:build linux

package keymap

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The console ioctls (include/uapi/linux/kd.h); the same numbers on every architecture.
const (
	kdgkbmode    = 0x4B44
	kdskbmode    = 0x4B45
	kdskbent     = 0x4B47
	kdskbsent    = 0x4B49
	kdskbdiacruc = 0x4BFB
)

// kbentry, kbsentry and kbdiacrsuc are the ioctls' structs (kd.h).
type kbentry struct {
	table, index uint8
	value        uint16
}

type kbsentry struct {
	fn  uint8
	str [MaxFuncLen]uint8
}

type kbdiacruc struct {
	diacr, base, result uint32
}

type kbdiacrsuc struct {
	cnt   uint32
	diacr [MaxDiacr]kbdiacruc
}

// VT is a virtual terminal's keyboard (Device).
type VT struct {
	f *os.File
}

var _ Device = (*VT)(nil)

// OpenVT opens the keyboard of the current virtual terminal (/dev/tty0). It fails on a
// kernel without virtual terminals (CONFIG_VT off: a serial console has no keymap).
func OpenVT(path string) (*VT, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return &VT{f: f}, nil
}

// Close closes the terminal.
func (v *VT) Close() error { return v.f.Close() }

func (v *VT) ioctl(req uintptr, arg unsafe.Pointer) error {
	rc, err := v.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// Mode implements Device.
func (v *VT) Mode() (int, error) {
	var m int32
	err := v.ioctl(kdgkbmode, unsafe.Pointer(&m))
	return int(m), err
}

// SetMode implements Device: KDSKBMODE takes the mode itself, not a pointer.
func (v *VT) SetMode(mode int) error {
	rc, err := v.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, kdskbmode, uintptr(mode))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// SetEntry implements Device.
func (v *VT) SetEntry(table, key uint8, value uint16) error {
	e := kbentry{table: table, index: key, value: value}
	return v.ioctl(kdskbent, unsafe.Pointer(&e))
}

// SetFunc implements Device.
func (v *VT) SetFunc(index uint8, s string) error {
	var e kbsentry
	e.fn = index
	copy(e.str[:len(e.str)-1], s)
	return v.ioctl(kdskbsent, unsafe.Pointer(&e))
}

// SetDiacrs implements Device.
func (v *VT) SetDiacrs(d []Diacr) error {
	var t kbdiacrsuc
	t.cnt = uint32(min(len(d), MaxDiacr))
	for i := range int(t.cnt) {
		t.diacr[i] = kbdiacruc{diacr: d[i].Diacr, base: d[i].Base, result: d[i].Result}
	}
	return v.ioctl(kdskbdiacruc, unsafe.Pointer(&t))
}
