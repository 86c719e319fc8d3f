package nbdclient

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// ErrNoFamily reports a kernel without the "nbd" generic netlink family: the nbd module is not
// loaded, or the kernel predates 4.12.
var ErrNoFamily = errors.New(`kernel has no "nbd" generic netlink family (nbd module not loaded, or kernel older than 4.12)`)

// Kernel talks to the kernel's NBD driver through generic netlink.
type Kernel struct {
	c   *genetlink.Conn
	fam genetlink.Family
}

// OpenKernel connects to the kernel's "nbd" generic netlink family.
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
	return k, nil
}

// NewKernel looks up the "nbd" family on c; tests pass a genltest connection.
func NewKernel(c *genetlink.Conn) (*Kernel, error) {
	fam, err := c.GetFamily(genlFamily)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrNoFamily
		}
		return nil, fmt.Errorf("look up the nbd netlink family: %w", err)
	}
	return &Kernel{c: c, fam: fam}, nil
}

// Close closes the netlink socket.
func (k *Kernel) Close() error { return k.c.Close() }

func (k *Kernel) execute(cmd uint8, data []byte) ([]genetlink.Message, error) {
	msg := genetlink.Message{Header: genetlink.Header{Command: cmd, Version: genlVersion}, Data: data}
	return k.c.Execute(msg, k.fam.ID, netlink.Request|netlink.Acknowledge)
}

// Connect attaches socks (negotiated connections, one per kernel connection) to the device
// described by dev and returns the device index the kernel used. The kernel takes its own
// reference to each socket; the caller may close socks afterwards.
func (k *Kernel) Connect(dev Device, socks []*os.File) (int, error) {
	data, err := encodeConnect(dev, fds(socks))
	if err != nil {
		return -1, err
	}
	msgs, err := k.execute(cmdConnect, data)
	if err != nil {
		return -1, explainConnect(dev, err)
	}
	idx, err := decodeIndex(msgs)
	if err != nil {
		// Kernels always reply with the index; if this one did not, the device asked for is
		// the one used.
		if dev.Index >= 0 {
			return dev.Index, nil
		}
		return -1, err
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
		}
	}
	return fmt.Errorf("NBD_CMD_CONNECT: %w", err)
}

// Reconfigure hands replacement sockets to device index for connections the kernel marked
// dead, and may change the dead-connection timeout.
func (k *Kernel) Reconfigure(index int, deadConn time.Duration, socks []*os.File) error {
	data, err := encodeReconfigure(index, deadConn, fds(socks))
	if err != nil {
		return err
	}
	if _, err := k.execute(cmdReconfigure, data); err != nil {
		return fmt.Errorf("NBD_CMD_RECONFIGURE nbd%d: %w", index, err)
	}
	return nil
}

// Disconnect disconnects device index: the kernel sends NBD_CMD_DISC and drops the sockets.
func (k *Kernel) Disconnect(index int) error {
	data, err := encodeIndex(index)
	if err != nil {
		return err
	}
	if _, err := k.execute(cmdDisconnect, data); err != nil {
		return fmt.Errorf("NBD_CMD_DISCONNECT nbd%d: %w", index, err)
	}
	return nil
}

// Status reports whether devices are connected: one device, or all when index is -1.
func (k *Kernel) Status(index int) ([]DeviceStatus, error) {
	data, err := encodeIndex(index)
	if err != nil {
		return nil, err
	}
	msgs, err := k.execute(cmdStatus, data)
	if err != nil {
		return nil, fmt.Errorf("NBD_CMD_STATUS: %w", err)
	}
	return decodeStatus(msgs)
}

func fds(files []*os.File) []int {
	out := make([]int, len(files))
	for i, f := range files {
		out[i] = int(f.Fd())
	}
	return out
}
