package luks

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"strings"
)

// cipherSpec is a dm-crypt cipher specification split into its parts: "aes-xts-plain64" is
// {aes, xts, plain64, ""}, "aes-cbc-essiv:sha256" is {aes, cbc, essiv, sha256}. The kernel
// crypto API form "capi:xts(aes)-plain64" parses to the same value (dm-crypt.rst, "Cipher").
type cipherSpec struct {
	cipher, mode, iv, ivHash string
}

// maxCipherSpecLen bounds a cipher string from a header (cryptsetup's own limit for
// cipher+mode is 32+32 bytes in LUKS1; LUKS2 has no limit, the kernel caps at 128).
const maxCipherSpecLen = 128

// parseCipherSpec splits a dm-crypt cipher string. It accepts what dm-crypt accepts in
// either syntax, and checks the string cannot break a table line (no spaces or controls).
func parseCipherSpec(spec string) (cipherSpec, error) {
	if err := checkTableToken("cipher", spec, maxCipherSpecLen); err != nil {
		return cipherSpec{}, err
	}
	var c cipherSpec
	var ivPart string
	if rest, ok := strings.CutPrefix(spec, "capi:"); ok {
		// capi:mode(cipher)-iv[:hash]
		capi, iv, _ := strings.Cut(rest, "-")
		mode, inner, ok := strings.Cut(capi, "(")
		if !ok || !strings.HasSuffix(inner, ")") || strings.ContainsAny(inner[:len(inner)-1], "()") {
			return cipherSpec{}, &UnsupportedError{What: "cipher", Name: spec}
		}
		c.mode, c.cipher, ivPart = mode, inner[:len(inner)-1], iv
	} else {
		// cipher[:keycount]-mode-iv[:hash]
		parts := strings.SplitN(spec, "-", 3)
		c.cipher = parts[0]
		if len(parts) > 1 {
			c.mode = parts[1]
		}
		if len(parts) > 2 {
			ivPart = parts[2]
		}
	}
	c.iv, c.ivHash, _ = strings.Cut(ivPart, ":")
	if c.cipher == "" || c.mode == "" {
		return cipherSpec{}, &UnsupportedError{What: "cipher", Name: spec}
	}
	return c, nil
}

