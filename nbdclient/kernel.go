package nbdclient

import (
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// ErrNoFamily reports a kernel without the "nbd" generic netlink family: the nbd module is not
// loaded, or the kernel predates 4.12.
var ErrNoFamily = errors.New(`kernel has no "nbd" generic netlink family (nbd module not loaded, or kernel older than 4.12)`)

// ErrNotConfigured reports a device the kernel has no connection for: it was disconnected
// (NBD_CMD_RECONFIGURE and NBD_CMD_DISCONNECT answer EINVAL).
var ErrNotConfigured = errors.New("device is not connected")

// Kernel talks to the kernel's NBD driver through generic netlink.
type Kernel struct {
	c   *genetlink.Conn
	fam genetlink.Family
	// setup runs after a successful NBD_CMD_CONNECT (partition scan, request size); nil in
	// tests on fake sockets.
	setup func(index int, dev Device) error
}

// OpenKernel connects to the kernel's "nbd" generic netlink family. Connect on the returned
// Kernel also prepares the new device (partition scan, request size limit).
func OpenKernel() (*Kernel, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("generic netlink: %w", err)
	}
	k, err := NewKernel(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	k.setup = func(index int, dev Device) error { return SetupDevice("/dev", "/sys", index, dev) }
	return k, nil
}

// NewKernel looks up the "nbd" family on c; tests pass a genltest connection.
func NewKernel(c *genetlink.Conn) (*Kernel, error) {
	fam, err := lookupFamily(c)
	if err != nil {
		return nil, err
	}
	return &Kernel{c: c, fam: fam}, nil
}

func lookupFamily(c *genetlink.Conn) (genetlink.Family, error) {
	fam, err := c.GetFamily(genlFamily)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fam, ErrNoFamily
		}
		return fam, fmt.Errorf("look up the nbd netlink family: %w", err)
	}
	return fam, nil
}

// Close closes the netlink socket.
func (k *Kernel) Close() error { return k.c.Close() }

// execute sends cmd and reads its answer. Commands that answer with a message
// (NBD_CMD_CONNECT: the index; NBD_CMD_STATUS) are sent without NLM_F_ACK: the kernel
// (netlink_rcv_skb) would send the acknowledgement after the reply, in a datagram of its
// own, which Execute does not read — the next request on this socket would read it and
// fail ("mismatched sequence in netlink reply"). An error is answered either way.
func (k *Kernel) execute(cmd uint8, data []byte, replies bool) ([]genetlink.Message, error) {
	msg := genetlink.Message{Header: genetlink.Header{Command: cmd, Version: genlVersion}, Data: data}
	flags := netlink.Request | netlink.Acknowledge
	if replies {
		flags = netlink.Request
	}
	return k.c.Execute(msg, k.fam.ID, flags)
}

// SetupError reports a device that is connected but whose preparation after NBD_CMD_CONNECT
// failed (e.g. the partition scan): the caller may carry on and say so.
type SetupError struct {
	Index int
	Err   error
}

// Error implements error.
func (e *SetupError) Error() string {
	return fmt.Sprintf("/dev/nbd%d is connected, but preparing it failed: %v", e.Index, e.Err)
}

// Unwrap returns the preparation's failure.
func (e *SetupError) Unwrap() error { return e.Err }

// Connect attaches socks (negotiated connections, one per kernel connection) to the device
// described by dev and returns the device index the kernel used. The kernel takes its own
// reference to each socket; the caller may close socks afterwards.
//
// On a Kernel from OpenKernel it then has the kernel read the partition table (nbd#99: the
// netlink path only marks the disk for a scan at its next open, so /dev/nbdNp1 would not
// appear until something opened the disk) and lowers the request size to the server's
// maximum. A failure there is a *SetupError next to the valid index.
func (k *Kernel) Connect(dev Device, socks []*os.File) (int, error) {
	data, err := encodeConnect(dev, fds(socks))
	if err != nil {
		return -1, err
	}
	msgs, err := k.execute(cmdConnect, data, true)
	if err != nil {
		return -1, explainConnect(dev, err)
	}
	idx, err := decodeIndex(msgs)
	if err != nil {
		// Kernels always reply with the index; if this one did not, the device asked for is
		// the one used.
		if dev.Index < 0 {
			return -1, err
		}
		idx = dev.Index
	}
	if k.setup != nil {
		if err := k.setup(idx, dev); err != nil {
			return idx, &SetupError{Index: idx, Err: err}
		}
	}
	return idx, nil
}

// explainConnect adds the usual reasons for a refused NBD_CMD_CONNECT.
func explainConnect(dev Device, err error) error {
	var oe *netlink.OpError
	if errors.As(err, &oe) {
		switch {
		case errors.Is(oe.Err, os.ErrExist), errors.Is(oe.Err, errBusy):
			return fmt.Errorf("NBD_CMD_CONNECT: /dev/nbd%d is already connected: %w", dev.Index, err)
		case errors.Is(oe.Err, errInvalid):
			return fmt.Errorf("NBD_CMD_CONNECT refused as invalid (size %d, block size %d; see dmesg): %w", dev.Size, dev.BlockSize, err)
		case errors.Is(oe.Err, errPerm):
			return fmt.Errorf("NBD_CMD_CONNECT: not permitted (CAP_SYS_ADMIN is needed): %w", err)
		}
	}
	return fmt.Errorf("NBD_CMD_CONNECT: %w", err)
}

