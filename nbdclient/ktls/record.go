package ktls

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"golang.org/x/crypto/chacha20poly1305"
)

// Record content types (RFC 8446 5.1, appendix B.1).
const (
	TypeChangeCipherSpec uint8 = 20
	TypeAlert            uint8 = 21
	TypeHandshake        uint8 = 22
	TypeApplicationData  uint8 = 23
)

// Record sizes (RFC 8446 5.1, 5.2).
const (
	// HeaderLen is the length of a record header: type, legacy version, length.
	HeaderLen = 5
	// MaxPlaintext is the largest plaintext of one record (2^14).
	MaxPlaintext = 1 << 14
	// MaxCiphertext is the largest protected fragment of one record (2^14 + 256): the
	// content type, padding and the AEAD tag.
	MaxCiphertext = MaxPlaintext + 256
)

// legacyVersion is the legacy_record_version of every protected TLS 1.3 record.
const legacyVersion = 0x0303

// ErrRecord reports a record that is malformed or does not authenticate.
var ErrRecord = errors.New("bad TLS record")

// Direction is one direction of a connection's record layer: the current traffic secret
// and the sequence number of the next record (RFC 8446 5.3: it starts at 0 with each key
// and counts every protected record, whatever its content type).
type Direction struct {
	Secret []byte `json:"secret"`
	Seq    uint64 `json:"seq"`
}

// State is the record layer of a TLS 1.3 connection after its handshake, as plain data:
// what the kernel's TLS_TX and TLS_RX take, and what a Relay needs. TX is the client's
// direction (client application traffic secret), RX the server's.
type State struct {
	Suite Suite     `json:"suite"`
	TX    Direction `json:"tx"`
	RX    Direction `json:"rx"`
}

// Cipher protects or opens the records of one direction.
type Cipher struct {
	suite  Suite
	secret []byte
	aead   cipher.AEAD
	iv     [ivLen]byte
	seq    uint64
}

// NewCipher makes the Cipher of a direction: keys from its secret, counting from its Seq.
func NewCipher(s Suite, d Direction) (*Cipher, error) {
	c := &Cipher{suite: s, seq: d.Seq}
	if err := c.rekey(d.Secret); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Cipher) rekey(secret []byte) error {
	k, err := TrafficKeys(c.suite, secret)
	if err != nil {
		return err
	}
	var aead cipher.AEAD
	switch c.suite {
	case AES128GCMSHA256, AES256GCMSHA384:
		b, err := aes.NewCipher(k.Key)
		if err != nil {
			return err
		}
		if aead, err = cipher.NewGCM(b); err != nil {
			return err
		}
	case CHACHA20POLY1305SHA256:
		if aead, err = chacha20poly1305.New(k.Key); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%v: %w", c.suite, ErrSuite)
	}
	c.secret, c.aead = secret, aead
	copy(c.iv[:], k.IV)
	return nil
}

// Seq is the sequence number of the next record.
func (c *Cipher) Seq() uint64 { return c.seq }

// Update moves to the next traffic secret, as a KeyUpdate does (RFC 8446 4.6.3): new keys,
// and the sequence number starts again at 0.
func (c *Cipher) Update() error {
	next, err := NextSecret(c.suite, c.secret)
	if err != nil {
		return err
	}
	if err := c.rekey(next); err != nil {
		return err
	}
	c.seq = 0
	return nil
}

// nonce is the per-record nonce: the IV XORed with the sequence number, left-padded to
// the IV's length (RFC 8446 5.3).
func (c *Cipher) nonce() []byte {
	var n [ivLen]byte
	copy(n[:], c.iv[:])
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], c.seq)
	for i := range s {
		n[ivLen-8+i] ^= s[i]
	}
	return n[:]
}

// Seal appends one protected record carrying plaintext of content type typ to dst
// (TLSInnerPlaintext without padding, RFC 8446 5.2; the header is the additional data).
func (c *Cipher) Seal(dst []byte, typ uint8, plaintext []byte) ([]byte, error) {
	if len(plaintext) > MaxPlaintext {
		return nil, fmt.Errorf("%w: %d bytes of plaintext in one record (limit %d)", ErrRecord, len(plaintext), MaxPlaintext)
	}
	n := len(plaintext) + 1 + c.aead.Overhead()
	start := len(dst)
	dst = slices.Grow(dst, HeaderLen+n)[:start+HeaderLen+n]
	hdr := dst[start : start+HeaderLen]
	hdr[0], hdr[1], hdr[2], hdr[3], hdr[4] = TypeApplicationData, legacyVersion>>8, legacyVersion&0xff, byte(n>>8), byte(n)
	inner := dst[start+HeaderLen : start+HeaderLen+len(plaintext)+1]
	copy(inner, plaintext)
	inner[len(plaintext)] = typ
	// Sealed in place: the output takes inner's storage and the tag the bytes after it.
	c.aead.Seal(inner[:0], c.nonce(), inner, hdr)
	c.seq++
	return dst, nil
}

// Open authenticates and decrypts one whole record (header included) in place and
// returns its real content type and plaintext (padding removed, RFC 8446 5.4). A record
// that does not authenticate leaves the sequence number as it was.
func (c *Cipher) Open(record []byte) (uint8, []byte, error) {
	if len(record) < HeaderLen {
		return 0, nil, fmt.Errorf("%w: %d bytes, shorter than a header", ErrRecord, len(record))
	}
	h, err := ParseHeader(record)
	if err != nil {
		return 0, nil, err
	}
	if h.Type != TypeApplicationData {
		return 0, nil, fmt.Errorf("%w: an unprotected record of type %d after the handshake", ErrRecord, h.Type)
	}
	if h.Length != len(record)-HeaderLen {
		return 0, nil, fmt.Errorf("%w: header says %d bytes, record has %d", ErrRecord, h.Length, len(record)-HeaderLen)
	}
	body := record[HeaderLen:]
	if len(body) < c.aead.Overhead()+1 {
		return 0, nil, fmt.Errorf("%w: %d bytes cannot hold a protected record", ErrRecord, len(body))
	}
	pt, err := c.aead.Open(body[:0], c.nonce(), body, record[:HeaderLen])
	if err != nil {
		return 0, nil, fmt.Errorf("%w: record %d does not authenticate", ErrRecord, c.seq)
	}
	c.seq++
	// The content type is the last non-zero byte; zeros after it are padding.
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, fmt.Errorf("%w: a record of padding only", ErrRecord)
	}
	if i > MaxPlaintext {
		return 0, nil, fmt.Errorf("%w: %d bytes of plaintext in one record", ErrRecord, i)
	}
	return pt[i], pt[:i], nil
}

// Header is a record header.
type Header struct {
	Type    uint8
	Version uint16
	Length  int
}

// ParseHeader reads a record header, refusing lengths no TLS 1.3 record has.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, fmt.Errorf("%w: short header", ErrRecord)
	}
	h := Header{Type: b[0], Version: binary.BigEndian.Uint16(b[1:]), Length: int(binary.BigEndian.Uint16(b[3:]))}
	switch {
	case h.Type < TypeChangeCipherSpec || h.Type > TypeApplicationData:
		return h, fmt.Errorf("%w: content type %d", ErrRecord, h.Type)
	case h.Version>>8 != 3:
		return h, fmt.Errorf("%w: version %#04x", ErrRecord, h.Version)
	case h.Length > MaxCiphertext:
		return h, fmt.Errorf("%w: %d bytes, over the limit of %d", ErrRecord, h.Length, MaxCiphertext)
	}
	return h, nil
}
