package nbdclient

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// Detach disconnects /dev/nbd<index> and ends its keeper, if any. A netlink device's keeper
// is stopped first (a disconnect on request sends no LINK_DEAD, but the keeper must not
// answer anything meanwhile); a device held through the ioctl interface, or whose TLS the
// keeper relays, is disconnected first, and its keeper exits once the device is gone.
func Detach(index int) error {
	ks, err := QueryKeeper(index)
	if err != nil && !errors.Is(err, ErrNoKeeper) {
		return err
	}
	if ks != nil && ks.Interface == "ioctl" {
		return DisconnectLegacy("/dev/nbd" + strconv.Itoa(index))
	}
	// A keeper that relays the device's TLS stays: the disconnect (NBD_CMD_DISC) goes to
	// the server through its relays, and it exits once the device is gone.
	if ks != nil && ks.Relays == 0 {
		if _, err := StopKeeper(index); err != nil && !errors.Is(err, ErrNoKeeper) {
			return err
		}
	}
	k, err := OpenKernel()
	if errors.Is(err, ErrNoFamily) {
		return DisconnectLegacy("/dev/nbd" + strconv.Itoa(index))
	}
	if err != nil {
		return err
	}
	defer k.Close()
	return k.Disconnect(index)
}

// DeviceNumber turns /dev/nbdN (or nbdN) into N.
func DeviceNumber(dev string) (int, error) {
	n, ok := strings.CutPrefix(strings.TrimPrefix(dev, "/dev/"), "nbd")
	if !ok {
		return -1, fmt.Errorf("%q is not an NBD device (/dev/nbdN)", dev)
	}
	i, err := strconv.Atoi(n)
	if err != nil || i < 0 || strconv.Itoa(i) != n {
		return -1, fmt.Errorf("%q is not an NBD device (/dev/nbdN)", dev)
	}
	return i, nil
}

// FreeDevice returns the first NBD device that is not connected, from sysfs (sysDir is
// /sys): one with no size and no "pid" attribute (the kernel adds it while connected).
func FreeDevice(sysDir string) (int, error) {
	devs, err := sysfsDevices(sysDir)
	if err != nil {
		return -1, err
	}
	for _, i := range devs {
		if !sysfsConnected(sysDir, i) {
			return i, nil
		}
	}
	if len(devs) == 0 {
		return -1, errors.New("no NBD devices in /sys/block: is the nbd module loaded? (modprobe nbd)")
	}
	return -1, fmt.Errorf("all %d NBD devices are connected (load nbd with a larger nbds_max)", len(devs))
}

// sysfsDevices lists the indexes of /sys/block/nbdN, in order.
func sysfsDevices(sysDir string) ([]int, error) {
	entries, err := os.ReadDir(filepath.Join(sysDir, "block"))
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if i, err := DeviceNumber(e.Name()); err == nil {
			out = append(out, i)
		}
	}
	sort.Ints(out)
	return out, nil
}

func sysfsConnected(sysDir string, index int) bool {
	dir := filepath.Join(sysDir, "block", "nbd"+strconv.Itoa(index))
	if _, err := os.Stat(filepath.Join(dir, "pid")); err == nil {
		return true
	}
	return readUint(filepath.Join(dir, "size")) > 0
}

func readUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// DeviceInfo is one line of `nbdroot status`.
type DeviceInfo struct {
	Device    string `json:"device"`
	Index     int    `json:"index"`
	Connected bool   `json:"connected"`
	Size      uint64 `json:"size,omitempty"`
	BlockSize int    `json:"block_size,omitempty"`
	ReadOnly  bool   `json:"read_only,omitempty"`
	// Backend is what the device was connected to (kernel 5.14+).
	Backend string `json:"backend,omitempty"`
	// Pid is the process that connected the device (the init, for a root).
	Pid int `json:"pid,omitempty"`
	// Keeper is the state its keeper reports, nil without one.
	Keeper *KeeperState `json:"keeper,omitempty"`
}

// DeviceInfos describes devices from the kernel's status list, sysfs (sysDir) and their
// keepers (keeper returns ErrNoKeeper for devices without one).
func DeviceInfos(sysDir string, status []DeviceStatus, keeper func(int) (*KeeperState, error)) []DeviceInfo {
	out := make([]DeviceInfo, 0, len(status))
	for _, st := range status {
		dir := filepath.Join(sysDir, "block", "nbd"+strconv.Itoa(st.Index))
		d := DeviceInfo{Device: "/dev/nbd" + strconv.Itoa(st.Index), Index: st.Index, Connected: st.Connected}
		if st.Connected {
			d.Size = readUint(filepath.Join(dir, "size")) * 512
			d.BlockSize = int(readUint(filepath.Join(dir, "queue", "logical_block_size")))
			d.ReadOnly = readUint(filepath.Join(dir, "ro")) == 1
			d.Pid = int(readUint(filepath.Join(dir, "pid")))
			if b, err := os.ReadFile(filepath.Join(dir, "backend")); err == nil {
				d.Backend = strings.TrimSpace(string(b))
			}
		}
		if keeper != nil {
			if ks, err := keeper(st.Index); err == nil {
				d.Keeper = ks
			}
		}
		out = append(out, d)
	}
	return out
}

// Status lists this machine's NBD devices: from the netlink family, or from sysfs where it
// is missing. all includes devices that are not connected.
func Status(all bool) ([]DeviceInfo, error) {
	var st []DeviceStatus
	k, err := OpenKernel()
	switch {
	case errors.Is(err, ErrNoFamily):
		devs, serr := sysfsDevices("/sys")
		if serr != nil || len(devs) == 0 {
			return nil, fmt.Errorf("%w, and /sys/block lists no NBD devices: this kernel has no nbd driver loaded (modprobe nbd)", err)
		}
		for _, i := range devs {
			st = append(st, DeviceStatus{Index: i, Connected: sysfsConnected("/sys", i)})
		}
	case err != nil:
		return nil, err
	default:
		defer k.Close()
		if st, err = k.Status(-1); err != nil {
			return nil, err
		}
	}
	sort.Slice(st, func(i, j int) bool { return st[i].Index < st[j].Index })
	if !all {
		kept := st[:0]
		for _, s := range st {
			if s.Connected {
				kept = append(kept, s)
			}
		}
		st = kept
	}
	return DeviceInfos("/sys", st, QueryKeeper), nil
}
