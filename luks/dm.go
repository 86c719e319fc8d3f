package luks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
)

// The device-mapper ioctl interface (include/uapi/linux/dm-ioctl.h). Every command takes
// one buffer: a struct dm_ioctl, then at data_start the command's payload (for
// DM_TABLE_LOAD, struct dm_target_spec records each followed by its NUL-terminated
// parameter string, padded to 8 bytes). The layout is built here in plain Go so it can be
// checked byte for byte on any machine; dm_linux.go only issues the ioctls.
const (
	dmIoctlSize      = 312 // sizeof(struct dm_ioctl), 8-byte aligned
	dmTargetSpecSize = 40  // sizeof(struct dm_target_spec)
	dmNameLen        = 128 // DM_NAME_LEN, including the NUL
	dmUUIDLen        = 129 // DM_UUID_LEN, including the NUL
	dmMaxTypeName    = 16  // DM_MAX_TYPE_NAME

	// We speak interface version 4.0.0: the kernel accepts any request whose major
	// matches and whose minor is not newer than its own (dm-ioctl.c check_version).
	dmVersionMajor = 4
	dmVersionMinor = 0
	dmVersionPatch = 0

	dmReadOnlyFlag   = 1 << 0  // DM_READONLY_FLAG
	dmSuspendFlag    = 1 << 1  // DM_SUSPEND_FLAG (absent on DM_DEV_SUSPEND = resume)
	dmSecureDataFlag = 1 << 15 // DM_SECURE_DATA_FLAG: the kernel wipes its copy of the buffer
)

// Offsets of struct dm_ioctl fields.
const (
	dmOffVersion     = 0
	dmOffDataSize    = 12
	dmOffDataStart   = 16
	dmOffTargetCount = 20
	dmOffOpenCount   = 24
	dmOffFlags       = 28
	dmOffEventNr     = 32
	dmOffDev         = 40
	dmOffName        = 48
	dmOffUUID        = 176
)

// dmCmd names a device-mapper command; dm_linux.go maps it to the ioctl request number.
type dmCmd int

const (
	dmVersion dmCmd = iota
	dmDevCreate
	dmDevRemove
	dmDevSuspend
	dmTableLoad
)

// String returns the kernel name of the command, for error messages.
func (c dmCmd) String() string {
	return [...]string{"DM_VERSION", "DM_DEV_CREATE", "DM_DEV_REMOVE", "DM_DEV_SUSPEND", "DM_TABLE_LOAD"}[c]
}

// dmTarget is one target of a table: sectors [start, start+length) mapped by targetType
// with params.
type dmTarget struct {
	start, length uint64
	targetType    string
	params        []byte
}

// dmMessage builds the ioctl buffer for a command on device name: the dm_ioctl header
// (fields in host byte order, as the kernel reads them) and, for a table load, the targets.
func dmMessage(name, uuid string, flags uint32, targets []dmTarget) ([]byte, error) {
	if err := checkDMName(name); err != nil {
		return nil, err
	}
	if len(uuid) >= dmUUIDLen {
		return nil, fmt.Errorf("device-mapper uuid %q longer than %d bytes", truncate(uuid, 32), dmUUIDLen-1)
	}
	size := dmIoctlSize
	for _, t := range targets {
		if len(t.targetType) >= dmMaxTypeName {
			return nil, fmt.Errorf("target type %q too long", t.targetType)
		}
		size += dmTargetRecordLen(t)
	}
	buf := make([]byte, size)
	ne := binary.NativeEndian
	ne.PutUint32(buf[dmOffVersion:], dmVersionMajor)
	ne.PutUint32(buf[dmOffVersion+4:], dmVersionMinor)
	ne.PutUint32(buf[dmOffVersion+8:], dmVersionPatch)
	ne.PutUint32(buf[dmOffDataSize:], uint32(size))
	ne.PutUint32(buf[dmOffDataStart:], dmIoctlSize)
	ne.PutUint32(buf[dmOffTargetCount:], uint32(len(targets)))
	ne.PutUint32(buf[dmOffFlags:], flags)
	copy(buf[dmOffName:dmOffName+dmNameLen-1], name)
	copy(buf[dmOffUUID:dmOffUUID+dmUUIDLen-1], uuid)
	off := dmIoctlSize
	for _, t := range targets {
		n := dmTargetRecordLen(t)
		rec := buf[off : off+n]
		ne.PutUint64(rec[0:], t.start)
		ne.PutUint64(rec[8:], t.length)
		// status (int32 at 16) is output only.
		// next: on DM_TABLE_LOAD, the distance from this record to the next one
		// (dm-ioctl.h, struct dm_target_spec).
		ne.PutUint32(rec[20:], uint32(n))
		copy(rec[24:24+dmMaxTypeName], t.targetType)
		copy(rec[dmTargetSpecSize:], t.params) // NUL and padding are already zero
		off += n
	}
	return buf, nil
}

// dmTargetRecordLen is the size of a dm_target_spec with its NUL-terminated params, rounded
// up to 8 bytes so the next record is aligned (the kernel's next_target requires it).
func dmTargetRecordLen(t dmTarget) int {
	n := dmTargetSpecSize + len(t.params) + 1
	return (n + 7) &^ 7
}

