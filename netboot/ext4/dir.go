package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// maxEntries bounds the entries ReadDir returns for one directory.
const maxEntries = 1 << 20

// dirent is one directory entry (ext4_dir_entry_2).
type dirent struct {
	name string
	ino  uint32
}

// errStop ends an entry walk early without an error.
var errStop = errors.New("stop")

// entries calls fn for each entry of directory in, "." and ".." included, in on-disk order.
// fn returning errStop ends the walk.
func (f *FS) entries(in *inode, fn func(dirent) error) error {
	if !in.isDir() {
		return corrupt("inode %d: not a directory", in.num)
	}
	if in.size > maxDirSize {
		return corrupt("inode %d: directory of %d bytes", in.num, in.size)
	}
	d, err := f.content(in)
	if err != nil {
		return err
	}
	if d.inline != nil {
		// inline_data.rst: the first four bytes are the parent's inode number; entries
		// follow in the rest of i_block and continue, as a separate run, in system.data.
		b := d.inline
		if len(b) < 4 {
			return corrupt("inode %d: inline directory of %d bytes", in.num, len(b))
		}
		if err := fn(dirent{".", in.num}); err != nil {
			return err
		}
		if err := fn(dirent{"..", binary.LittleEndian.Uint32(b)}); err != nil {
			return err
		}
		first := b[4:min(len(b), 60)]
		if err := f.parseEntries(in.num, first, fn); err != nil {
			return err
		}
		if len(b) > 60 {
			return f.parseEntries(in.num, b[60:], fn)
		}
		return nil
	}
	if in.size%f.blockSize != 0 {
		return corrupt("inode %d: directory size %d is not a multiple of the block size", in.num, in.size)
	}
	blk := make([]byte, f.blockSize)
	for off := int64(0); off < in.size; off += f.blockSize {
		if _, err := d.ReadAt(blk, off); err != nil {
			return err
		}
		if err := f.parseEntries(in.num, blk, fn); err != nil {
			return err
		}
	}
	return nil
}

// parseEntries walks the entries of one directory block (or inline region), which they
// must tile exactly. Entries with inode 0 are unused space, the checksum tail
// (ext4_dir_entry_tail) or an htree index block's fake entry: skipped.
func (f *FS) parseEntries(dir uint32, b []byte, fn func(dirent) error) error {
	filetype := f.incompat&incompatFiletype != 0
	for off := 0; off < len(b); {
		if off+8 > len(b) {
			return corrupt("directory inode %d: entry header past the block at byte %d", dir, off)
		}
		ino := binary.LittleEndian.Uint32(b[off:])
		recLen := int(binary.LittleEndian.Uint16(b[off+4:]))
		if f.blockSize == 65536 && (recLen == 65535 || recLen == 0) {
			recLen = 65536 // ext4_rec_len_from_disk: 64 KiB does not fit 16 bits
		}
		nameLen := int(b[off+6])
		if !filetype {
			nameLen = int(binary.LittleEndian.Uint16(b[off+6:]))
		}
		if recLen < 8 || recLen%4 != 0 || off+recLen > len(b) || 8+nameLen > recLen {
			return corrupt("directory inode %d: entry at byte %d with rec_len %d, name_len %d", dir, off, recLen, nameLen)
		}
		if ino != 0 && nameLen > 0 {
			if ino > f.inodeCount {
				return corrupt("directory inode %d: entry names inode %d", dir, ino)
			}
			name := string(b[off+8 : off+8+nameLen])
			if strings.ContainsAny(name, "/\x00") {
				return corrupt("directory inode %d: entry name %q", dir, name)
			}
			if err := fn(dirent{name, ino}); err != nil {
				return err
			}
		}
		off += recLen
	}
	return nil
}

// lookup finds name in directory in.
func (f *FS) lookup(in *inode, name string) (uint32, bool, error) {
	var found uint32
	err := f.entries(in, func(e dirent) error {
		if e.name == name {
			found = e.ino
			return errStop
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStop) {
		return 0, false, err
	}
	return found, found != 0, nil
}

// list returns the entries of directory in, without "." and "..".
func (f *FS) list(in *inode) ([]dirent, error) {
	var out []dirent
	err := f.entries(in, func(e dirent) error {
		if e.name == "." || e.name == ".." {
			return nil
		}
		if len(out) >= maxEntries {
			return corrupt("directory inode %d: more than %d entries", in.num, maxEntries)
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// readLink returns a symbolic link's target: in i_block when it is short (a fast symlink,
// no extents and no inline data), else in the link's content.
func (f *FS) readLink(in *inode) (string, error) {
	if in.size == 0 || in.size > maxLinkTarget {
		return "", corrupt("inode %d: symbolic link of %d bytes", in.num, in.size)
	}
	if in.flags&(flagExtents|flagInlineData) == 0 && in.size < 60 {
		return string(in.iblock()[:in.size]), nil
	}
	d, err := f.content(in)
	if err != nil {
		return "", err
	}
	b := make([]byte, in.size)
	if _, err := d.ReadAt(b, 0); err != nil {
		return "", fmt.Errorf("inode %d: symbolic link target: %w", in.num, err)
	}
	return string(b), nil
}
