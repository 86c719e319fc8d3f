package luks

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// LUKS1 on-disk layout (LUKS1 On-Disk Format Specification 1.2.3, §2.4, figure 1): a
// 592-byte big-endian header followed by eight 48-byte keyslot descriptors.
const (
	luks1HeaderSize   = 592
	luks1NumKeyslots  = 8
	luks1KeyActive    = 0x00AC71F3
	luks1KeyDisabled  = 0x0000DEAD
	luks1DigestSize   = 20
	luks1SaltSize     = 32
	luks1KeyslotsBase = 208 // offset of keyslot 0 in the header
	luks1KeyslotSize  = 48
)

// Bounds that keep a hostile header from making us allocate much: the AF material of one
// keyslot is KeySize*Stripes bytes. cryptsetup writes 4000 stripes and keys of at most 64
// bytes (512 bits); LUKS2 allows keys up to 512 bytes for wrapped/composite ciphers.
const (
	maxKeySize = 512
	maxStripes = 16000
)

// parseLUKS1 reads the LUKS1 header at offset 0 of dev.
func parseLUKS1(dev io.ReaderAt) (*Volume, error) {
	var h [luks1HeaderSize]byte
	if err := readAt(dev, h[:], 0, "LUKS1 header"); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, &CorruptHeaderError{Copy: "luks1", Offset: 0, Err: fmt.Errorf("truncated: %w", err)}
		}
		return nil, fmt.Errorf("luks: %w", err)
	}
	v, err := decodeLUKS1(h[:])
	if err != nil {
		return nil, &CorruptHeaderError{Copy: "luks1", Offset: 0, Err: err}
	}
	return v, nil
}

// decodeLUKS1 validates and decodes a LUKS1 header (the first 592 bytes of the device).
func decodeLUKS1(h []byte) (*Volume, error) {
	if len(h) < luks1HeaderSize {
		return nil, fmt.Errorf("header of %d bytes, want %d", len(h), luks1HeaderSize)
	}
	be := binary.BigEndian
	if string(h[:6]) != string(magicPrimary) || be.Uint16(h[6:8]) != 1 {
		return nil, fmt.Errorf("no LUKS1 magic/version")
	}
	cipherName := cString(h[8:40])
	cipherMode := cString(h[40:72])
	hashSpec := cString(h[72:104])
	payloadOffset := be.Uint32(h[104:108]) // 512-byte sectors
	keyBytes := int(be.Uint32(h[108:112]))
	mkDigest := append([]byte(nil), h[112:132]...)
	mkSalt := append([]byte(nil), h[132:164]...)
	mkIter := be.Uint32(h[164:168])
	uuid := cString(h[168:208])

	if keyBytes <= 0 || keyBytes > maxKeySize {
		return nil, fmt.Errorf("key-bytes %d (want 1..%d)", keyBytes, maxKeySize)
	}
	spec := cipherName + "-" + cipherMode
	if err := checkTableToken("cipher", spec, maxCipherSpecLen); err != nil {
		return nil, err
	}
	if err := checkTableToken("hash-spec", hashSpec, 32); err != nil {
		return nil, err
	}
	if mkIter == 0 {
		return nil, fmt.Errorf("mk-digest-iter is 0")
	}

	v := &Volume{
		Version:    1,
		UUID:       uuid,
		HeaderCopy: "luks1",
		Segment: Segment{
			Offset:     int64(payloadOffset) * 512,
			Dynamic:    true,
			Cipher:     spec,
			SectorSize: 512,
		},
	}
	digest := Digest{
		Type: "pbkdf2", Hash: hashSpec, Iterations: mkIter,
		Salt: mkSalt, Value: mkDigest, Segments: []int{0},
	}
	for i := 0; i < luks1NumKeyslots; i++ {
		ks := h[luks1KeyslotsBase+i*luks1KeyslotSize:][:luks1KeyslotSize]
		switch active := be.Uint32(ks[0:4]); active {
		case luks1KeyDisabled:
			continue
		case luks1KeyActive:
		default:
			return nil, fmt.Errorf("keyslot %d: state %#08x is neither active nor disabled", i, active)
		}
		iter := be.Uint32(ks[4:8])
		salt := append([]byte(nil), ks[8:40]...)
		offset := be.Uint32(ks[40:44]) // 512-byte sectors
		stripes := int(be.Uint32(ks[44:48]))
		if iter == 0 {
			return nil, fmt.Errorf("keyslot %d: 0 iterations", i)
		}
		if stripes <= 0 || stripes > maxStripes {
			return nil, fmt.Errorf("keyslot %d: %d stripes (want 1..%d)", i, stripes, maxStripes)
		}
		k := Keyslot{
			ID:       i,
			Type:     "luks1",
			Priority: PriorityNormal,
			KeySize:  keyBytes,
			KDF:      KDF{Type: KDFPBKDF2, Hash: hashSpec, Iterations: iter, Salt: salt},
			Stripes:  stripes,
			AFHash:   hashSpec,
			// LUKS1 encrypts keyslot material with the volume's own cipher and a key of
			// key-bytes (LUKS1 spec §2.4, "Key material").
			AreaOffset:  int64(offset) * 512,
			AreaCipher:  spec,
			AreaKeySize: keyBytes,
		}
		k.AreaSize = k.afLength()
		if k.AreaOffset < luks1HeaderSize {
			return nil, fmt.Errorf("keyslot %d: area at %d overlaps the header", i, k.AreaOffset)
		}
		v.Keyslots = append(v.Keyslots, k)
		digest.Keyslots = append(digest.Keyslots, i)
	}
	v.Digests = []Digest{digest}
	return v, nil
}
