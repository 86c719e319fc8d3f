package hooks

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/dm"
	"github.com/nbdroot/nbdroot/luks"
	"github.com/nbdroot/nbdroot/lvm"
	"golang.org/x/sys/unix"
)

// NewSystem returns the System that acts on the running kernel.
func NewSystem() System {
	return System{Files: linuxFiles{}, Net: linuxNet{}, NBD: NBDAttacher{}, Blocks: linuxBlocks{},
		Console: linuxConsole{}, Mapper: dmMapper{}, Machine: linuxMachine{}}
}

// The real implementations, one per concern of System.
type (
	linuxFiles struct{}
	linuxNet   struct {
		// veths makes veth pairs count as NICs: the tests' hosts (netlab) have no others.
		veths bool
	}
	linuxBlocks  struct{}
	linuxConsole struct{}
	dmMapper     struct{}
	linuxMachine struct{}
)

var (
	_ Files        = linuxFiles{}
	_ Network      = linuxNet{}
	_ BlockDevices = linuxBlocks{}
	_ Console      = linuxConsole{}
	_ Mapper       = dmMapper{}
	_ Machine      = linuxMachine{}
)

func (linuxFiles) Mount(source, target, fstype string, flags uintptr, data string) error {
	return os.NewSyscallError("mount", unix.Mount(source, target, fstype, flags, data))
}

func (linuxFiles) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

func (linuxFiles) WriteFile(path string, data []byte, perm os.FileMode) error {
	return os.WriteFile(path, data, perm)
}

func (linuxFiles) RemoveAll(path string) error { return os.RemoveAll(path) }

func (linuxFiles) Unmount(target string) error {
	return os.NewSyscallError("umount", unix.Unmount(target, 0))
}

func (linuxBlocks) BlockDeviceReady(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return false, fmt.Errorf("%s is not a block device", path)
	}
	size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
	if err != nil {
		return false, os.NewSyscallError("BLKGETSIZE64", err)
	}
	if size == 0 {
		return false, errors.New("size is 0 (not connected yet)")
	}
	return true, nil
}

func (linuxMachine) Uptime() time.Duration { return Uptime() }

func (linuxBlocks) OpenDevice(path string) (*os.File, error) { return os.Open(path) }

func (linuxMachine) MemAvailableKiB() uint32 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
			n, _ := strconv.ParseUint(f[1], 10, 32)
			return uint32(n)
		}
	}
	return 0
}

func (dmMapper) ActivateCrypt(name string, table *luks.Table) (string, error) {
	return luks.Activate(name, table)
}

// ActivateLV loads the volume's table and makes /dev/VG/LV → ../mapper/VG-LV, the link
// lvm2's udev rules make (root=/dev/VG/LV names it; the booted system's udev keeps it).
func (dmMapper) ActivateLV(vg *lvm.VG, lv string, readOnly bool) (string, error) {
	c, err := dm.Open()
	if err != nil {
		return "", fmt.Errorf("lvm: activate %s/%s: %w", vg.Name, lv, err)
	}
	defer c.Close()
	dev, err := vg.Activate(c, lv, lvm.ActivateOptions{ReadOnly: readOnly})
	if err != nil {
		return "", err
	}
	dir := filepath.Join("/dev", vg.Name)
	link := filepath.Join(dir, lv)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return dev.Path, fmt.Errorf("lvm: %w", err)
	}
	if err := os.Symlink("../mapper/"+dev.Name, link); err != nil && !errors.Is(err, os.ErrExist) {
		return dev.Path, fmt.Errorf("lvm: %w", err)
	}
	return dev.Path, nil
}

// Partitions lists /dev/NAMEpM for the partitions sysfs shows under the disk
// (/sys/class/block/NAME/NAMEpM/partition).
func (linuxBlocks) Partitions(dev string) ([]string, error) {
	name := filepath.Base(dev)
	ents, err := os.ReadDir(filepath.Join("/sys/class/block", name))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), name) {
			continue
		}
		if _, err := os.Stat(filepath.Join("/sys/class/block", name, e.Name(), "partition")); err == nil {
			out = append(out, "/dev/"+e.Name())
		}
	}
	return out, nil
}

// Uptime reads CLOCK_BOOTTIME: the time since the kernel started, what dmesg shows.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
