package nbdclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// DefaultKeptDeadConnTimeout is the dead-connection timeout of a device with a keeper when
// none is asked for: long enough for a server restart or a switch reboot (the init uses
// the same default for the root).
const DefaultKeptDeadConnTimeout = 120 * time.Second

// AttachRequest is what `nbdroot attach` asks for on a running system.
type AttachRequest struct {
	// Server is host:port (see ParseServer); Export the export name ("" for the default).
	Server string
	Export string
	// Device is the N of /dev/nbdN, or -1 for the first free device.
	Device int
	// Connections is the number of sockets (more than one needs CAN_MULTI_CONN).
	Connections int
	// Timeout is the kernel's per-request timeout (0: the kernel's default).
	Timeout time.Duration
	// DeadConnTimeout is how long I/O waits for a reconnect; 0 means
	// DefaultKeptDeadConnTimeout with Keep, none without (nobody would reconnect).
	DeadConnTimeout time.Duration
	// BlockSize is the logical block size (0: negotiate).
	BlockSize int
	// Keep starts a keeper process that reconnects the device when its server goes away.
	Keep bool
	// Ioctl uses the legacy ioctl interface even where the netlink family exists. The ioctl
	// interface needs a process to hold the device, so it always starts a keeper.
	Ioctl bool
	// Keeper says how to start the keeper process (the nbdroot binary, re-executed).
	Keeper KeeperStart
	// Dial negotiates a connection (nil: Dial).
	Dial DialFunc
}

// Attachment describes an attached device.
type Attachment struct {
	Device    string   `json:"device"`
	Index     int      `json:"index"`
	Server    string   `json:"server"`
	Export    string   `json:"export"`
	Size      uint64   `json:"size"`
	Flags     []string `json:"flags"`
	BlockSize uint32   `json:"block_size"`
	Sockets   int      `json:"connections"`
	// Interface is "netlink" or "ioctl".
	Interface string `json:"interface"`
	// KeeperPid is the keeper's process ID, 0 without one.
	KeeperPid int `json:"keeper_pid,omitempty"`
	// Warnings are things that went wrong without stopping the attach.
	Warnings []string `json:"warnings,omitempty"`
}

// KeeperError reports a device that was attached but whose keeper did not start.
type KeeperError struct {
	Device string
	Err    error
}

// Error implements error.
func (e *KeeperError) Error() string {
	return fmt.Sprintf("%s is attached, but its keeper did not start (it will not survive a server restart; `nbdroot detach %s` undoes the attach): %v", e.Device, e.Device, e.Err)
}

// Unwrap returns why the keeper did not start.
func (e *KeeperError) Unwrap() error { return e.Err }

// Attach negotiates with the server and attaches the export to an NBD device of this
// machine: through the generic netlink family, or the ioctl interface where it is missing.
// With Keep (always with the ioctl interface) a keeper process keeps it connected. note
// receives progress messages.
func Attach(ctx context.Context, r AttachRequest, note func(string)) (*Attachment, error) {
	if note == nil {
		note = func(string) {}
	}
	dial := r.Dial
	if dial == nil {
		dial = Dial
	}
	want := r.Connections
	if want < 1 {
		want = 1
	}
	conns, err := DialConns(ctx, dial, r.Server, r.Export, want, note)
	if err != nil {
		return nil, err
	}
	defer CloseAll(conns)
	info := conns[0].Info
	bs, err := BlockSize(info, r.BlockSize)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", BackendID(r.Server, r.Export), err)
	}
	files, err := SocketFiles(conns)
	if err != nil {
		return nil, err
	}
	defer CloseFiles(files)
	keep := r.Keep || r.Ioctl
	dead := r.DeadConnTimeout
	if dead == 0 && keep {
		dead = DefaultKeptDeadConnTimeout
	}
	dev := Device{Index: r.Device, Size: info.Size, BlockSize: bs, ServerFlags: info.Flags,
		Timeout: r.Timeout, DeadConnTimeout: dead, BackendID: BackendID(r.Server, r.Export), MaxRequest: info.MaxBlock}
	a := &Attachment{Server: r.Server, Export: r.Export, Size: info.Size, Flags: nbd.FlagNames(info.Flags),
		BlockSize: bs, Sockets: len(files), Interface: "netlink"}
	target := KeeperTarget{Servers: []string{r.Server}, Export: r.Export, Size: info.Size, Flags: info.Flags,
		Connections: len(files), DeadConnTimeout: dead, BackendID: dev.BackendID}

	legacy := r.Ioctl
	if !legacy {
		k, err := OpenKernel()
		switch {
		case errors.Is(err, ErrNoFamily):
			note(fmt.Sprintf("%v; using the ioctl interface", err))
			legacy = true
		case err != nil:
			return nil, err
		default:
			idx, err := k.Connect(dev, files)
			k.Close()
			var se *SetupError
			if errors.As(err, &se) {
				a.Warnings = append(a.Warnings, err.Error())
			} else if err != nil {
				return nil, err
			}
			a.Index = idx
		}
	}
	if legacy {
		// No dead-connection timeout on this interface.
		dev.DeadConnTimeout, target.DeadConnTimeout = 0, 0
		if dev.Index < 0 {
			if dev.Index, err = FreeDevice("/sys"); err != nil {
				return nil, err
			}
		}
		target.Index = dev.Index
		start := r.Keeper
		start.Socks = files
		pid, idx, err := StartKeeper(KeeperSpec{Target: target, Legacy: &dev}, start)
		if err != nil {
			return nil, err
		}
		a.Index, a.KeeperPid, a.Interface = idx, pid, "ioctl"
	}
	a.Device = "/dev/nbd" + strconv.Itoa(a.Index)
	if keep && !legacy {
		target.Index = a.Index
		pid, _, err := StartKeeper(KeeperSpec{Target: target}, r.Keeper)
		if err != nil {
			return a, &KeeperError{Device: a.Device, Err: err}
		}
		a.KeeperPid = pid
	}
	return a, nil
}

// Detach disconnects /dev/nbd<index> and ends its keeper, if any. A netlink device's keeper
// is stopped first (a disconnect on request sends no LINK_DEAD, but the keeper must not
// answer anything meanwhile); a device held through the ioctl interface is disconnected
// first, and its keeper exits once NBD_DO_IT returns.
func Detach(index int) error {
	ks, err := QueryKeeper(index)
	if err != nil && !errors.Is(err, ErrNoKeeper) {
		return err
	}
	if ks != nil && ks.Interface == "ioctl" {
		return DisconnectLegacy("/dev/nbd" + strconv.Itoa(index))
	}
	if ks != nil {
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

// MarshalJSON keeps Flags an empty list rather than null.
func (a Attachment) MarshalJSON() ([]byte, error) {
	type plain Attachment
	if a.Flags == nil {
		a.Flags = []string{}
	}
	return json.Marshal(plain(a))
}
