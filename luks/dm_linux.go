package luks

import (
	"errors"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dmControlPath is the device-mapper control node. devtmpfs creates it when dm_mod loads
// (the misc device is named "mapper/control").
const dmControlPath = "/dev/mapper/control"

// Activate creates the dm-crypt mapping name for table (DM_DEV_CREATE, DM_TABLE_LOAD,
// resume) through /dev/mapper/control and returns its node, /dev/mapper/NAME, creating the
// node itself when udev does not. The kernel is asked to wipe its copy of the table (which
// holds the key); ours is wiped before Activate returns. The caller still wipes table.
// Needs root and the dm_mod and dm_crypt modules.
func Activate(name string, table *Table) (string, error) {
	ctl, err := openDMControl()
	if err != nil {
		return "", err
	}
	defer ctl.Close()
	c := &dmClient{ctl: ctl, nodes: osNodes{}, devDir: "/dev/mapper"}
	return c.activate(name, table)
}

// Deactivate removes the mapping name (DM_DEV_REMOVE) and its /dev/mapper node. It fails
// with EBUSY while the device is open or mounted.
func Deactivate(name string) error {
	ctl, err := openDMControl()
	if err != nil {
		return err
	}
	defer ctl.Close()
	c := &dmClient{ctl: ctl, nodes: osNodes{}, devDir: "/dev/mapper"}
	return c.remove(name)
}

// linuxDMControl is the open control node.
type linuxDMControl struct{ f *os.File }

func openDMControl() (*linuxDMControl, error) {
	f, err := os.OpenFile(dmControlPath, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errors.New("luks: " + dmControlPath + " is missing: is the dm_mod module loaded and devtmpfs mounted on /dev?")
		}
		return nil, err
	}
	return &linuxDMControl{f: f}, nil
}

// Close closes the control node.
func (c *linuxDMControl) Close() error { return c.f.Close() }

// dmRequests maps our commands to the ioctl request numbers x/sys/unix computed for this
// architecture (_IOWR(0xfd, nr, struct dm_ioctl)).
var dmRequests = map[dmCmd]uint{
	dmVersion:    unix.DM_VERSION,
	dmDevCreate:  unix.DM_DEV_CREATE,
	dmDevRemove:  unix.DM_DEV_REMOVE,
	dmDevSuspend: unix.DM_DEV_SUSPEND,
	dmTableLoad:  unix.DM_TABLE_LOAD,
}

func (c *linuxDMControl) ioctl(cmd dmCmd, buf []byte) error {
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	err = rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(dmRequests[cmd]), uintptr(unsafe.Pointer(&buf[0])))
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

// osNodes manages the real /dev/mapper nodes.
type osNodes struct{}

func (osNodes) mknod(path string, major, minor uint32) error {
	if err := os.MkdirAll("/dev/mapper", 0o755); err != nil {
		return err
	}
	return os.NewSyscallError("mknod", unix.Mknod(path, unix.S_IFBLK|0o600, int(unix.Mkdev(major, minor))))
}

func (osNodes) exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

func (osNodes) remove(path string) error { return os.Remove(path) }
