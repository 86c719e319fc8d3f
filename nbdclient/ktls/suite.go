// Package ktls carries the record layer of a TLS 1.3 connection whose handshake ran in
// userspace (crypto/tls) to whoever protects its records from then on: the kernel (kernel
// TLS: TCP_ULP "tls" with TLS_TX and TLS_RX, Documentation/networking/tls.rst), so that the
// socket can be handed to the nbd driver with no process on the data path; or, where the
// kernel cannot, a Relay that does the same work in userspace between a socket pair and
// the server.
//
// crypto/tls does not expose traffic secrets or record sequence numbers. They are taken
// from what it does expose: the NSS key log (Config.KeyLogWriter: CLIENT_TRAFFIC_SECRET_0,
// SERVER_TRAFFIC_SECRET_0; KeyLog) and the raw records under it (Counter, which also keeps
// crypto/tls from reading past a record, so nothing is left in its buffers when the
// connection changes hands). Handoff assembles the State and proves it by opening the
// last record of each direction with the keys it derived.
//
// TLS 1.3 only (RFC 8446): its traffic keys come from one secret per direction through
// HKDF-Expand-Label (section 7.3), its nonces from the record sequence number alone
// (section 5.3), and it has no renegotiation. This package never imports crypto/tls: the
// init links it even when it is built without TLS.
package ktls

import (
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// Suite is a TLS 1.3 cipher suite (RFC 8446 appendix B.4).
type Suite uint16

// The TLS 1.3 cipher suites crypto/tls negotiates; the kernel has all three (CHACHA20 from
// Linux 5.11).
const (
	AES128GCMSHA256        Suite = 0x1301
	AES256GCMSHA384        Suite = 0x1302
	CHACHA20POLY1305SHA256 Suite = 0x1303
)

// String returns the suite's IANA name.
func (s Suite) String() string {
	switch s {
	case AES128GCMSHA256:
		return "TLS_AES_128_GCM_SHA256"
	case AES256GCMSHA384:
		return "TLS_AES_256_GCM_SHA384"
	case CHACHA20POLY1305SHA256:
		return "TLS_CHACHA20_POLY1305_SHA256"
	}
	return fmt.Sprintf("cipher suite %#04x", uint16(s))
}

// ErrSuite reports a cipher suite this package does not know.
var ErrSuite = errors.New("not a TLS 1.3 cipher suite this client hands over (AES-GCM or ChaCha20-Poly1305)")

// ivLen is the length of every TLS 1.3 AEAD's nonce, and so of the IV (RFC 8446 5.3).
const ivLen = 12

// params returns the suite's key length and hash.
func (s Suite) params() (keyLen int, h func() hash.Hash, err error) {
	switch s {
	case AES128GCMSHA256:
		return 16, sha256.New, nil
	case AES256GCMSHA384:
		return 32, sha512.New384, nil
	case CHACHA20POLY1305SHA256:
		return 32, sha256.New, nil
	}
	return 0, nil, fmt.Errorf("%v: %w", s, ErrSuite)
}

// Keys are the AEAD key and IV of one direction, derived from its traffic secret.
type Keys struct {
	Key []byte
	IV  []byte
}

// TrafficKeys derives the write key and IV from a traffic secret (RFC 8446 7.3):
// HKDF-Expand-Label(secret, "key", "", key_length) and HKDF-Expand-Label(secret, "iv", "",
// iv_length).
func TrafficKeys(s Suite, secret []byte) (Keys, error) {
	keyLen, h, err := s.params()
	if err != nil {
		return Keys{}, err
	}
	if len(secret) != h().Size() {
		return Keys{}, fmt.Errorf("%v: a traffic secret of %d bytes, want %d", s, len(secret), h().Size())
	}
	key, err := expandLabel(h, secret, "key", nil, keyLen)
	if err != nil {
		return Keys{}, err
	}
	iv, err := expandLabel(h, secret, "iv", nil, ivLen)
	if err != nil {
		return Keys{}, err
	}
	return Keys{Key: key, IV: iv}, nil
}

// NextSecret is the traffic secret after a KeyUpdate (RFC 8446 7.2):
// HKDF-Expand-Label(secret, "traffic upd", "", Hash.length).
func NextSecret(s Suite, secret []byte) ([]byte, error) {
	_, h, err := s.params()
	if err != nil {
		return nil, err
	}
	return expandLabel(h, secret, "traffic upd", nil, h().Size())
}

// expandLabel is HKDF-Expand-Label (RFC 8446 7.1): the info is the struct HkdfLabel —
// uint16 length, opaque label<7..255> = "tls13 " + label, opaque context<0..255>.
func expandLabel(h func() hash.Hash, secret []byte, label string, context []byte, length int) ([]byte, error) {
	full := "tls13 " + label
	info := binary.BigEndian.AppendUint16(nil, uint16(length))
	info = append(info, byte(len(full)))
	info = append(info, full...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	return hkdf.Expand(h, secret, string(info), length)
}
