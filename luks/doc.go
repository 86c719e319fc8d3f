// Package luks opens LUKS1 and LUKS2 volumes in pure Go: it parses the on-disk headers,
// derives a keyslot's key with PBKDF2 or Argon2, merges the anti-forensic stripes, checks the
// volume key against the header's digest, and turns the data segment into a dm-crypt table
// that it loads through package dm's device-mapper ioctls (no cryptsetup, no libdevmapper,
// no dmsetup).
//
// The formats are those of the LUKS1 On-Disk Format Specification 1.2.3 and the LUKS2
// On-Disk Format Specification 1.1.x as cryptsetup writes them; where the specifications
// are silent the package follows cryptsetup 2.6 (cited where it matters).
//
// What the package owns, and what it must never do:
//   - It reads the header and keyslot areas through an io.ReaderAt handed in by the caller,
//     with every length bounded before it is allocated: a hostile header cannot make it
//     allocate more than a few MiB, plus the Argon2 memory of a keyslot, which is capped
//     (DefaultMaxMemoryKiB, 1 GiB, unless UnlockOptions.MaxMemoryKiB says otherwise).
//   - It never writes to the LUKS device. (Volume.EncryptPayload writes only to a
//     destination the caller opens, for building test images.)
//   - It never logs, and never puts key material into an error or a String method:
//     Table.String and VolumeKey.String redact the key. Buffers it derives (KDF output,
//     HMAC states, keyslot plaintext, AF intermediates, the hex table sent to the kernel)
//     are wiped before it returns. What Go does not let it reach is not: the expanded AES
//     key schedules inside crypto/aes and the Argon2 memory inside x/crypto/argon2 are left
//     to the garbage collector. Ownership: the passphrase belongs to the caller (the package
//     only reads it); the *VolumeKey Unlock returns belongs to the caller (VolumeKey.Wipe);
//     a *Table holds its own copy of the key (Table.Wipe).
//   - It builds the dm-crypt table; the device-mapper ioctls (Activate, Deactivate) are
//     package dm's, which wipes the buffers that carried the key and is tested against a
//     fake (dm/dmtest) without root.
//
// A boot hook uses it like this:
//
//	v, err := luks.Open(dev)                         // dev is an *os.File on /dev/nbd0
//	key, err := v.Unlock(passphrase, nil)            // errors.Is(err, luks.ErrWrongPassphrase)
//	defer key.Wipe()
//	size, err := luks.DeviceSize(dev)
//	table, err := v.Table(key, luks.TableOptions{Device: "/dev/nbd0", DeviceSize: size})
//	path, err := luks.Activate("nbdcrypt", table)    // "/dev/mapper/nbdcrypt"
package luks
