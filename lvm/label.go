package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
)

// The on-disk layout of an LVM2 physical volume (lib/label/label.h,
// lib/format_text/layout.h), little-endian throughout:
//
//	one of sectors 0–3 (normally 1): the label
//	  label_header  id "LABELONE", sector_xl (this sector), crc_xl (bytes 20–511),
//	                offset_xl (to the pv_header, 32), type "LVM2 001"
//	  pv_header     pv_uuid[32], device_size_xl (bytes), then two lists of
//	                disk_locn {offset, size} (bytes), each ended by offset 0:
//	                data areas, then metadata areas; then an optional extension
//	metadata area (normally at 4096, ~1 MiB; optionally a second one near the end):
//	  mda_header    checksum_xl (bytes 4–511), magic " LVM2 x[5A%r0N*>", version 1,
//	                start (this area's offset), size, raw_locn[] {offset (from the area's
//	                start), size, checksum, flags}: [0] is the committed metadata
//	  text          a circular buffer after the 512-byte header: the text starts at
//	                raw_locn.offset and, when it runs past the end of the area,
//	                continues right after the header.
const (
	sectorSize              = 512
	labelScanSectors        = 4
	labelID                 = "LABELONE"
	labelType               = "LVM2 001"
	mdaMagic                = " LVM2 x[5A%r0N*>"
	mdaHeaderSize           = 512
	rawLocnIgnored          = 1 // RAW_LOCN_IGNORED: metadata area not used (vgmetadatacopies)
	initialCRC       uint32 = 0xf597a6cf
	// maxMetadataText bounds one metadata text: LVM's default area is 1 MiB; a hostile
	// header must not make us allocate more than this.
	maxMetadataText = 64 << 20
)

// ErrNoLabel means a device has no LVM2 label in its first four sectors: it is not a
// physical volume.
var ErrNoLabel = errors.New("no LVM2 label in the first four sectors")

// FormatError is an on-disk structure of a physical volume that is damaged or not what
// LVM2 writes.
type FormatError struct {
	// Where names the structure: "label", "pv_header", "metadata area at 4096".
	Where string
	Msg   string
}

func (e *FormatError) Error() string { return "lvm: " + e.Where + ": " + e.Msg }

// Area is a region of a physical volume, in bytes from its start; Size 0 means "to the
// end of the device" for a data area.
type Area struct {
	Offset, Size uint64
}

// PV is a physical volume read from its device: its label and the newest metadata of
// its metadata areas.
type PV struct {
	// UUID is the PV's id with dashes, as the metadata writes it.
	UUID string
	// Device is the path the PV was read from (ReadPVFile), for the tables.
	Device string
	// Size is the device size the label records, in bytes.
	Size uint64
	// LabelSector is the sector the label was found in (0–3).
	LabelSector int
	// DataAreas and MetadataAreas are the PV header's lists.
	DataAreas, MetadataAreas []Area
	// VG is the newest metadata in the PV's metadata areas: nil for a PV created with no
	// metadata copy (pvcreate --metadatacopies 0) or not in a volume group yet.
	VG *VG
	// wrapped records that the metadata text ran around the circular buffer (for tests).
	wrapped bool
}

// crc is LVM2's checksum (lib/misc/crc.c calc_crc): the IEEE CRC-32, reflected, started
// from initialCRC and without the final inversion.
func crc(b []byte) uint32 { return ^crc32.Update(^initialCRC, crc32.IEEETable, b) }

