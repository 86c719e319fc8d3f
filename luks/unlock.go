package luks

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"slices"
)

// UnlockOptions tunes Unlock. The zero value (or a nil pointer) tries every keyslot of
// priority normal or high, high first, with Argon2 memory up to DefaultMaxMemoryKiB.
type UnlockOptions struct {
	// Keyslots, when not empty, are the only keyslots tried, in this order, whatever their
	// priority (this is how a keyslot of priority "ignore" is opened).
	Keyslots []int
	// MaxMemoryKiB skips Argon2 keyslots that need more memory than this, before anything
	// is allocated: a thin client with 512 MiB cannot run a 1 GiB Argon2 keyslot, it would
	// be killed by the OOM killer, and as PID 1 that is a kernel panic. 0 means
	// DefaultMaxMemoryKiB; a boot hook sets it from the client's available memory.
	MaxMemoryKiB uint32
}

// DefaultMaxMemoryKiB is the Argon2 memory Unlock allows when UnlockOptions.MaxMemoryKiB is
// 0: 1 GiB, the most cryptsetup chooses by itself for a new keyslot, so every keyslot made
// with cryptsetup's defaults fits while a hostile header cannot make us allocate the 4 GiB
// the format allows. Set MaxMemoryKiB explicitly to go above it.
const DefaultMaxMemoryKiB = 1 << 20

// VolumeKey is the volume (master) key Unlock recovered. It belongs to the caller, who
// calls Wipe when the key has been handed to the kernel. Printing it shows no key bytes.
type VolumeKey struct {
	key []byte
	// Keyslot is the keyslot that opened.
	Keyslot int
}

// NewVolumeKey wraps a copy of key (for instance one read from a file the way cryptsetup's
// --volume-key-file reads it). Check it against the header with Volume.VerifyKey.
func NewVolumeKey(key []byte) *VolumeKey {
	return &VolumeKey{key: slices.Clone(key), Keyslot: -1}
}

// Bytes returns the key. The slice aliases the VolumeKey: it is valid until Wipe.
func (k *VolumeKey) Bytes() []byte { return k.key }

// Len returns the key size in bytes.
func (k *VolumeKey) Len() int { return len(k.key) }

// Wipe overwrites the key with zeros. The VolumeKey is unusable afterwards.
func (k *VolumeKey) Wipe() {
	if k != nil {
		wipe(k.key)
		k.key = nil
	}
}

// String describes the key without revealing it, so a stray %v cannot log key material.
func (k *VolumeKey) String() string {
	return fmt.Sprintf("luks.VolumeKey(%d bytes, keyslot %d, redacted)", len(k.key), k.Keyslot)
}

// GoString is String, for %#v.
func (k *VolumeKey) GoString() string { return k.String() }

// Unlock derives the volume key from passphrase (or key-file contents: LUKS does not tell
// them apart) by trying the keyslots in order: those named in opts, otherwise every
// keyslot of high priority then of normal priority, each in id order (cryptsetup's order,
// LUKS2 spec §3.2). passphrase is only read; the caller owns and wipes it.
//
// If no keyslot opens, the error matches ErrWrongPassphrase with errors.Is when at least one
// keyslot was actually tried; keyslots that could not be tried (unsupported KDF, over the
// memory limit, no digest) are listed in it as *KeyslotError. When none could be tried,
// the error is only those. A read error from the device stops the search at once.
func (v *Volume) Unlock(passphrase []byte, opts *UnlockOptions) (*VolumeKey, error) {
	if opts == nil {
		opts = &UnlockOptions{}
	}
	maxMem := opts.MaxMemoryKiB
	if maxMem == 0 {
		maxMem = DefaultMaxMemoryKiB
	}
	order, err := v.unlockOrder(opts.Keyslots)
	if err != nil {
		return nil, err
	}
	if len(order) == 0 {
		return nil, fmt.Errorf("luks: no keyslot to try (none active, or all of priority ignore)")
	}
	var skipped []error
	tried := 0
	for _, k := range order {
		key, err := v.openKeyslot(k, passphrase, maxMem)
		var rerr *readError
		switch {
		case err == nil:
			return &VolumeKey{key: key, Keyslot: k.ID}, nil
		case errors.Is(err, errMismatch):
			tried++
		case errors.As(err, &rerr):
			return nil, fmt.Errorf("luks: keyslot %d: %w", k.ID, err)
		default:
			skipped = append(skipped, &KeyslotError{Keyslot: k.ID, Err: err})
		}
	}
	if tried == 0 {
		return nil, fmt.Errorf("luks: no keyslot could be tried: %w", errors.Join(skipped...))
	}
	if len(skipped) > 0 {
		return nil, fmt.Errorf("%w (not tried: %w)", ErrWrongPassphrase, errors.Join(skipped...))
	}
	return nil, ErrWrongPassphrase
}

// unlockOrder lists the keyslots to try.
func (v *Volume) unlockOrder(named []int) ([]*Keyslot, error) {
	var order []*Keyslot
	if len(named) > 0 {
		for _, id := range named {
			k, ok := v.Keyslot(id)
			if !ok {
				return nil, fmt.Errorf("luks: keyslot %d is not active", id)
			}
			order = append(order, k)
		}
		return order, nil
	}
	for _, p := range []Priority{PriorityHigh, PriorityNormal} {
		for i := range v.Keyslots {
			if v.Keyslots[i].Priority == p {
				order = append(order, &v.Keyslots[i])
			}
		}
	}
	return order, nil
}