// checkDMName applies the kernel's rules for a device-mapper name (dm-ioctl.c
// check_name: non-empty, shorter than DM_NAME_LEN, no '/') plus ours: it becomes a file
// name under /dev/mapper, so "." and ".." and control characters are refused too.
func checkDMName(name string) error {
	if name == "" || len(name) >= dmNameLen {
		return fmt.Errorf("device-mapper name %q: empty or longer than %d bytes", truncate(name, 32), dmNameLen-1)
	}
	if name == "." || name == ".." || name == "control" || strings.ContainsRune(name, '/') {
		return fmt.Errorf("device-mapper name %q is not allowed", name)
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f {
			return fmt.Errorf("device-mapper name %q: byte %#x not allowed", name, name[i])
		}
	}
	return nil
}

// dmDecodeDev splits the dev field the kernel returns (huge_encode_dev: minor low byte,
// then 12 bits of major, then the rest of the minor) into major and minor.
func dmDecodeDev(dev uint64) (major, minor uint32) {
	major = uint32((dev >> 8) & 0xfff)
	minor = uint32(dev&0xff) | uint32((dev>>12)&0xfff00)
	return major, minor
}

// dmControl is the device-mapper control node: one ioctl at a time on a buffer the kernel
// reads and writes back. A fake implements it in tests.
type dmControl interface {
	ioctl(cmd dmCmd, buf []byte) error
}

// dmNodes creates and removes the /dev/mapper nodes when udev is not there to do it.
type dmNodes interface {
	mknod(path string, major, minor uint32) error
	exists(path string) bool
	remove(path string) error
}

// dmClient activates and removes dm-crypt mappings through a dmControl.
type dmClient struct {
	ctl    dmControl
	nodes  dmNodes
	devDir string // "/dev/mapper"
}

// activate maps t as device name and returns its node, devDir/name: createDevice with
// one crypt target, then the node. The kernel is asked to wipe its copy of the table
// (DM_SECURE_DATA_FLAG) and ours is wiped before returning.
func (c *dmClient) activate(name string, t *Table) (string, error) {
	if err := t.validate(); err != nil {
		return "", fmt.Errorf("luks: activate %s: %w", name, err)
	}
	uuid := ""
	if t.UUIDPrefix != "" {
		uuid = t.UUIDPrefix + "-" + name
		if len(uuid) >= dmUUIDLen {
			uuid = uuid[:dmUUIDLen-1] // cryptsetup truncates the same way
		}
	}
	params := t.appendParams(make([]byte, 0, 256+2*len(t.Key)))
	defer wipe(params)
	flags := uint32(dmSecureDataFlag)
	if t.ReadOnly {
		flags |= dmReadOnlyFlag
	}
	target := dmTarget{start: 0, length: t.Length, targetType: "crypt", params: params}
	major, minor, err := c.createDevice(name, uuid, flags, []dmTarget{target})
	if err != nil {
		return "", fmt.Errorf("luks: activate %s: %w", name, err)
	}
	path := filepath.Join(c.devDir, name)
	if !c.nodes.exists(path) {
		// Without udev nobody creates /dev/mapper/NAME (devtmpfs only makes /dev/dm-N).
		if err := c.nodes.mknod(path, major, minor); err != nil && !c.nodes.exists(path) {
			err = fmt.Errorf("luks: activate %s: creating %s (%d:%d): %w", name, path, major, minor, err)
			if rerr := c.remove(name); rerr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, rerr)
			}
			return "", err
		}
	}
	return path, nil
}

// createDevice creates device name, loads targets as its table and resumes it (which
// makes the table live): the sequence dmsetup create runs (DM_DEV_CREATE, DM_TABLE_LOAD,
// DM_DEV_SUSPEND without DM_SUSPEND_FLAG), without udev cookies. loadFlags go with the
// table (read-only, secure data). On failure the half-made device is removed. The table
// buffer is wiped after the load.
func (c *dmClient) createDevice(name, uuid string, loadFlags uint32, targets []dmTarget) (major, minor uint32, err error) {
	create, err := dmMessage(name, uuid, 0, nil)
	if err != nil {
		return 0, 0, err
	}
	load, err := dmMessage(name, "", loadFlags, targets)
	if err != nil {
		return 0, 0, err
	}
	defer wipe(load)
	if err := c.ctl.ioctl(dmDevCreate, create); err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return 0, 0, fmt.Errorf("a device-mapper device of that name exists already: %w", err)
		}
		return 0, 0, err
	}
	defer func() {
		if err != nil {
			if rerr := c.remove(name); rerr != nil {
				err = fmt.Errorf("%w (and cleaning up: %v)", err, rerr)
			}
		}
	}()
	major, minor = dmDecodeDev(binary.NativeEndian.Uint64(create[dmOffDev:]))
	if err := c.ctl.ioctl(dmTableLoad, load); err != nil {
		return 0, 0, fmt.Errorf("loading the %s table (is the target's module loaded, its cipher available?): %w", targets[0].targetType, err)
	}
	resume, _ := dmMessage(name, "", 0, nil) // name already checked
	if err := c.ctl.ioctl(dmDevSuspend, resume); err != nil {
		return 0, 0, fmt.Errorf("resuming: %w", err)
	}
	return major, minor, nil
}

// remove removes device name (DM_DEV_REMOVE) and its /dev/mapper node.
func (c *dmClient) remove(name string) error {
	msg, err := dmMessage(name, "", 0, nil)
	if err != nil {
		return fmt.Errorf("luks: deactivate %s: %w", name, err)
	}
	if err := c.ctl.ioctl(dmDevRemove, msg); err != nil {
		return fmt.Errorf("luks: deactivate %s: %w", name, err)
	}
	path := filepath.Join(c.devDir, name)
	if c.nodes.exists(path) {
		if err := c.nodes.remove(path); err != nil && c.nodes.exists(path) {
			return fmt.Errorf("luks: deactivate %s: removing %s: %w", name, path, err)
		}
	}
	return nil
}
