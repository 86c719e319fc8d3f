package dm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Every command takes one buffer: a struct dm_ioctl, then at data_start the command's
// payload (for DM_TABLE_LOAD, struct dm_target_spec records each followed by its
// NUL-terminated parameter string, padded to 8 bytes).
const (
	ioctlSize      = 312 // sizeof(struct dm_ioctl), 8-byte aligned
	targetSpecSize = 40  // sizeof(struct dm_target_spec)
	nameLen        = 128 // DM_NAME_LEN, including the NUL
	uuidLen        = 129 // DM_UUID_LEN, including the NUL
	maxTypeName    = 16  // DM_MAX_TYPE_NAME

	// We speak interface version 4.0.0: the kernel accepts any request whose major
	// matches and whose minor is not newer than its own (dm-ioctl.c check_version).
	versionMajor = 4
	versionMinor = 0
	versionPatch = 0
)

// Offsets of struct dm_ioctl fields.
const (
	offVersion     = 0
	offDataSize    = 12
	offDataStart   = 16
	offTargetCount = 20
	offOpenCount   = 24
	offFlags       = 28
	offEventNr     = 32
	offDev         = 40
	offName        = 48
	offUUID        = 176
)

// Flags are struct dm_ioctl flags.
type Flags uint32

const (
	// ReadOnly maps the device read-only (DM_READONLY_FLAG).
	ReadOnly Flags = 1 << 0
	// suspendFlag (DM_SUSPEND_FLAG) suspends on DM_DEV_SUSPEND; without it, the command
	// resumes, which is how a loaded table is made live.
	suspendFlag Flags = 1 << 1
	// SecureData asks the kernel to wipe its copy of the buffer (DM_SECURE_DATA_FLAG):
	// for tables holding a key.
	SecureData Flags = 1 << 15
)

// Cmd names a device-mapper command; dm_linux.go maps it to the ioctl request number.
type Cmd int

// The commands a Client issues.
const (
	CmdVersion Cmd = iota
	CmdDevCreate
	CmdDevRemove
	CmdDevSuspend
	CmdTableLoad
)

// String returns the kernel name of the command, for error messages.
func (c Cmd) String() string {
	names := [...]string{"DM_VERSION", "DM_DEV_CREATE", "DM_DEV_REMOVE", "DM_DEV_SUSPEND", "DM_TABLE_LOAD"}
	if c < 0 || int(c) >= len(names) {
		return fmt.Sprintf("dm command %d", int(c))
	}
	return names[c]
}

// Target is one line of a table: sectors [Start, Start+Length) of the mapped device are
// mapped by the target Type ("linear", "striped", "crypt") with Params, the target's
// argument string (Documentation/admin-guide/device-mapper/). Params may hold key
// material; it is not copied anywhere that is not wiped.
type Target struct {
	Start, Length uint64 // 512-byte sectors
	Type          string
	Params        []byte
}

// String returns the target as `dmsetup table` shows it. Not for targets holding a key.
func (t Target) String() string {
	return fmt.Sprintf("%d %d %s %s", t.Start, t.Length, t.Type, t.Params)
}

// Message is a decoded command buffer: the fields of struct dm_ioctl a Client sets, and
// the targets of a table load.
type Message struct {
	Name, UUID string
	Flags      Flags
	Targets    []Target
}

// Encode builds the ioctl buffer for the message (fields in host byte order, as the kernel
// reads them). It checks the name (CheckName), the UUID's length and the target types.
func (m Message) Encode() ([]byte, error) {
	if err := CheckName(m.Name); err != nil {
		return nil, err
	}
	if len(m.UUID) >= uuidLen {
		return nil, fmt.Errorf("device-mapper uuid %q longer than %d bytes", truncate(m.UUID, 32), uuidLen-1)
	}
	size := ioctlSize
	for _, t := range m.Targets {
		if t.Type == "" || len(t.Type) >= maxTypeName || strings.ContainsAny(t.Type, " \x00") {
			return nil, fmt.Errorf("device-mapper target type %q: empty, too long or not a word", truncate(t.Type, 32))
		}
		size += targetRecordLen(t)
	}
	buf := make([]byte, size)
	ne := binary.NativeEndian
	ne.PutUint32(buf[offVersion:], versionMajor)
	ne.PutUint32(buf[offVersion+4:], versionMinor)
	ne.PutUint32(buf[offVersion+8:], versionPatch)
	ne.PutUint32(buf[offDataSize:], uint32(size))
	ne.PutUint32(buf[offDataStart:], ioctlSize)
	ne.PutUint32(buf[offTargetCount:], uint32(len(m.Targets)))
	ne.PutUint32(buf[offFlags:], uint32(m.Flags))
	copy(buf[offName:offName+nameLen-1], m.Name)
	copy(buf[offUUID:offUUID+uuidLen-1], m.UUID)
	off := ioctlSize
	for _, t := range m.Targets {
		n := targetRecordLen(t)
		rec := buf[off : off+n]
		ne.PutUint64(rec[0:], t.Start)
		ne.PutUint64(rec[8:], t.Length)
		// status (int32 at 16) is output only.
		// next: on DM_TABLE_LOAD, the distance from this record to the next one
		// (dm-ioctl.h, struct dm_target_spec).
		ne.PutUint32(rec[20:], uint32(n))
		copy(rec[24:24+maxTypeName], t.Type)
		copy(rec[targetSpecSize:], t.Params) // NUL and padding are already zero
		off += n
	}
	return buf, nil
}