// errMismatch is a keyslot that decrypted to a key the digest rejects: a wrong passphrase.
var errMismatch = errors.New("digest mismatch")

// readError is a failure to read the device (an I/O error, not a short device), which no
// other keyslot can fix.
type readError struct{ err error }

// Error returns the read error's text.
func (e *readError) Error() string { return e.err.Error() }

// Unwrap returns the read error.
func (e *readError) Unwrap() error { return e.err }

// openKeyslot runs one keyslot: KDF, area decryption, AF merge, digest check (LUKS1 spec
// §2.4 "recover master key"; LUKS2 spec §3.2). Everything is validated before the KDF runs,
// so an unusable keyslot costs nothing. The returned key belongs to the caller; every
// intermediate is wiped.
func (v *Volume) openKeyslot(k *Keyslot, passphrase []byte, maxMemKiB uint32) ([]byte, error) {
	if k.Type != "luks2" && k.Type != "luks1" {
		return nil, &UnsupportedError{What: "keyslot type", Name: k.Type}
	}
	d, err := v.digestFor(k.ID)
	if err != nil {
		return nil, err
	}
	afHash, err := newHash(k.AFHash)
	if err != nil {
		return nil, err
	}
	// Build the area cipher once with a zero key: it checks the cipher string and key size
	// before the (slow) KDF.
	if _, err := newSectorCipher(k.AreaCipher, make([]byte, k.AreaKeySize), 512, 0, false); err != nil {
		return nil, fmt.Errorf("area cipher: %w", err)
	}
	switch k.KDF.Type {
	case KDFPBKDF2:
		if _, err := newHash(k.KDF.Hash); err != nil {
			return nil, err
		}
	case KDFArgon2i, KDFArgon2id:
		if err := k.KDF.checkArgon2(); err != nil {
			return nil, err
		}
		if maxMemKiB != 0 && k.KDF.Memory > maxMemKiB {
			return nil, fmt.Errorf("%s needs %d KiB of memory, over the limit of %d KiB", k.KDF.Type, k.KDF.Memory, maxMemKiB)
		}
	default:
		return nil, &UnsupportedError{What: "kdf", Name: k.KDF.Type}
	}

	area := make([]byte, k.afLength())
	defer wipe(area)
	if err := readAt(v.dev, area, k.AreaOffset, "keyslot area"); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// The area lies past the end of the device: this keyslot's header entry is
			// wrong (or the device truncated); other keyslots may still open.
			return nil, err
		}
		return nil, &readError{err}
	}

	derived, err := k.KDF.deriveKey(passphrase, k.AreaKeySize, maxMemKiB)
	if err != nil {
		return nil, err
	}
	defer wipe(derived)
	c, err := newSectorCipher(k.AreaCipher, derived, 512, 0, false)
	if err != nil {
		return nil, fmt.Errorf("area cipher: %w", err)
	}
	if err := c.Decrypt(area, area, 0); err != nil {
		return nil, err
	}
	key, err := afMerge(area, k.KeySize, k.Stripes, afHash)
	if err != nil {
		return nil, err
	}
	if err := d.verify(key); err != nil {
		wipe(key)
		return nil, err
	}
	return key, nil
}

// digestFor returns the digest that verifies keyslot id's key for the data segment. A
// keyslot bound to no digest, or to one that does not cover the data segment (an "unbound"
// key, LUKS2 spec §3.4), cannot open the volume.
func (v *Volume) digestFor(id int) (*Digest, error) {
	for i := range v.Digests {
		d := &v.Digests[i]
		if !slices.Contains(d.Keyslots, id) {
			continue
		}
		if !slices.Contains(d.Segments, v.Segment.ID) {
			return nil, fmt.Errorf("keyslot is not bound to the data segment (unbound key)")
		}
		if d.Type != "pbkdf2" {
			return nil, &UnsupportedError{What: "digest type", Name: d.Type}
		}
		if _, err := newHash(d.Hash); err != nil {
			return nil, err
		}
		return d, nil
	}
	return nil, fmt.Errorf("no digest for this keyslot")
}

// verify checks a candidate volume key against the digest: PBKDF2(key, salt, iterations)
// truncated to the digest's length must equal it (LUKS1 mk-digest is the 20-byte case).
func (d *Digest) verify(key []byte) error {
	h, err := newHash(d.Hash)
	if err != nil {
		return err
	}
	got := pbkdf2(h, key, d.Salt, d.Iterations, len(d.Value))
	defer wipe(got)
	if subtle.ConstantTimeCompare(got, d.Value) != 1 {
		return errMismatch
	}
	return nil
}

// VerifyKey checks that key is this volume's key for the data segment (by any digest that
// covers the segment), and returns an error when no digest accepts it.
func (v *Volume) VerifyKey(key *VolumeKey) error {
	for i := range v.Digests {
		d := &v.Digests[i]
		if d.Type != "pbkdf2" || !slices.Contains(d.Segments, v.Segment.ID) {
			continue
		}
		if err := d.verify(key.key); err == nil {
			return nil
		}
	}
	return fmt.Errorf("luks: the key does not match the volume's digest")
}
