package luks

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// MaxKeyFileSize is the largest key file read, cryptsetup's default limit
// (DEFAULT_KEYFILE_SIZE_MAXKB, 8 MiB): a key file is used whole, byte for byte, so a
// bigger one is a mistake (a device given as a key file, say) rather than a key.
const MaxKeyFileSize = 8 << 20

// ReadKeyFile reads a whole key file, for cryptkey=rootfs:PATH (a file inside the
// initramfs) and cryptkey=DEVICE:FSTYPE:PATH once the hook has mounted DEVICE. The contents
// are the passphrase as is: no newline is stripped, as with cryptsetup --key-file. The
// returned slice belongs to the caller, who wipes it after Unlock.
func ReadKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("luks: key file: %w", err)
	}
	defer f.Close()
	key, err := io.ReadAll(io.LimitReader(f, MaxKeyFileSize+1))
	if err != nil {
		wipe(key)
		return nil, fmt.Errorf("luks: key file %s: %w", path, err)
	}
	if len(key) > MaxKeyFileSize {
		wipe(key)
		return nil, fmt.Errorf("luks: key file %s: larger than %d bytes", path, MaxKeyFileSize)
	}
	if len(key) == 0 {
		return nil, fmt.Errorf("luks: key file %s is empty", path)
	}
	return key, nil
}

// ReadKeyAt reads size bytes at offset of r, for cryptkey=DEVICE:OFFSET:SIZE (raw key bytes
// on a device, mkinitcpio's encrypt hook semantics). The hook opens DEVICE and passes it as
// r. The returned slice belongs to the caller, who wipes it after Unlock.
func ReadKeyAt(r io.ReaderAt, offset, size int64) ([]byte, error) {
	if offset < 0 {
		return nil, fmt.Errorf("luks: raw key: negative offset %d", offset)
	}
	if size <= 0 || size > MaxKeyFileSize {
		return nil, fmt.Errorf("luks: raw key: size %d (want 1..%d)", size, MaxKeyFileSize)
	}
	key := make([]byte, size)
	n, err := r.ReadAt(key, offset)
	if n == len(key) {
		return key, nil
	}
	wipe(key)
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return nil, fmt.Errorf("luks: raw key: %d bytes at offset %d: %w", size, offset, err)
}
