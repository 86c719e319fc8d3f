package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path"
	"strconv"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"golang.org/x/sys/unix"
)

// NewRenewer returns the Renewer of spec on the running kernel. It finds the interface's
// index, which the Renewer follows should the name change, and a procfs of its own through
// which it reads the booted system's files (PID 1's root): it may run before or after
// switch_root, whose /proc a process left in the initramfs no longer sees.
func NewRenewer(spec Spec, log func(sev int, format string, args ...any)) (*Renewer, error) {
	if err := spec.Check(); err != nil {
		return nil, err
	}
	ifc, err := net.InterfaceByName(spec.Interface)
	if err != nil {
		return nil, fmt.Errorf("lease of %s: %w", spec.Interface, err)
	}
	proc, err := openProc()
	if err != nil {
		return nil, err
	}
	ip, _, _ := net.ParseCIDR(spec.Address)
	index := ifc.Index
	return &Renewer{
		Spec:      spec,
		Transport: &rawTransport{index: index, src: ip.To4()},
		Clock:     BootClock{},
		Link:      linkByIndex(index),
		Detector: &Managers{
			Root:  func() (fs.FS, string, error) { return processRoot(proc, 1) },
			Alive: alive,
			Interface: func() (string, int, error) {
				ifc, err := net.InterfaceByIndex(index)
				if err != nil {
					return "", 0, err
				}
				return ifc.Name, index, nil
			},
		},
		Log: log,
	}, nil
}

// BootClock is CLOCK_BOOTTIME: time since boot, suspend included.
type BootClock struct{}

// Now implements Clock.
func (BootClock) Now() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// Sleep implements Clock.
func (BootClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// rawTransport sends DHCP messages through a packet socket on the interface, as the init's
// exchange does (nclient4): it needs no UDP port 68 of its own, so it never stands in the way
// of the booted system's DHCP client, and it sees the answer whether the server sends it to
// the address or broadcasts it.
type rawTransport struct {
	index int
	// src is the lease's address, the source of the requests (RFC 2131 section 4.3.2: a
	// RENEWING client sends from its address).
	src net.IP
}

// Exchange implements Transport.
func (t *rawTransport) Exchange(ctx context.Context, msg *dhcpv4.DHCPv4, dst net.IP) (*dhcpv4.DHCPv4, error) {
	// The wait an error reports is the whole of ctx's, not what is left after the socket
	// (a loaded machine can spend most of it there).
	waited := time.Minute
	if d, ok := ctx.Deadline(); ok {
		waited = time.Until(d)
	}
	ifc, err := net.InterfaceByIndex(t.index)
	if err != nil {
		return nil, fmt.Errorf("interface %d: %w", t.index, err)
	}
	// Answers come to the address or to the broadcast address, port 68.
	rc, err := nclient4.NewRawUDPConn(ifc.Name, dhcpv4.ClientPort)
	if err != nil {
		return nil, fmt.Errorf("packet socket on %s: %w", ifc.Name, err)
	}
	raw := rc.(*nclient4.BroadcastRawUDPConn).PacketConn
	conn := &sourcedConn{PacketConn: rc, w: nclient4.NewBroadcastUDPConn(raw, &net.UDPAddr{IP: t.src, Port: dhcpv4.ClientPort})}
	wait := time.Minute
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d)
	}
	c, err := nclient4.NewWithConn(conn, ifc.HardwareAddr, nclient4.WithTimeout(wait), nclient4.WithRetry(1))
	if err != nil {
		rc.Close()
		return nil, err
	}
	defer c.Close()
	ans, err := c.SendAndRead(ctx, &net.UDPAddr{IP: dst, Port: dhcpv4.ServerPort}, msg, nil)
	if errors.Is(err, nclient4.ErrNoResponse) || errors.Is(err, context.DeadlineExceeded) {
		return nil, fmt.Errorf("no answer within %s", waited.Round(time.Second))
	}
	return ans, err
}

// sourcedConn reads through one view of the packet socket and writes through another whose
// source address is the lease's.
type sourcedConn struct {
	net.PacketConn
	w net.PacketConn
}

func (c *sourcedConn) WriteTo(b []byte, addr net.Addr) (int, error) { return c.w.WriteTo(b, addr) }

// linkByIndex is the Link of interface index.
type linkByIndex int

// HasAddress implements Link.
func (l linkByIndex) HasAddress(ip net.IP) (bool, error) {
	ifc, err := net.InterfaceByIndex(int(l))
	if err != nil {
		return false, err
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return false, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.Equal(ip) {
			return true, nil
		}
	}
	return false, nil
}

// openProc returns a directory descriptor of a procfs: a detached instance of its own
// (fsopen/fsmount, Linux 5.2+), which needs no path — after switch_root this process's
// root is the emptied initramfs — else the /proc it sees.
func openProc() (int, error) {
	if fs, err := unix.Fsopen("proc", unix.FSOPEN_CLOEXEC); err == nil {
		defer unix.Close(fs)
		if err := unix.FsconfigCreate(fs); err == nil {
			if m, err := unix.Fsmount(fs, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOEXEC|unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV); err == nil {
				return m, nil
			}
		}
	}
	fd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("no procfs to read the booted system through: %w", &os.PathError{Op: "open", Path: "/proc", Err: err})
	}
	return fd, nil
}

// alive reports whether process pid exists (EPERM: it does, under another user).
func alive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// processRoot opens the root directory of process pid (PID 1: after switch_root, the booted
// system's, while this process's own root stays the initramfs) through proc, an open procfs,
// and returns it as a file system, with its device and inode as identity.
func processRoot(proc, pid int) (fs.FS, string, error) {
	r := rootFS{proc: proc, root: strconv.Itoa(pid) + "/root"}
	fd, err := unix.Openat(proc, r.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, "", &os.PathError{Op: "open", Path: "/proc/" + r.root, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, "", os.NewSyscallError("fstat", err)
	}
	return r, strconv.FormatUint(st.Dev, 10) + ":" + strconv.FormatUint(st.Ino, 10), nil
}

// rootFS reads a process's root directory (proc/PID/root). Paths resolve inside it
// (RESOLVE_IN_ROOT): an absolute symbolic link of the booted system (/var/run -> /run) means
// its own /run, not the initramfs's.
type rootFS struct {
	proc int
	root string
}

// Open implements fs.FS.
func (r rootFS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrInvalid}
	}
	root, err := unix.Openat(r.proc, r.root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(root)
	fd, err := unix.Openat2(root, name, &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK, Resolve: unix.RESOLVE_IN_ROOT})
	if errors.Is(err, unix.ENOSYS) {
		// Before Linux 5.6: absolute links resolve in this process's root.
		fd, err = unix.Openat(root, name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return os.NewFile(uintptr(fd), path.Join("/", name)), nil
}
