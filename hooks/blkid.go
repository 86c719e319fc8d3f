package hooks

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode/utf16"
)

// Identity is what a block device's first bytes say about it: what blkid reports for the
// root= and cryptdevice= forms UUID=, LABEL=, PARTUUID= and PARTLABEL=.
type Identity struct {
	Type  string // ext4, xfs, btrfs, vfat, crypto_LUKS…; empty when unknown
	UUID  string
	Label string
}

// probeSize is how many bytes of a device Identify needs (btrfs's superblock is at 64 KiB).
const probeSize = 0x10000 + 0x1000

// Identify reads the filesystem (or LUKS) type, UUID and label from the start of a device.
func Identify(b []byte) Identity {
	le16 := func(off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
	switch {
	case len(b) >= 1024+0x88 && le16(1024+0x38) == 0xEF53:
		return Identity{Type: "ext4", UUID: formatUUID(b[1024+0x68 : 1024+0x78]), Label: cstring(b[1024+0x78 : 1024+0x88])}
	case len(b) >= 120 && string(b[0:4]) == "XFSB":
		return Identity{Type: "xfs", UUID: formatUUID(b[32:48]), Label: cstring(b[108:120])}
	case len(b) >= 0x10000+0x12b+256 && string(b[0x10040:0x10048]) == "_BHRfS_M":
		sb := b[0x10000:]
		return Identity{Type: "btrfs", UUID: formatUUID(sb[0x20:0x30]), Label: cstring(sb[0x12b : 0x12b+256])}
	case len(b) >= 208 && string(b[0:6]) == "LUKS\xba\xbe":
		// LUKS1 and LUKS2 keep the UUID as text at the same offset (cryptsetup's format docs).
		label := ""
		if binary.BigEndian.Uint16(b[6:]) == 2 {
			label = cstring(b[24:72])
		}
		return Identity{Type: "crypto_LUKS", UUID: cstring(b[168:208]), Label: label}
	case len(b) >= 4 && binary.LittleEndian.Uint32(b) == 0x73717368:
		return Identity{Type: "squashfs"}
	case len(b) >= 0x5a && string(b[0x52:0x5a]) == "FAT32   ":
		return Identity{Type: "vfat", UUID: fatSerial(b[0x43:0x47]), Label: strings.TrimRight(string(b[0x47:0x52]), " ")}
	case len(b) >= 0x3e && (string(b[0x36:0x3e]) == "FAT16   " || string(b[0x36:0x3e]) == "FAT12   "):
		return Identity{Type: "vfat", UUID: fatSerial(b[0x27:0x2b]), Label: strings.TrimRight(string(b[0x2b:0x36]), " ")}
	}
	return Identity{}
}

// Partition is one entry of a partition table.
type Partition struct {
	Number int    // 1-based, as in /dev/nbd0pN
	UUID   string // PARTUUID: GPT's unique partition GUID, or MBR's SIGNATURE-NN
	Label  string // PARTLABEL (GPT only)
}

// Partitions reads an MBR or GPT partition table from the start of a disk. sector is the
// logical sector size; b must hold at least the first 34 sectors for GPT.
func Partitions(b []byte, sector int) []Partition {
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xAA {
		return nil
	}
	mbr := b[446:510]
	if mbr[4] == 0xEE && len(b) >= 2*sector {
		return gptPartitions(b, sector)
	}
	sig := binary.LittleEndian.Uint32(b[440:])
	var out []Partition
	for i := 0; i < 4; i++ {
		e := mbr[16*i:]
		if e[4] == 0 {
			continue
		}
		out = append(out, Partition{Number: i + 1, UUID: fmt.Sprintf("%08x-%02x", sig, i+1)})
	}
	return out
}

func gptPartitions(b []byte, sector int) []Partition {
	h := b[sector:]
	if len(h) < 92 || string(h[0:8]) != "EFI PART" {
		return nil
	}
	lba := binary.LittleEndian.Uint64(h[72:])
	n := binary.LittleEndian.Uint32(h[80:])
	size := binary.LittleEndian.Uint32(h[84:])
	if size < 128 || size > 4096 || n > 1024 || lba > uint64(len(b)/sector) {
		return nil
	}
	var out []Partition
	for i := uint32(0); i < n; i++ {
		off := int(lba)*sector + int(i*size)
		if off+128 > len(b) {
			break
		}
		e := b[off : off+128]
		if allZero(e[0:16]) {
			continue
		}
		name := make([]uint16, 36)
		for j := range name {
			name[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		out = append(out, Partition{Number: int(i) + 1, UUID: formatGUID(e[16:32]), Label: strings.TrimRight(string(utf16.Decode(name)), "\x00")})
	}
	return out
}

// formatUUID formats 16 big-endian bytes as 8-4-4-4-12 hex (filesystem UUIDs).
func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// formatGUID formats a GPT GUID, whose first three fields are little-endian.
func formatGUID(b []byte) string {
	return fmt.Sprintf("%08x-%04x-%04x-%x-%x", binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint16(b[4:]),
		binary.LittleEndian.Uint16(b[6:]), b[8:10], b[10:16])
}

func fatSerial(b []byte) string {
	return fmt.Sprintf("%04X-%04X", binary.LittleEndian.Uint16(b[2:]), binary.LittleEndian.Uint16(b))
}

func cstring(b []byte) string {
	if i := strings.IndexByte(string(b), 0); i >= 0 {
		b = b[:i]
	}
	return strings.TrimSpace(string(b))
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// Matches reports whether a device with this identity and partition entry answers to spec
// (UUID=…, LABEL=…, PARTUUID=…, PARTLABEL=…). UUIDs compare case-insensitively.
func Matches(spec string, id Identity, part *Partition) bool {
	key, val, ok := strings.Cut(spec, "=")
	if !ok || val == "" {
		return false
	}
	switch strings.ToUpper(key) {
	case "UUID":
		return id.UUID != "" && strings.EqualFold(id.UUID, val)
	case "LABEL":
		return id.Label != "" && id.Label == val
	case "PARTUUID":
		return part != nil && strings.EqualFold(part.UUID, val)
	case "PARTLABEL":
		return part != nil && part.Label != "" && part.Label == val
	}
	return false
}

// readHead reads up to n bytes from the start of a device or file.
func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	m, err := io.ReadFull(f, b)
	if err != nil && err != io.ErrUnexpectedEOF {
		return nil, err
	}
	return b[:m], nil
}