// Reconfigure hands replacement sockets to device dev.Index for connections the kernel
// marked dead; dev.BackendID must be the identifier the device was connected with, and a
// non-zero dev.DeadConnTimeout replaces the device's (other fields are ignored). The kernel
// puts each socket in the place of one dead connection and silently drops sockets for which
// no connection is dead (nbd_reconnect_socket answers -ENOSPC, which nbd_genl_reconfigure
// ignores), so handing over more sockets than died is harmless.
func (k *Kernel) Reconfigure(dev Device, socks []*os.File) error {
	data, err := encodeReconfigure(dev, fds(socks))
	if err != nil {
		return err
	}
	if _, err := k.execute(cmdReconfigure, data, false); err != nil {
		if isErrno(err, errInvalid) {
			return fmt.Errorf("NBD_CMD_RECONFIGURE nbd%d refused as invalid (not connected, or another backend identifier than %q; see dmesg): %w", dev.Index, dev.BackendID, err)
		}
		return fmt.Errorf("NBD_CMD_RECONFIGURE nbd%d: %w", dev.Index, err)
	}
	return nil
}

// Disconnect disconnects device index: the kernel sends NBD_CMD_DISC and drops the sockets.
func (k *Kernel) Disconnect(index int) error {
	data, err := encodeIndex(index)
	if err != nil {
		return err
	}
	if _, err := k.execute(cmdDisconnect, data, false); err != nil {
		if isErrno(err, errInvalid) {
			return fmt.Errorf("NBD_CMD_DISCONNECT nbd%d: %w (%v)", index, ErrNotConfigured, err)
		}
		return fmt.Errorf("NBD_CMD_DISCONNECT nbd%d: %w", index, err)
	}
	return nil
}

// Status reports whether devices are connected: one device, or all when index is -1.
//
// "Connected" is the kernel's word for "has a configuration" (nbd_genl_status looks at the
// configuration's reference count): it stays true while every socket is dead and I/O
// waits for a reconnect, so Status cannot tell a live link from a dead one; it does tell
// when a device was disconnected.
func (k *Kernel) Status(index int) ([]DeviceStatus, error) {
	data, err := encodeIndex(index)
	if err != nil {
		return nil, err
	}
	msgs, err := k.execute(cmdStatus, data, true)
	if err != nil {
		return nil, fmt.Errorf("NBD_CMD_STATUS: %w", err)
	}
	return decodeStatus(msgs)
}

func isErrno(err, errno error) bool { return errors.Is(err, errno) }

func fds(files []*os.File) []int {
	out := make([]int, len(files))
	for i, f := range files {
		out[i] = int(f.Fd())
	}
	return out
}

// ErrEventsLost reports that the kernel dropped multicast messages because the receive
// buffer was full (ENOBUFS): a NBD_CMD_LINK_DEAD may have been missed.
var ErrEventsLost = errors.New("netlink multicast messages were lost (ENOBUFS)")

// LinkEvents receives the kernel's NBD_CMD_LINK_DEAD multicasts (group "nbd_mc_group"),
// sent when a socket of a device dies while it is not being disconnected.
type LinkEvents struct {
	c *genetlink.Conn
}

// OpenLinkEvents joins the nbd multicast group on a new netlink socket.
func OpenLinkEvents() (*LinkEvents, error) {
	c, err := genetlink.Dial(nil)
	if err != nil {
		return nil, fmt.Errorf("generic netlink: %w", err)
	}
	// A generous buffer: events are rare, but a burst (every socket of every device at once)
	// must not overflow it.
	_ = c.SetReadBuffer(1 << 20)
	e, err := NewLinkEvents(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	return e, nil
}

// NewLinkEvents joins the nbd multicast group on c.
func NewLinkEvents(c *genetlink.Conn) (*LinkEvents, error) {
	fam, err := lookupFamily(c)
	if err != nil {
		return nil, err
	}
	id, err := mcastGroup(fam)
	if err != nil {
		return nil, err
	}
	if err := c.JoinGroup(id); err != nil {
		return nil, fmt.Errorf("join netlink group %s: %w", genlMcGroup, err)
	}
	return &LinkEvents{c: c}, nil
}

// mcastGroup finds the ID of "nbd_mc_group" (the kernel assigns group IDs at registration).
func mcastGroup(fam genetlink.Family) (uint32, error) {
	for _, g := range fam.Groups {
		if g.Name == genlMcGroup {
			return g.ID, nil
		}
	}
	return 0, fmt.Errorf("the nbd netlink family has no %q multicast group", genlMcGroup)
}

// Next blocks until the kernel reports dead links and returns their device indexes (one
// per dead socket). It returns ErrEventsLost when events may have been dropped, and an
// error once the LinkEvents is closed.
func (e *LinkEvents) Next() ([]int, error) {
	for {
		msgs, _, err := e.c.Receive()
		if err != nil {
			if isErrno(err, errNoBufs) {
				return nil, ErrEventsLost
			}
			return nil, err
		}
		idx, err := decodeLinkDead(msgs)
		if err != nil || len(idx) > 0 {
			return idx, err
		}
	}
}

// Close stops Next.
func (e *LinkEvents) Close() error { return e.c.Close() }
