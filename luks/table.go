package luks

import (
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Table is one dm-crypt target: the line `dmsetup table` would show, as data. It holds a
// copy of the volume key; Wipe it once Activate has returned. String redacts the key.
//
// The target line is (Documentation/admin-guide/device-mapper/dm-crypt.rst):
//
//	<start> <length> crypt <cipher> <key> <iv_offset> <device> <offset> [<#opt> <opt>…]
//
// with start, length, iv_offset and offset in 512-byte sectors whatever the sector size.
type Table struct {
	Length     uint64 // 512-byte sectors
	Cipher     string // kernel form: "aes-xts-plain64", "aes-cbc-essiv:sha256", "capi:…"
	Key        []byte
	IVOffset   uint64
	Device     string // path ("/dev/nbd0") or "major:minor" of the LUKS device
	Offset     uint64 // 512-byte sectors from the start of Device
	SectorSize int    // 512 (no option emitted), 1024, 2048 or 4096
	LargeIV    bool   // iv_large_sectors
	// Flags are dm-crypt feature arguments in kernel spelling (allow_discards,
	// same_cpu_crypt, submit_from_crypt_cpus, no_read_workqueue, no_write_workqueue,
	// high_priority).
	Flags    []string
	ReadOnly bool
	// UUIDPrefix is the device-mapper UUID without the "-NAME" suffix Activate appends:
	// "CRYPT-LUKS2-<uuid without dashes>", the form cryptsetup uses (lib/utils_dm.c
	// dm_prepare_uuid), so lsblk, udev rules and systemd recognise the mapping as LUKS.
	UUIDPrefix string
}

// TableOptions says how the volume is mapped.
type TableOptions struct {
	// Device is how the kernel should find the LUKS device: a path ("/dev/nbd0") or
	// "major:minor". Required.
	Device string
	// DeviceSize is its size in bytes (DeviceSize gives it); needed for a segment of
	// dynamic size, which runs to the end of the device.
	DeviceSize int64
	// Flags are activation flags in cryptsetup/crypttab spelling ("allow-discards",
	// "no-read-workqueue", …) or kernel spelling ("allow_discards"). They add to the
	// header's persistent flags. An unknown flag is an error: use DMFlag to filter.
	Flags []string
	// ReadOnly maps the device read-only.
	ReadOnly bool
}

// dmFlags maps activation flag names (cryptsetup's persistent-flag and crypttab spelling,
// LUKS2 spec §3.5 config.flags) to dm-crypt feature arguments.
var dmFlags = map[string]string{
	"allow-discards":         "allow_discards",
	"same-cpu-crypt":         "same_cpu_crypt",
	"submit-from-crypt-cpus": "submit_from_crypt_cpus",
	"no-read-workqueue":      "no_read_workqueue",
	"no-write-workqueue":     "no_write_workqueue",
	"high-priority":          "high_priority",
}

// dmFlagOrder is the order cryptsetup writes the feature arguments in (lib/libdevmapper.c
// get_dm_crypt_params); the kernel accepts any order, a stable one makes tables comparable.
var dmFlagOrder = []string{
	"allow_discards", "same_cpu_crypt", "submit_from_crypt_cpus",
	"no_read_workqueue", "no_write_workqueue", "high_priority",
}

// DMFlag translates an activation flag ("allow-discards" or "allow_discards") into its
// dm-crypt spelling, and reports whether it is one dm-crypt knows. The encrypt hook uses it
// to sort cryptdevice= options into flags and ones to warn about.
func DMFlag(name string) (string, bool) {
	if f, ok := dmFlags[name]; ok {
		return f, true
	}
	if slices.Contains(dmFlagOrder, name) {
		return name, true
	}
	return "", false
}

// Table returns the dm-crypt target for the volume's data segment with key. The returned
// Table holds its own copy of the key.
func (v *Volume) Table(key *VolumeKey, o TableOptions) (*Table, error) {
	s := &v.Segment
	if key == nil || len(key.key) == 0 {
		return nil, fmt.Errorf("luks: table: no volume key")
	}
	if err := checkTableToken("device", o.Device, 4096); err != nil {
		return nil, fmt.Errorf("luks: table: %w", err)
	}
	if err := checkTableToken("cipher", s.Cipher, maxCipherSpecLen); err != nil {
		return nil, fmt.Errorf("luks: table: %w", err)
	}
	var length int64
	if s.Dynamic {
		if o.DeviceSize <= 0 {
			return nil, fmt.Errorf("luks: table: the segment runs to the end of the device, and the device size is not known")
		}
		length = o.DeviceSize - s.Offset
		if length <= 0 {
			return nil, fmt.Errorf("luks: table: device of %d bytes ends before the data offset %d", o.DeviceSize, s.Offset)
		}
		// cryptsetup refuses a device whose data area is not a whole number of
		// encryption sectors; dm-crypt would reject the table.
		if length%int64(s.SectorSize) != 0 {
			return nil, fmt.Errorf("luks: table: data area of %d bytes is not a multiple of the %d-byte sector", length, s.SectorSize)
		}
	} else {
		length = s.Size
		if o.DeviceSize > 0 && s.Offset+s.Size > o.DeviceSize {
			return nil, fmt.Errorf("luks: table: segment %d+%d is beyond the device end %d", s.Offset, s.Size, o.DeviceSize)
		}
	}
	t := &Table{
		Length:     uint64(length) / 512,
		Cipher:     s.Cipher,
		Key:        slices.Clone(key.key),
		IVOffset:   s.IVTweak,
		Device:     o.Device,
		Offset:     uint64(s.Offset) / 512,
		SectorSize: s.SectorSize,
		LargeIV:    s.LargeIV,
		ReadOnly:   o.ReadOnly,
		UUIDPrefix: fmt.Sprintf("CRYPT-LUKS%d-%s", v.Version, strings.ReplaceAll(v.UUID, "-", "")),
	}
	want := map[string]bool{}
	// Header flags we do not map (dm-integrity's "no-journal", future ones) belong to
	// other targets or newer tools; they are not ours to refuse.
	for _, f := range v.Flags {
		if df, ok := DMFlag(f); ok {
			want[df] = true
		}
	}
	for _, f := range o.Flags {
		df, ok := DMFlag(f)
		if !ok {
			return nil, &UnsupportedError{What: "activation flag", Name: f}
		}
		want[df] = true
	}
	for _, f := range dmFlagOrder {
		if want[f] {
			t.Flags = append(t.Flags, f)
		}
	}
	return t, nil
}

// Wipe overwrites the table's copy of the key.
func (t *Table) Wipe() {
	wipe(t.Key)
	t.Key = nil
}

// appendParams appends the dm-crypt target parameters (everything after "crypt") to dst.
// The result holds the key in hex: the caller wipes it.
func (t *Table) appendParams(dst []byte) []byte {
	dst = append(dst, t.Cipher...)
	dst = append(dst, ' ')
	dst = hex.AppendEncode(dst, t.Key)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, t.IVOffset, 10)
	dst = append(dst, ' ')
	dst = append(dst, t.Device...)
	dst = append(dst, ' ')
	dst = strconv.AppendUint(dst, t.Offset, 10)
	opts := slices.Clone(t.Flags)
	if t.LargeIV && t.SectorSize > 512 {
		opts = append(opts, "iv_large_sectors")
	}
	if t.SectorSize > 512 {
		opts = append(opts, "sector_size:"+strconv.Itoa(t.SectorSize))
	}
	if len(opts) > 0 {
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, int64(len(opts)), 10)
		for _, o := range opts {
			dst = append(dst, ' ')
			dst = append(dst, o...)
		}
	}
	return dst
}