// ReadPVFile reads the physical volume on the device or image file at path and records
// path as its Device.
func ReadPVFile(path string) (*PV, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pv, err := ReadPV(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	pv.Device = path
	return pv, nil
}

// ReadPV reads the label of the physical volume r and the metadata of its metadata
// areas. It returns ErrNoLabel for a device that is not a PV. Every length read from the
// device is bounded before it is used: a hostile device cannot make ReadPV allocate more
// than a few times maxMetadataText.
func ReadPV(r io.ReaderAt) (*PV, error) {
	buf := make([]byte, labelScanSectors*sectorSize)
	n, err := r.ReadAt(buf, 0)
	if n < len(buf) && err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("lvm: reading the label: %w", err)
	}
	buf = buf[:n-n%sectorSize]
	pv := &PV{LabelSector: -1}
	var sec []byte
	for i := 0; i*sectorSize < len(buf); i++ {
		s := buf[i*sectorSize : (i+1)*sectorSize]
		if string(s[:8]) != labelID {
			continue
		}
		// LVM takes the first label whose sector number and checksum are right
		// (lib/label/label.c _find_lvm_header).
		if binary.LittleEndian.Uint64(s[8:]) != uint64(i) || binary.LittleEndian.Uint32(s[16:]) != crc(s[20:]) {
			continue
		}
		pv.LabelSector, sec = i, s
		break
	}
	if sec == nil {
		return nil, ErrNoLabel
	}
	if string(sec[24:32]) != labelType {
		return nil, &FormatError{Where: "label", Msg: fmt.Sprintf("type %q, want %q", bytes.TrimRight(sec[24:32], "\x00"), labelType)}
	}
	off := int(binary.LittleEndian.Uint32(sec[20:]))
	if off < 32 || off+uuidLen+8+4*16 > sectorSize {
		return nil, &FormatError{Where: "label", Msg: fmt.Sprintf("pv_header offset %d", off)}
	}
	h := sec[off:]
	id := string(h[:uuidLen])
	if !validID(id) {
		return nil, &FormatError{Where: "pv_header", Msg: fmt.Sprintf("PV uuid %q", id)}
	}
	pv.UUID = formatUUID(id)
	pv.Size = binary.LittleEndian.Uint64(h[uuidLen:])
	rest := h[uuidLen+8:]
	for _, list := range []*[]Area{&pv.DataAreas, &pv.MetadataAreas} {
		for {
			if len(rest) < 16 {
				return nil, &FormatError{Where: "pv_header", Msg: "area lists run past the label sector"}
			}
			a := Area{Offset: binary.LittleEndian.Uint64(rest), Size: binary.LittleEndian.Uint64(rest[8:])}
			rest = rest[16:]
			if a.Offset == 0 {
				break
			}
			*list = append(*list, a)
		}
	}
	var firstErr error
	for _, a := range pv.MetadataAreas {
		vg, wrapped, err := readMetadataArea(r, a)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if vg == nil {
			continue
		}
		if pv.VG != nil && pv.VG.UUID != vg.UUID {
			return nil, &FormatError{Where: "metadata areas", Msg: fmt.Sprintf("one PV, two volume groups (%s, %s)", pv.VG.Name, vg.Name)}
		}
		if pv.VG == nil || vg.Seqno > pv.VG.Seqno {
			pv.VG, pv.wrapped = vg, wrapped
		}
	}
	if pv.VG == nil && firstErr != nil {
		// No area gave metadata, and one is damaged: saying "not in a VG" would hide it.
		return nil, firstErr
	}
	return pv, nil
}

// validID reports whether id is 32 characters of LVM's id alphabet (lib/uuid/uuid.c).
func validID(id string) bool {
	if len(id) != uuidLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '!' || c == '#') {
			return false
		}
	}
	return true
}

// readMetadataArea reads the metadata area a: its header and, when it holds committed
// metadata, the text, parsed. It returns a nil VG for an area that is empty or ignored.
func readMetadataArea(r io.ReaderAt, a Area) (vg *VG, wrapped bool, err error) {
	where := fmt.Sprintf("metadata area at %d", a.Offset)
	if a.Size <= mdaHeaderSize || a.Offset+a.Size < a.Offset {
		return nil, false, &FormatError{Where: where, Msg: fmt.Sprintf("size %d", a.Size)}
	}
	h := make([]byte, mdaHeaderSize)
	if _, err := r.ReadAt(h, int64(a.Offset)); err != nil {
		return nil, false, fmt.Errorf("lvm: %s: %w", where, err)
	}
	switch {
	case binary.LittleEndian.Uint32(h) != crc(h[4:]):
		return nil, false, &FormatError{Where: where, Msg: "header checksum mismatch"}
	case string(h[4:20]) != mdaMagic:
		return nil, false, &FormatError{Where: where, Msg: "no metadata area magic"}
	case binary.LittleEndian.Uint32(h[20:]) != 1:
		return nil, false, &FormatError{Where: where, Msg: fmt.Sprintf("version %d, want 1", binary.LittleEndian.Uint32(h[20:]))}
	case binary.LittleEndian.Uint64(h[24:]) != a.Offset || binary.LittleEndian.Uint64(h[32:]) != a.Size:
		return nil, false, &FormatError{Where: where, Msg: "header start or size differs from the PV header's"}
	}
	// raw_locn[0] is the committed metadata (raw_locn[1], when set, is a pre-commit
	// that was never committed).
	loc := h[40:64]
	off, size := binary.LittleEndian.Uint64(loc), binary.LittleEndian.Uint64(loc[8:])
	sum, flags := binary.LittleEndian.Uint32(loc[16:]), binary.LittleEndian.Uint32(loc[20:])
	if flags&rawLocnIgnored != 0 || (off == 0 && size == 0) {
		return nil, false, nil
	}
	if off < mdaHeaderSize || off >= a.Size || size == 0 || size > a.Size-mdaHeaderSize || size > maxMetadataText {
		return nil, false, &FormatError{Where: where, Msg: fmt.Sprintf("metadata at %d, %d bytes, in an area of %d", off, size, a.Size)}
	}
	text := make([]byte, size)
	first := min(size, a.Size-off)
	if _, err := r.ReadAt(text[:first], int64(a.Offset+off)); err != nil {
		return nil, false, fmt.Errorf("lvm: %s: %w", where, err)
	}
	if first < size {
		// The circular buffer wrapped: the rest follows the header.
		wrapped = true
		if _, err := r.ReadAt(text[first:], int64(a.Offset+mdaHeaderSize)); err != nil {
			return nil, false, fmt.Errorf("lvm: %s: %w", where, err)
		}
	}
	if crc(text) != sum {
		return nil, false, &FormatError{Where: where, Msg: "metadata checksum mismatch"}
	}
	vg, err = ParseMetadata(text)
	if err != nil {
		return nil, false, fmt.Errorf("lvm: %s: %w", where, err)
	}
	return vg, wrapped, nil
}
