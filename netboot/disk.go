package netboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Partition is one primary partition of an image's MBR or GPT.
type Partition struct {
	// Number is 1-based, as the kernel names it: /dev/nbd0pN.
	Number int
	// Start and Size are in bytes.
	Start, Size int64
}

// PartitionError says why a partition table cannot be used.
type PartitionError struct {
	Table string // "MBR", "GPT"
	Err   error
}

func (e *PartitionError) Error() string { return e.Table + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *PartitionError) Unwrap() error { return e.Err }

// Bounds on a GPT's partition entry array (UEFI 2.10 section 5.3: 128 entries of 128 bytes
// is the usual array; the entry size is a power of two from 128).
const (
	maxGPTEntries   = 1024
	maxGPTEntrySize = 4096
	maxGPTArray     = 1 << 20
)

// mbrExtended are the MBR types of extended partitions: containers of logical partitions,
// which are not read (a root or /boot on a logical partition needs --boot-source).
var mbrExtended = map[byte]bool{0x05: true, 0x0F: true, 0x85: true}

// Partitions reads the partition table at the start of an image of size bytes: GPT when the
// MBR is protective (type 0xEE), else the four primary MBR entries. An image without a
// table (no 0x55AA signature) has none: nil, nil. Entries outside the image are errors.
func Partitions(r io.ReaderAt, size int64) ([]Partition, error) {
	mbr := make([]byte, 512)
	if _, err := r.ReadAt(mbr, 0); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("read the MBR: %w", err)
	}
	if mbr[510] != 0x55 || mbr[511] != 0xAA {
		return nil, nil
	}
	var out []Partition
	for i := 0; i < 4; i++ {
		e := mbr[446+16*i : 462+16*i]
		typ := e[4]
		if typ == 0xEE {
			return gpt(r, size)
		}
		start := int64(binary.LittleEndian.Uint32(e[8:])) * 512
		n := int64(binary.LittleEndian.Uint32(e[12:])) * 512
		if typ == 0 || n == 0 || mbrExtended[typ] {
			continue
		}
		if start == 0 || start+n > size {
			return nil, &PartitionError{"MBR", fmt.Errorf("partition %d at byte %d+%d lies outside the image of %d bytes", i+1, start, n, size)}
		}
		out = append(out, Partition{Number: i + 1, Start: start, Size: n})
	}
	return out, nil
}

// gpt reads a GUID partition table (UEFI 2.10 section 5.3.2): the header at LBA 1 with its
// CRC32, then the entry array with its CRC32. The logical block size is 512 or 4096 bytes:
// whichever has the "EFI PART" signature at LBA 1.
func gpt(r io.ReaderAt, size int64) ([]Partition, error) {
	fail := func(format string, args ...any) ([]Partition, error) {
		return nil, &PartitionError{"GPT", fmt.Errorf(format, args...)}
	}
	for _, lb := range []int64{512, 4096} {
		h := make([]byte, 512)
		if _, err := r.ReadAt(h, lb); err != nil {
			continue
		}
		if string(h[0:8]) != "EFI PART" {
			continue
		}
		hsize := binary.LittleEndian.Uint32(h[12:])
		if hsize < 92 || hsize > 512 {
			return fail("header size %d", hsize)
		}
		sum := binary.LittleEndian.Uint32(h[16:])
		hc := bytes.Clone(h[:hsize])
		clear(hc[16:20])
		if crc32.ChecksumIEEE(hc) != sum {
			return fail("header checksum mismatch")
		}
		arrayLBA := int64(binary.LittleEndian.Uint64(h[72:]))
		count := binary.LittleEndian.Uint32(h[80:])
		esize := binary.LittleEndian.Uint32(h[84:])
		if count > maxGPTEntries || esize < 128 || esize > maxGPTEntrySize || esize&(esize-1) != 0 || int64(count)*int64(esize) > maxGPTArray {
			return fail("%d entries of %d bytes", count, esize)
		}
		if arrayLBA < 2 || arrayLBA > size/lb {
			return fail("entry array at LBA %d", arrayLBA)
		}
		array := make([]byte, int(count)*int(esize))
		if _, err := r.ReadAt(array, arrayLBA*lb); err != nil {
			return fail("read the entry array: %v", err)
		}
		if crc32.ChecksumIEEE(array) != binary.LittleEndian.Uint32(h[88:]) {
			return fail("entry array checksum mismatch")
		}
		var out []Partition
		for i := 0; i < int(count); i++ {
			e := array[i*int(esize):]
			if bytes.Equal(e[0:16], make([]byte, 16)) {
				continue // unused entry: the type GUID is zero
			}
			first := int64(binary.LittleEndian.Uint64(e[32:]))
			last := int64(binary.LittleEndian.Uint64(e[40:]))
			if first <= 0 || last < first || last >= size/lb {
				return fail("partition %d spans LBA %d-%d of an image of %d blocks", i+1, first, last, size/lb)
			}
			out = append(out, Partition{Number: i + 1, Start: first * lb, Size: (last - first + 1) * lb})
		}
		return out, nil
	}
	return fail("protective MBR without a GPT header at LBA 1")
}
