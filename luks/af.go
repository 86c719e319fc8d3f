package luks

import (
	"encoding/binary"
	"fmt"
	"hash"
)

// afMerge recovers the key hidden in an anti-forensic split (LUKS1 spec §2.4, "AF-merge";
// LUKS2 keyslots with af.type "luks1" use the same algorithm): with d0 = 0,
// d(k+1) = H(d(k) XOR s(k)) for the first stripes-1 stripes, and key = d XOR s(last),
// where H is the diffusion below. src holds stripes*keyLen bytes. The caller owns and wipes
// the returned key.
func afMerge(src []byte, keyLen, stripes int, h func() hash.Hash) ([]byte, error) {
	if keyLen <= 0 || stripes <= 0 || len(src) < keyLen*stripes {
		return nil, fmt.Errorf("af-merge: %d bytes for %d stripes of %d", len(src), stripes, keyLen)
	}
	d := make([]byte, keyLen)
	hh := h()
	var digest []byte
	defer func() { wipe(digest) }()
	for i := 0; i < stripes-1; i++ {
		xorInto(d, src[i*keyLen:(i+1)*keyLen])
		digest = diffuse(d, hh, digest)
	}
	xorInto(d, src[(stripes-1)*keyLen:stripes*keyLen])
	return d, nil
}

// afSplit is the inverse of afMerge for a given choice of the first stripes-1 stripes
// (random in cryptsetup): it fills the last stripe so that the merge yields key. It exists
// for tests, which build keyslots without cryptsetup.
func afSplit(key, firstStripes []byte, stripes int, h func() hash.Hash) []byte {
	keyLen := len(key)
	out := make([]byte, keyLen*stripes)
	copy(out, firstStripes[:keyLen*(stripes-1)])
	d := make([]byte, keyLen)
	hh := h()
	var digest []byte
	for i := 0; i < stripes-1; i++ {
		xorInto(d, out[i*keyLen:(i+1)*keyLen])
		digest = diffuse(d, hh, digest)
	}
	last := out[(stripes-1)*keyLen:]
	for i := range last {
		last[i] = d[i] ^ key[i]
	}
	return out
}

// diffuse replaces d with H(0 || d[0:n]) || H(1 || d[n:2n]) || …, the block counter a
// big-endian uint32, the last block truncated (LUKS1 spec §2.4, "diffuse"). scratch is
// reused between calls to avoid an allocation per stripe.
func diffuse(d []byte, h hash.Hash, scratch []byte) []byte {
	size := h.Size()
	var iv [4]byte
	for i, off := uint32(0), 0; off < len(d); i, off = i+1, off+size {
		n := min(size, len(d)-off)
		binary.BigEndian.PutUint32(iv[:], i)
		h.Reset()
		h.Write(iv[:])
		h.Write(d[off : off+n])
		scratch = h.Sum(scratch[:0])
		copy(d[off:off+n], scratch)
	}
	h.Reset()
	return scratch
}

func xorInto(dst, src []byte) {
	for i := range dst {
		dst[i] ^= src[i]
	}
}
