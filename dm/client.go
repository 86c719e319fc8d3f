package dm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"syscall"
)

// Control is the device-mapper control node: one ioctl at a time on a buffer the kernel
// reads and writes back. dm_linux.go has the real one; dmtest fakes it.
type Control interface {
	Ioctl(cmd Cmd, buf []byte) error
}

// Nodes creates and removes the /dev/mapper nodes when udev is not there to do it.
type Nodes interface {
	Mknod(path string, major, minor uint32) error
	Exists(path string) bool
	Remove(path string) error
}

// Client creates and removes mapped devices through a Control.
type Client struct {
	Control Control
	Nodes   Nodes
	// DevDir is where the nodes go: "/dev/mapper".
	DevDir string
}

// Device is a mapped device Create made.
type Device struct {
	// Name is the device-mapper name.
	Name string
	// Path is its node, DevDir/Name.
	Path string
	// Major and Minor are its device number (the kernel also makes /dev/dm-MINOR).
	Major, Minor uint32
}

// Close closes the Control when it holds a resource (the real control node).
func (c *Client) Close() error {
	if cl, ok := c.Control.(io.Closer); ok {
		return cl.Close()
	}
	return nil
}

// Create makes device name with uuid (may be empty) from targets and makes it live, the
// sequence `dmsetup create` runs without udev cookies: DM_DEV_CREATE, DM_TABLE_LOAD with
// flags (ReadOnly, SecureData), DM_DEV_SUSPEND without DM_SUSPEND_FLAG (resume). Then it
// makes the node DevDir/name unless udev did. On any failure the half-made device is
// removed again. The table buffer is wiped after the load, whatever happened.
func (c *Client) Create(name, uuid string, flags Flags, targets []Target) (Device, error) {
	if len(targets) == 0 {
		return Device{}, fmt.Errorf("device-mapper device %s: no targets", name)
	}
	create, err := Message{Name: name, UUID: uuid}.Encode()
	if err != nil {
		return Device{}, err
	}
	load, err := Message{Name: name, Flags: flags, Targets: targets}.Encode()
	if err != nil {
		return Device{}, err
	}
	defer wipe(load)
	if err := c.Control.Ioctl(CmdDevCreate, create); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return Device{}, fmt.Errorf("a device-mapper device of that name exists already: %w", err)
		}
		return Device{}, err
	}
	dev := Device{Name: name, Path: filepath.Join(c.DevDir, name)}
	dev.Major, dev.Minor = decodeDev(binary.NativeEndian.Uint64(create[offDev:]))
	fail := func(err error) (Device, error) {
		if rerr := c.Remove(name); rerr != nil {
			err = fmt.Errorf("%w (and cleaning up: %v)", err, rerr)
		}
		return Device{}, err
	}
	if err := c.Control.Ioctl(CmdTableLoad, load); err != nil {
		return fail(fmt.Errorf("loading the %s table (%s): %w", targets[0].Type, loadHint(targets[0].Type), err))
	}
	resume, _ := Message{Name: name}.Encode() // name already checked
	if err := c.Control.Ioctl(CmdDevSuspend, resume); err != nil {
		return fail(fmt.Errorf("resuming: %w", err))
	}
	if !c.Nodes.Exists(dev.Path) {
		// Without udev nobody creates /dev/mapper/NAME (devtmpfs only makes /dev/dm-N).
		if err := c.Nodes.Mknod(dev.Path, dev.Major, dev.Minor); err != nil && !c.Nodes.Exists(dev.Path) {
			return fail(fmt.Errorf("creating %s (%d:%d): %w", dev.Path, dev.Major, dev.Minor, err))
		}
	}
	return dev, nil
}

// loadHint says what usually makes a table load of target type fail.
func loadHint(target string) string {
	switch target {
	case "crypt":
		return "is dm_crypt loaded, the cipher available?"
	case "linear", "striped", "error", "zero":
		return "do the underlying devices exist and hold the mapped sectors?"
	}
	return "is the target's module loaded?"
}

// Remove removes device name (DM_DEV_REMOVE) and its node. The kernel refuses with EBUSY
// while the device is open or mounted.
func (c *Client) Remove(name string) error {
	msg, err := Message{Name: name}.Encode()
	if err != nil {
		return err
	}
	if err := c.Control.Ioctl(CmdDevRemove, msg); err != nil {
		return err
	}
	path := filepath.Join(c.DevDir, name)
	if c.Nodes.Exists(path) {
		if err := c.Nodes.Remove(path); err != nil && c.Nodes.Exists(path) {
			return fmt.Errorf("removing %s: %w", path, err)
		}
	}
	return nil
}

// Version asks the kernel for its device-mapper interface version (DM_VERSION).
func (c *Client) Version() (major, minor, patch uint32, err error) {
	msg, err := Message{Name: "version"}.Encode()
	if err != nil {
		return 0, 0, 0, err
	}
	if err := c.Control.Ioctl(CmdVersion, msg); err != nil {
		return 0, 0, 0, err
	}
	ne := binary.NativeEndian
	return ne.Uint32(msg[offVersion:]), ne.Uint32(msg[offVersion+4:]), ne.Uint32(msg[offVersion+8:]), nil
}