// checkTableToken refuses strings from a header that would change the meaning of a
// dm-crypt table line or an ioctl buffer: empty, too long, or holding spaces, control
// characters or non-ASCII bytes.
func checkTableToken(what, s string, maxLen int) error {
	if s == "" || len(s) > maxLen {
		return fmt.Errorf("%s %q: empty or longer than %d bytes", what, truncate(s, 64), maxLen)
	}
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] >= 0x7f {
			return fmt.Errorf("%s %q: byte %#x not allowed", what, truncate(s, 64), s[i])
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// SectorCipher encrypts and decrypts whole sectors of a LUKS data segment (or keyslot area)
// in user space, with the same cipher, IV generator and IV numbering dm-crypt uses, so data
// written with it reads back through /dev/mapper. It holds an expanded copy of the key; drop
// it when done (Go gives no way to wipe the expanded AES schedule).
type SectorCipher struct {
	spec       string
	sectorSize int
	ivShift    uint   // log2(sectorSize/512) with iv_large_sectors, else 0
	ivTweak    uint64 // dm-crypt <iv_offset>, in 512-byte sectors
	mode       string // "xts", "cbc" or "ecb"
	data       cipher.Block
	tweak      cipher.Block // XTS: the second key's cipher
	ivGen      func(iv []byte, sector uint64)
}

// NewSectorCipher returns the user-space cipher of the segment for key (the volume key). The
// key is copied into the cipher's expanded schedule; the caller still owns key.
func (s *Segment) NewSectorCipher(key []byte) (*SectorCipher, error) {
	return newSectorCipher(s.Cipher, key, s.SectorSize, s.IVTweak, s.LargeIV)
}

// newSectorCipher builds a SectorCipher from a cipher string. The supported set is AES in
// XTS, CBC or ECB mode with the plain, plain64, plain64be, essiv:HASH and null IV
// generators — what LUKS1 and LUKS2 images use in practice; the kernel supports more, and
// anything else is an *UnsupportedError naming the cipher.
func newSectorCipher(spec string, key []byte, sectorSize int, ivTweak uint64, largeIV bool) (*SectorCipher, error) {
	cs, err := parseCipherSpec(spec)
	if err != nil {
		return nil, err
	}
	if !validSectorSize(sectorSize) {
		return nil, fmt.Errorf("sector size %d (want 512, 1024, 2048 or 4096)", sectorSize)
	}
	if cs.cipher != "aes" {
		return nil, &UnsupportedError{What: "cipher", Name: spec}
	}
	c := &SectorCipher{spec: spec, sectorSize: sectorSize, ivTweak: ivTweak, mode: cs.mode}
	if largeIV {
		for n := sectorSize / 512; n > 1; n >>= 1 {
			c.ivShift++
		}
		// dm-crypt: with iv_large_sectors, <iv_offset> must be a multiple of sector_size.
		if ivTweak%uint64(sectorSize/512) != 0 {
			return nil, fmt.Errorf("iv tweak %d is not a multiple of the %d-byte sector", ivTweak, sectorSize)
		}
	}
	switch cs.mode {
	case "xts":
		if len(key)%2 != 0 {
			return nil, fmt.Errorf("%s: %d-byte key cannot be split in two", spec, len(key))
		}
		half := len(key) / 2
		if c.data, err = aes.NewCipher(key[:half]); err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
		if c.tweak, err = aes.NewCipher(key[half:]); err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
	case "cbc", "ecb":
		if c.data, err = aes.NewCipher(key); err != nil {
			return nil, fmt.Errorf("%s: %w", spec, err)
		}
	default:
		return nil, &UnsupportedError{What: "cipher", Name: spec}
	}
	if cs.mode == "ecb" {
		if cs.iv != "" {
			return nil, &UnsupportedError{What: "cipher", Name: spec}
		}
		return c, nil
	}
	if c.ivGen, err = newIVGen(cs, key); err != nil {
		if _, ok := err.(*UnsupportedError); ok {
			return nil, &UnsupportedError{What: "cipher", Name: spec}
		}
		return nil, fmt.Errorf("%s: %w", spec, err)
	}
	return c, nil
}

func validSectorSize(n int) bool {
	return n == 512 || n == 1024 || n == 2048 || n == 4096
}

// newIVGen returns the IV generator named in the spec, as dm-crypt defines them
// (drivers/md/dm-crypt.c, crypt_iv_*_gen): the IV is 16 bytes, the sector number is the
// 512-byte (or, with iv_large_sectors, sector_size) sector count plus <iv_offset>.
func newIVGen(cs cipherSpec, key []byte) (func(iv []byte, sector uint64), error) {
	switch cs.iv {
	case "plain":
		// Low 32 bits, little endian; the rest zero.
		return func(iv []byte, sector uint64) {
			clear(iv)
			binary.LittleEndian.PutUint32(iv, uint32(sector))
		}, nil
	case "plain64":
		return func(iv []byte, sector uint64) {
			clear(iv)
			binary.LittleEndian.PutUint64(iv, sector)
		}, nil
	case "plain64be":
		// Big endian, in the last 8 bytes of the IV.
		return func(iv []byte, sector uint64) {
			clear(iv)
			binary.BigEndian.PutUint64(iv[len(iv)-8:], sector)
		}, nil
	case "null":
		return func(iv []byte, _ uint64) { clear(iv) }, nil
	case "essiv":
		// ESSIV: IV = E_salt(plain64 sector), salt = HASH(whole key), the block cipher the
		// data cipher's (AES, with a key the size of the digest).
		h, err := newHash(cs.ivHash)
		if err != nil {
			return nil, err
		}
		hh := h()
		hh.Write(key)
		salt := hh.Sum(nil)
		hh.Reset()
		defer wipe(salt)
		essiv, err := aes.NewCipher(salt)
		if err != nil {
			return nil, fmt.Errorf("essiv:%s: %w", cs.ivHash, err)
		}
		return func(iv []byte, sector uint64) {
			clear(iv)
			binary.LittleEndian.PutUint64(iv, sector)
			essiv.Encrypt(iv, iv)
		}, nil
	}
	return nil, &UnsupportedError{What: "iv", Name: cs.iv}
}

// SectorSize returns the encryption unit in bytes (512…4096).
func (c *SectorCipher) SectorSize() int { return c.sectorSize }

// Encrypt encrypts src into dst (which may be src) as whole sectors. sector is the index of
// src's first sector counted from the start of the segment, in units of SectorSize.
func (c *SectorCipher) Encrypt(dst, src []byte, sector uint64) error {
	return c.crypt(dst, src, sector, true)
}

// Decrypt decrypts src into dst (which may be src) as whole sectors; sector is as for
// Encrypt.
func (c *SectorCipher) Decrypt(dst, src []byte, sector uint64) error {
	return c.crypt(dst, src, sector, false)
}

// ivSector is the sector number dm-crypt feeds the IV generator for the segment's sector k
// (drivers/md/dm-crypt.c, crypt_convert_block_skcipher): the 512-byte sector count plus
// <iv_offset>, shifted down to sector_size units with iv_large_sectors.
func (c *SectorCipher) ivSector(k uint64) uint64 {
	s512 := k*uint64(c.sectorSize/512) + c.ivTweak
	return s512 >> c.ivShift
}

func (c *SectorCipher) crypt(dst, src []byte, sector uint64, encrypt bool) error {
	if len(src)%c.sectorSize != 0 {
		return fmt.Errorf("luks: %d bytes is not a whole number of %d-byte sectors", len(src), c.sectorSize)
	}
	if len(dst) < len(src) {
		return fmt.Errorf("luks: destination of %d bytes for %d bytes", len(dst), len(src))
	}
	var iv [16]byte
	for off := 0; off < len(src); off += c.sectorSize {
		in, out := src[off:off+c.sectorSize], dst[off:off+c.sectorSize]
		if c.ivGen != nil {
			c.ivGen(iv[:], c.ivSector(sector))
		}
		switch c.mode {
		case "xts":
			xtsCrypt(c.data, c.tweak, out, in, &iv, encrypt)
		case "cbc":
			if encrypt {
				cipher.NewCBCEncrypter(c.data, iv[:]).CryptBlocks(out, in)
			} else {
				cipher.NewCBCDecrypter(c.data, iv[:]).CryptBlocks(out, in)
			}
		case "ecb":
			for i := 0; i < len(in); i += aes.BlockSize {
				if encrypt {
					c.data.Encrypt(out[i:i+aes.BlockSize], in[i:i+aes.BlockSize])
				} else {
					c.data.Decrypt(out[i:i+aes.BlockSize], in[i:i+aes.BlockSize])
				}
			}
		}
		sector++
	}
	return nil
}

// xtsCrypt is XTS (IEEE 1619-2007 §5.3) over whole 16-byte blocks: the tweak T = E_k2(iv),
// each block is E_k1(P xor T) xor T, and T is multiplied by α in GF(2^128) between blocks.
// Sectors are multiples of 16 bytes, so ciphertext stealing never applies. It is ours rather
// than x/crypto/xts because that one only takes a little-endian sector number as the tweak,
// and dm-crypt allows any IV generator with XTS.
func xtsCrypt(k1, k2 cipher.Block, dst, src []byte, iv *[16]byte, encrypt bool) {
	var t, b [16]byte
	k2.Encrypt(t[:], iv[:])
	for i := 0; i < len(src); i += 16 {
		subtle.XORBytes(b[:], src[i:i+16], t[:])
		if encrypt {
			k1.Encrypt(b[:], b[:])
		} else {
			k1.Decrypt(b[:], b[:])
		}
		subtle.XORBytes(dst[i:i+16], b[:], t[:])
		mulAlpha(&t)
	}
}

// mulAlpha multiplies the tweak by α (x) in GF(2^128) with the XTS byte order: the tweak
// is a little-endian 128-bit number, and the reduction polynomial is x^128+x^7+x^2+x+1.
func mulAlpha(t *[16]byte) {
	lo := binary.LittleEndian.Uint64(t[:8])
	hi := binary.LittleEndian.Uint64(t[8:])
	carry := hi >> 63
	hi = hi<<1 | lo>>63
	lo = lo<<1 ^ carry*0x87
	binary.LittleEndian.PutUint64(t[:8], lo)
	binary.LittleEndian.PutUint64(t[8:], hi)
}