// String renders the table line as `dmsetup table` would, with the key replaced by a
// placeholder of the same length, so it is safe to log.
func (t *Table) String() string {
	red := *t
	red.Key = nil
	line := fmt.Sprintf("0 %d crypt ", t.Length)
	p := string(red.appendParams(nil))
	// appendParams wrote an empty key between the cipher and the IV offset: put the
	// placeholder there.
	cipher, rest, _ := strings.Cut(p, " ")
	return line + cipher + " <" + strconv.Itoa(len(t.Key)) + "-byte key redacted>" + rest
}

// validate checks what Activate sends to the kernel.
func (t *Table) validate() error {
	if t.Length == 0 {
		return fmt.Errorf("table of length 0")
	}
	if len(t.Key) == 0 {
		return fmt.Errorf("table without key (wiped already?)")
	}
	if err := checkTableToken("cipher", t.Cipher, maxCipherSpecLen); err != nil {
		return err
	}
	if err := checkTableToken("device", t.Device, 4096); err != nil {
		return err
	}
	if !validSectorSize(t.SectorSize) {
		return fmt.Errorf("sector size %d", t.SectorSize)
	}
	for _, f := range t.Flags {
		if !slices.Contains(dmFlagOrder, f) {
			return &UnsupportedError{What: "dm-crypt flag", Name: f}
		}
	}
	return nil
}

// DeviceSize returns the size in bytes of a block device or file opened as f, by seeking
// to its end (Linux reports a block device's size that way, as BLKGETSIZE64 does).
func DeviceSize(f io.Seeker) (int64, error) {
	cur, err := f.Seek(0, io.SeekCurrent)
	if err != nil {
		return 0, fmt.Errorf("luks: device size: %w", err)
	}
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return 0, fmt.Errorf("luks: device size: %w", err)
	}
	if _, err := f.Seek(cur, io.SeekStart); err != nil {
		return 0, fmt.Errorf("luks: device size: %w", err)
	}
	return end, nil
}
