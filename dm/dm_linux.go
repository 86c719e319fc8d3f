package dm

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ControlPath is the device-mapper control node. devtmpfs creates it when dm_mod loads
// (the misc device is named "mapper/control").
const ControlPath = "/dev/mapper/control"

// ErrNoDeviceMapper means the control node is missing: dm_mod is not loaded (or built in),
// or devtmpfs is not mounted on /dev.
var ErrNoDeviceMapper = errors.New(ControlPath + " is missing: is the dm_mod module loaded and devtmpfs mounted on /dev?")

// Open opens the control node and returns a Client that makes its nodes in /dev/mapper.
// Close it when done. Needs root.
func Open() (*Client, error) {
	f, err := os.OpenFile(ControlPath, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoDeviceMapper
		}
		return nil, err
	}
	return &Client{Control: &linuxControl{f: f}, Nodes: osNodes{}, DevDir: "/dev/mapper"}, nil
}

// linuxControl is the open control node.
type linuxControl struct{ f *os.File }

// Close closes the control node.
func (c *linuxControl) Close() error { return c.f.Close() }

// requests maps our commands to the ioctl request numbers x/sys/unix computed for this
// architecture (_IOWR(0xfd, nr, struct dm_ioctl)).
var requests = map[Cmd]uint{
	CmdVersion:    unix.DM_VERSION,
	CmdDevCreate:  unix.DM_DEV_CREATE,
	CmdDevRemove:  unix.DM_DEV_REMOVE,
	CmdDevSuspend: unix.DM_DEV_SUSPEND,
	CmdTableLoad:  unix.DM_TABLE_LOAD,
}

// Ioctl issues cmd with buf, which the kernel reads and writes back.
func (c *linuxControl) Ioctl(cmd Cmd, buf []byte) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(requests[cmd]), uintptr(unsafe.Pointer(&buf[0])))
	})
	runtime.KeepAlive(buf)
	if err != nil {
		return err
	}
	if errno != 0 {
		return os.NewSyscallError("ioctl "+cmd.String(), errno)
	}
	return nil
}

// osNodes manages the real nodes.
type osNodes struct{}

func (osNodes) Mknod(path string, major, minor uint32) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.NewSyscallError("mknod", unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))))
}

func (osNodes) Exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func (osNodes) Remove(path string) error { return os.Remove(path) }
