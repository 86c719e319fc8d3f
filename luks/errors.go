package luks

import (
	"errors"
	"fmt"
)

// ErrNotLUKS is returned by Open when the device carries no LUKS magic at all (neither a
// LUKS1/LUKS2 primary header at offset 0 nor a LUKS2 secondary header at a known offset).
var ErrNotLUKS = errors.New("luks: not a LUKS device (no LUKS header found)")

// ErrWrongPassphrase is returned (possibly wrapped, with the keyslots that could not be
// tried) when no keyslot opens with the passphrase or key file given. Callers that prompt
// again test for it with errors.Is.
var ErrWrongPassphrase = errors.New("luks: no keyslot opened with this passphrase")

// UnsupportedError names a parameter of the header this package cannot handle: a cipher,
// a KDF, a hash, a keyslot or segment type, a mandatory requirement.
type UnsupportedError struct {
	What string // "cipher", "kdf", "hash", "keyslot type", "segment", "requirement", …
	Name string // the value found in the header, e.g. "serpent-xts-plain64"
}

// Error names what is unsupported and the value found.
func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("luks: unsupported %s %q", e.What, e.Name)
}

// CorruptHeaderError reports a header copy that failed validation: which copy, where it is,
// and why. For LUKS1 Copy is "luks1" (there is only one copy).
type CorruptHeaderError struct {
	Copy   string // "primary", "secondary" or "luks1"
	Offset int64  // byte offset of that copy on the device
	Err    error  // what is wrong with it
}

// Error says which copy is corrupt, where, and why.
func (e *CorruptHeaderError) Error() string {
	return fmt.Sprintf("luks: corrupt %s header at offset %d: %v", e.Copy, e.Offset, e.Err)
}

// Unwrap returns the reason.
func (e *CorruptHeaderError) Unwrap() error { return e.Err }

// HeaderCopiesError is returned when both LUKS2 header copies are unusable. Each copy's
// own *CorruptHeaderError is reachable with errors.As.
type HeaderCopiesError struct {
	Primary, Secondary error
}

// Error gives both copies' reasons.
func (e *HeaderCopiesError) Error() string {
	return fmt.Sprintf("luks: both LUKS2 header copies are unusable: primary: %v; secondary: %v",
		unprefixed(e.Primary), unprefixed(e.Secondary))
}

// Unwrap returns both copies' errors, so errors.As finds a *CorruptHeaderError.
func (e *HeaderCopiesError) Unwrap() []error { return []error{e.Primary, e.Secondary} }

// KeyslotError says why one keyslot was not tried or failed for a reason other than a wrong
// passphrase (unsupported parameters, a KDF over the memory limit, a damaged area).
type KeyslotError struct {
	Keyslot int
	Err     error
}

// Error names the keyslot and the reason.
func (e *KeyslotError) Error() string {
	return fmt.Sprintf("keyslot %d: %v", e.Keyslot, unprefixed(e.Err))
}

// Unwrap returns the reason.
func (e *KeyslotError) Unwrap() error { return e.Err }

// unprefixed drops the "luks: " prefix of a nested error message so composed messages read
// "luks: a: b" rather than "luks: a: luks: b".
func unprefixed(err error) string {
	if err == nil {
		return "<nil>"
	}
	s := err.Error()
	const p = "luks: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
