package luks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Priority is a LUKS2 keyslot priority (LUKS2 spec §3.2, keyslot "priority"): which
// keyslots Unlock tries when no keyslot is named, and in which order.
type Priority int

// Keyslot priorities. LUKS1 keyslots are all PriorityNormal.
const (
	PriorityIgnore Priority = 0 // tried only when named (UnlockOptions.Keyslot)
	PriorityNormal Priority = 1 // the default
	PriorityHigh   Priority = 2 // tried before the normal ones
)

// String returns "ignore", "normal" or "high" (`cryptsetup config --priority` calls high
// "prefer").
func (p Priority) String() string {
	switch p {
	case PriorityIgnore:
		return "ignore"
	case PriorityNormal:
		return "normal"
	case PriorityHigh:
		return "high"
	}
	return fmt.Sprintf("priority(%d)", int(p))
}

// KDF is a keyslot's key derivation function with its parameters.
type KDF struct {
	Type       string // KDFPBKDF2, KDFArgon2i or KDFArgon2id
	Hash       string // PBKDF2: the HMAC hash (sha1, sha256, sha512, …)
	Iterations uint32 // PBKDF2: iteration count
	Time       uint32 // Argon2: passes
	Memory     uint32 // Argon2: memory in KiB
	CPUs       uint32 // Argon2: lanes, also the threads used
	Salt       []byte
}

// Keyslot is one active keyslot: how to derive its key from a passphrase and where the
// encrypted, anti-forensically split volume key lies.
type Keyslot struct {
	ID       int
	Type     string // "luks2" (LUKS2 keyslot type; "luks1" for LUKS1 keyslots)
	Priority Priority
	KeySize  int // bytes of the volume key this slot stores
	KDF      KDF
	Stripes  int    // anti-forensic stripes (4000 as cryptsetup writes)
	AFHash   string // hash used by the AF diffusion
	// The keyslot area: bytes from the start of the device, the cipher that encrypts it
	// (IV counted in 512-byte sectors from the start of the area) and that cipher's key size.
	AreaOffset  int64
	AreaSize    int64
	AreaCipher  string
	AreaKeySize int
}

// afLength is the number of bytes of the keyslot area holding the split key, rounded up to
// whole 512-byte sectors as the area is encrypted sector by sector.
func (k *Keyslot) afLength() int64 {
	n := int64(k.KeySize) * int64(k.Stripes)
	return (n + 511) / 512 * 512
}

// Segment is the encrypted data area of the volume.
type Segment struct {
	ID         int    // LUKS2 segment id (0 for LUKS1)
	Offset     int64  // bytes from the start of the device
	Size       int64  // bytes; meaningless when Dynamic
	Dynamic    bool   // the segment runs to the end of the device
	IVTweak    uint64 // dm-crypt <iv_offset>, in 512-byte sectors
	Cipher     string // as in the header: "aes-xts-plain64", "capi:xts(aes)-plain64", …
	SectorSize int    // encryption unit: 512 (always for LUKS1), 1024, 2048 or 4096
	// LargeIV says the IV counts sectors of SectorSize instead of 512 bytes (dm-crypt
	// iv_large_sectors). It is false for every LUKS1 and LUKS2 segment (LUKS2 counts IVs in
	// 512-byte sectors even with 4096-byte sectors); it exists for callers describing
	// other layouts (BitLocker, plain --iv-large-sectors) with the same cipher and table.
	LargeIV bool
}

// Digest verifies a candidate volume key: PBKDF2 of the key with Salt and Iterations must
// equal Value (LUKS1 mk-digest, LUKS2 digest type "pbkdf2").
type Digest struct {
	ID         int
	Type       string // "pbkdf2"
	Hash       string
	Iterations uint32
	Salt       []byte
	Value      []byte
	Keyslots   []int // keyslots whose key this digest verifies
	Segments   []int // segments that key encrypts
}

// Volume is a parsed LUKS header. Open returns it; Unlock derives the volume key from it,
// Table describes the dm-crypt mapping for it.
type Volume struct {
	Version   int    // 1 or 2
	UUID      string // as in the header, with dashes
	Label     string // LUKS2 label ("" for LUKS1)
	Subsystem string // LUKS2 subsystem
	Keyslots  []Keyslot
	Segment   Segment // the data segment
	Digests   []Digest
	// Flags are the persistent activation flags of a LUKS2 header (config.flags:
	// "allow-discards", "no-read-workqueue", …); Table applies them.
	Flags []string
	// HeaderCopy says which header copy was used: "primary", "secondary" (the primary
	// LUKS2 copy was unusable or older) or "luks1".
	HeaderCopy string
	// HeaderProblem is the reason the other LUKS2 copy was not used, nil when both are
	// valid and identical in sequence number. The boot hook may log it as a warning.
	HeaderProblem error

	dev io.ReaderAt
}

// LUKS magic numbers (LUKS1 spec §2.4; LUKS2 spec §2.1: the secondary header reverses the
// first four bytes so blkid does not find it at offset 0).
var (
	magicPrimary   = []byte{'L', 'U', 'K', 'S', 0xba, 0xbe}
	magicSecondary = []byte{'S', 'K', 'U', 'L', 0xba, 0xbe}
)

// Open reads and validates the LUKS header of dev (a block device or an image file): LUKS1,
// or LUKS2 with both header copies checked and the valid (or newer) one used. dev is kept
// for Unlock to read keyslot areas; Open itself reads at most a few MiB.
func Open(dev io.ReaderAt) (*Volume, error) {
	var hdr [16]byte
	n, err := dev.ReadAt(hdr[:], 0)
	if n < len(hdr) {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, ErrNotLUKS
		}
		return nil, fmt.Errorf("luks: reading header: %w", err)
	}
	var v *Volume
	version := binary.BigEndian.Uint16(hdr[6:8])
	switch {
	case bytes.Equal(hdr[:6], magicPrimary) && version == 1:
		v, err = parseLUKS1(dev)
	case bytes.Equal(hdr[:6], magicPrimary) && version != 2:
		return nil, &UnsupportedError{What: "LUKS version", Name: fmt.Sprint(version)}
	default:
		// LUKS2, or no valid magic at 0 at all: a LUKS2 device whose primary header was
		// damaged is still found by its secondary copy (LUKS2 spec §2.2).
		v, err = openLUKS2(dev)
	}
	if err != nil {
		return nil, err
	}
	v.dev = dev
	return v, nil
}

// Keyslot returns the active keyslot with the given id.
func (v *Volume) Keyslot(id int) (*Keyslot, bool) {
	for i := range v.Keyslots {
		if v.Keyslots[i].ID == id {
			return &v.Keyslots[i], true
		}
	}
	return nil, false
}

// readAt reads exactly len(b) bytes at off, turning a short read into an error that names
// what was being read.
func readAt(dev io.ReaderAt, b []byte, off int64, what string) error {
	n, err := dev.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading %s (%d bytes at %d): %w", what, len(b), off, err)
}

// cString returns the NUL-terminated string at the start of b.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}
