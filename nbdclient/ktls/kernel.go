package ktls

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The kernel TLS interface (include/uapi/linux/tls.h): setsockopt(SOL_TLS, TLS_TX or
// TLS_RX) with a struct tls12_crypto_info_* after setsockopt(SOL_TCP, TCP_ULP, "tls").
const (
	tlsTX = 1
	tlsRX = 2
	// tls13Version is TLS_1_3_VERSION: TLS_VERSION_NUMBER(TLS_1_3), major 3 minor 4.
	tls13Version = 0x0304

	cipherAESGCM128        = 51
	cipherAESGCM256        = 52
	cipherCHACHA20POLY1305 = 54
)

// ErrNoKernelTLS reports a kernel that cannot take over the records: no "tls" upper layer
// protocol (CONFIG_TLS), or not for this cipher suite.
var ErrNoKernelTLS = errors.New("the kernel cannot do TLS for this connection")

// KernelError is a refused kernel TLS setup step. Half is true when the kernel took one
// direction and refused the other: the socket then belongs to neither the kernel nor
// userspace and must be closed.
type KernelError struct {
	Op   string
	Half bool
	Err  error
}

// Error implements error.
func (e *KernelError) Error() string {
	return fmt.Sprintf("kernel TLS: %s: %v", e.Op, e.Err)
}

// Unwrap returns the reason.
func (e *KernelError) Unwrap() error { return e.Err }

// cryptoInfo builds the struct tls12_crypto_info_* of one direction for TLS 1.3. The
// struct is: u16 version, u16 cipher_type (host order), then the cipher's iv, key, salt
// and rec_seq. The kernel's 12-byte nonce base is salt followed by iv
// (net/tls/tls_main.c: init_prot_info), so for AES-GCM the TLS 1.3 IV splits into a 4-byte
// salt and an 8-byte iv; ChaCha20-Poly1305 takes all 12 bytes as iv and has no salt.
// rec_seq is the sequence number as on the wire, big-endian.
func cryptoInfo(s Suite, d Direction) ([]byte, error) {
	k, err := TrafficKeys(s, d.Secret)
	if err != nil {
		return nil, err
	}
	var typ uint16
	var iv, salt []byte
	switch s {
	case AES128GCMSHA256:
		typ, salt, iv = cipherAESGCM128, k.IV[:4], k.IV[4:]
	case AES256GCMSHA384:
		typ, salt, iv = cipherAESGCM256, k.IV[:4], k.IV[4:]
	case CHACHA20POLY1305SHA256:
		typ, salt, iv = cipherCHACHA20POLY1305, nil, k.IV
	default:
		return nil, fmt.Errorf("%v: %w", s, ErrSuite)
	}
	b := binary.NativeEndian.AppendUint16(nil, tls13Version)
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, iv...)
	b = append(b, k.Key...)
	b = append(b, salt...)
	return binary.BigEndian.AppendUint64(b, d.Seq), nil
}
