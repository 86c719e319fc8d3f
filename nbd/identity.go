package nbd

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// nbdroot's private extension for client identity (issue 13; the contract both sides
// implement). A client names itself in an option sent before NBD_OPT_GO/INFO, and our server
// answers GO/INFO with the ID of the copy-on-write overlay it serves that client, so a client
// that reconnects can insist on the same overlay. Identity is not authentication: any client
// can claim any identity (certificates come with TLS).
//
// Numbers live where the NBD protocol leaves room for experiments: option 0x4E425231 ("NBR1")
// is far above the registered options, information type 0x4E42 ("NB") above the registered
// NBD_INFO_* types, and the error 0x80004E42 inside the error range (bit 31 set). Servers that
// do not know the option answer NBD_REP_ERR_UNSUP (proto.md requires it of unknown options),
// and clients ignore information types they do not know (proto.md), so either side may be
// older than the other.
const (
	// OptNbdrootClient carries the client's identity: ASCII "id=IDENTITY" and optionally
	// " overlay=HEX32" (resume that overlay). Answered with NBD_REP_ACK, or
	// NBD_REP_ERR_INVALID with a message when malformed.
	OptNbdrootClient uint32 = 0x4E425231
	// InfoNbdrootOverlay is the NBD_REP_INFO type of the 16-byte overlay ID in GO/INFO
	// replies to a client that sent OptNbdrootClient; all zero when it gets no overlay.
	InfoNbdrootOverlay uint16 = 0x4E42
	// RepErrNbdrootOverlayGone refuses a GO/INFO that asked to resume an overlay which no
	// longer exists (state lost, or removed by an administrator).
	RepErrNbdrootOverlayGone uint32 = 0x80004E42
)

// MaxIdentityLength bounds a client identity.
const MaxIdentityLength = 64

// OverlayIDSize is the size of an overlay ID on the wire.
const OverlayIDSize = 16

// OverlayID is the random ID a server gives each copy-on-write overlay. The zero ID means
// "no overlay".
type OverlayID [OverlayIDSize]byte

// String is the ID in 32 lower-case hex digits, the form of "overlay=" and of file names.
func (id OverlayID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is the zero ID ("no overlay").
func (id OverlayID) IsZero() bool { return id == OverlayID{} }

// MarshalText encodes the ID as hex (JSON uses it).
func (id OverlayID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText decodes the hex form.
func (id *OverlayID) UnmarshalText(b []byte) error {
	v, err := ParseOverlayID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ParseOverlayID parses exactly 32 lower-case hex digits.
func ParseOverlayID(s string) (OverlayID, error) {
	var id OverlayID
	if len(s) != 2*OverlayIDSize {
		return id, fmt.Errorf("overlay ID %q: want %d hex digits, got %d", s, 2*OverlayIDSize, len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return id, fmt.Errorf("overlay ID %q: %q is not a lower-case hex digit", s, c)
		}
	}
	hex.Decode(id[:], []byte(s))
	return id, nil
}

// ErrBadIdentity is wrapped by every error about a malformed identity or client option.
var ErrBadIdentity = errors.New("bad client identity")

// ValidateIdentity checks an identity against the contract: 1–64 bytes of [A-Za-z0-9._:-],
// and not "..". The character set keeps identities safe as file names and log fields.
func ValidateIdentity(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrBadIdentity)
	case len(id) > MaxIdentityLength:
		return fmt.Errorf("%w: %d bytes (at most %d)", ErrBadIdentity, len(id), MaxIdentityLength)
	case id == "..":
		return fmt.Errorf("%w: %q is a path element, not a name", ErrBadIdentity, id)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !identityChar(c) {
			return fmt.Errorf("%w: %q contains %q (allowed: letters, digits and . _ : -)", ErrBadIdentity, id, c)
		}
	}
	return nil
}

func identityChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// ClientOption is the data of OptNbdrootClient.
type ClientOption struct {
	// ID is the client's identity (required).
	ID string
	// Overlay asks to resume this overlay; zero for a fresh boot.
	Overlay OverlayID
}

// AppendClientOption appends the wire form of o: "id=ID" and, when resuming, " overlay=HEX".
func AppendClientOption(b []byte, o ClientOption) []byte {
	b = append(b, "id="...)
	b = append(b, o.ID...)
	if !o.Overlay.IsZero() {
		b = append(b, " overlay="...)
		b = append(b, o.Overlay.String()...)
	}
	return b
}

// ParseClientOption decodes and validates the data of OptNbdrootClient. Keys other than id
// and overlay are refused rather than ignored: a client that sends a key it relies on must
// learn that this server does not honour it.
func ParseClientOption(b []byte) (ClientOption, error) {
	var o ClientOption
	if len(b) > 512 {
		return o, fmt.Errorf("%w: option data of %d bytes", ErrBadIdentity, len(b))
	}
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			return o, fmt.Errorf("%w: byte %#x at %d: want printable ASCII", ErrBadIdentity, c, i)
		}
	}
	seen := map[string]bool{}
	for _, f := range strings.Fields(string(b)) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return o, fmt.Errorf("%w: %q is not key=value", ErrBadIdentity, f)
		}
		if seen[k] {
			return o, fmt.Errorf("%w: %s= given twice", ErrBadIdentity, k)
		}
		seen[k] = true
		switch k {
		case "id":
			if err := ValidateIdentity(v); err != nil {
				return o, err
			}
			o.ID = v
		case "overlay":
			id, err := ParseOverlayID(v)
			if err != nil {
				return o, fmt.Errorf("%w: %w", ErrBadIdentity, err)
			}
			if id.IsZero() {
				return o, fmt.Errorf("%w: overlay=%s: the zero ID means no overlay; leave overlay= out instead", ErrBadIdentity, v)
			}
			o.Overlay = id
		default:
			return o, fmt.Errorf("%w: unknown key %q (this server knows id= and overlay=)", ErrBadIdentity, k)
		}
	}
	if o.ID == "" {
		return o, fmt.Errorf("%w: no id= given", ErrBadIdentity)
	}
	return o, nil
}

// AppendInfoOverlay appends an InfoNbdrootOverlay reply payload.
func AppendInfoOverlay(b []byte, id OverlayID) []byte {
	b = be.AppendUint16(b, InfoNbdrootOverlay)
	return append(b, id[:]...)
}