// targetRecordLen is the size of a dm_target_spec with its NUL-terminated params, rounded
// up to 8 bytes so the next record is aligned (the kernel's next_target requires it).
func targetRecordLen(t Target) int {
	n := targetSpecSize + len(t.Params) + 1
	return (n + 7) &^ 7
}

// ParseMessage decodes a command buffer as Encode builds it: for fakes of the kernel and
// for tests. Target parameters alias buf.
func ParseMessage(buf []byte) (Message, error) {
	if len(buf) < ioctlSize {
		return Message{}, errors.New("dm message: shorter than struct dm_ioctl")
	}
	ne := binary.NativeEndian
	m := Message{
		Name:  cString(buf[offName : offName+nameLen]),
		UUID:  cString(buf[offUUID : offUUID+uuidLen]),
		Flags: Flags(ne.Uint32(buf[offFlags:])),
	}
	size, start := int(ne.Uint32(buf[offDataSize:])), int(ne.Uint32(buf[offDataStart:]))
	if size > len(buf) || start < ioctlSize || start > size {
		return Message{}, fmt.Errorf("dm message: data_size %d, data_start %d in a %d-byte buffer", size, start, len(buf))
	}
	off := start
	for i := uint32(0); i < ne.Uint32(buf[offTargetCount:]); i++ {
		if off+targetSpecSize > size {
			return Message{}, fmt.Errorf("dm message: target %d past data_size", i)
		}
		rec := buf[off:size]
		next := int(ne.Uint32(rec[20:]))
		if next < targetSpecSize || next%8 != 0 || next > len(rec) {
			return Message{}, fmt.Errorf("dm message: target %d: next %d", i, next)
		}
		params := rec[targetSpecSize:next]
		if j := bytes.IndexByte(params, 0); j >= 0 {
			params = params[:j]
		} else {
			return Message{}, fmt.Errorf("dm message: target %d: parameters not NUL-terminated", i)
		}
		m.Targets = append(m.Targets, Target{Start: ne.Uint64(rec[0:]), Length: ne.Uint64(rec[8:]),
			Type: cString(rec[24 : 24+maxTypeName]), Params: params})
		off += next
	}
	return m, nil
}

// PutDev writes a device number into a DM_DEV_CREATE buffer as the kernel answers it
// (huge_encode_dev): for fakes of the kernel.
func PutDev(buf []byte, major, minor uint32) {
	dev := uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12
	binary.NativeEndian.PutUint64(buf[offDev:], dev)
}

// decodeDev splits the dev field the kernel returns (huge_encode_dev: minor low byte,
// then 12 bits of major, then the rest of the minor) into major and minor.
func decodeDev(dev uint64) (major, minor uint32) {
	major = uint32((dev >> 8) & 0xfff)
	minor = uint32(dev&0xff) | uint32((dev>>12)&0xfff00)
	return major, minor
}

// CheckName applies the kernel's rules for a device-mapper name (dm-ioctl.c check_name:
// non-empty, shorter than DM_NAME_LEN, no '/') plus ours: it becomes a file name under
// /dev/mapper, so ".", "..", "control" and control characters and spaces are refused too.
func CheckName(name string) error {
	if name == "" || len(name) >= nameLen {
		return fmt.Errorf("device-mapper name %q: empty or longer than %d bytes", truncate(name, 32), nameLen-1)
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

func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// wipe zeroes b: message buffers may hold a key.
func wipe(b []byte) { clear(b) }
