package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"

	"github.com/u-root/u-root/pkg/cpio"
)

// entryKind says what an archive entry is.
type entryKind uint8

const (
	kindDir entryKind = iota
	kindFile
	kindSymlink
	kindCharDev
)

// entry is one file of the image before it is written.
type entry struct {
	kind         entryKind
	perm         uint32
	data         []byte // file contents or symlink target
	major, minor uint32 // character devices
	// origin says where the entry came from, for conflict messages.
	origin string
}

// tree is the image being assembled: entries by clean absolute path. Writing it sorts the
// paths, so the archive does not depend on the order entries were added in.
type tree struct {
	entries map[string]*entry
}

func newTree() *tree { return &tree{entries: map[string]*entry{}} }

// ConflictError reports two different entries for one path of the image.
type ConflictError struct {
	Path          string
	First, Second string
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("image path %s: %s conflicts with %s", e.Path, e.Second, e.First)
}

// cleanImagePath returns p as a clean absolute image path or an error for paths that
// would leave the image root or name the root itself.
func cleanImagePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("image path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("image path %q names the root directory", p)
	}
	return c, nil
}

// add puts e at p, creating its parent directories. Adding an identical entry twice is
// fine (two hooks needing the same file); two different entries for one path are an error.
func (t *tree) add(p string, e *entry) error {
	p, err := cleanImagePath(p)
	if err != nil {
		return err
	}
	if old, ok := t.entries[p]; ok {
		if old.kind == e.kind && old.perm == e.perm && bytes.Equal(old.data, e.data) &&
			old.major == e.major && old.minor == e.minor {
			return nil
		}
		if old.kind == kindDir && e.kind == kindDir {
			return nil
		}
		return &ConflictError{Path: p, First: old.origin, Second: e.origin}
	}
	for d := path.Dir(p); d != "/"; d = path.Dir(d) {
		if old, ok := t.entries[d]; ok {
			if old.kind != kindDir {
				return &ConflictError{Path: d, First: old.origin, Second: "directory for " + p}
			}
			break
		}
		t.entries[d] = &entry{kind: kindDir, perm: 0o755, origin: "directory"}
	}
	t.entries[p] = e
	return nil
}

func (t *tree) dir(p string) error {
	return t.add(p, &entry{kind: kindDir, perm: 0o755, origin: "directory"})
}

func (t *tree) file(p string, data []byte, perm uint32, origin string) error {
	return t.add(p, &entry{kind: kindFile, perm: perm, data: data, origin: origin})
}

func (t *tree) symlink(p, target, origin string) error {
	return t.add(p, &entry{kind: kindSymlink, perm: 0o777, data: []byte(target), origin: origin})
}

func (t *tree) charDev(p string, perm, major, minor uint32, origin string) error {
	return t.add(p, &entry{kind: kindCharDev, perm: perm, major: major, minor: minor, origin: origin})
}

// paths returns the entries' paths sorted. Byte order puts every directory before its
// contents (a prefix sorts first), which the kernel's unpacker needs: it does not create
// missing parent directories (init/initramfs.c).
func (t *tree) paths() []string {
	ps := make([]string, 0, len(t.entries))
	for p := range t.entries {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// writeCPIO writes the tree as a newc archive with reproducible metadata: owner 0:0, every
// mtime = mtime, inode numbers by sorted position (1, 2, …), link count 1 for files and 2
// for directories (the kernel only looks at nlink to detect hard links of regular files,
// nlink ≥ 2, so files must say 1).
func (t *tree) writeCPIO(w io.Writer, mtime uint64) error {
	cw := cpio.Newc.Writer(w)
	for i, p := range t.paths() {
		e := t.entries[p]
		info := cpio.Info{
			Ino:   uint64(i + 1),
			Name:  strings.TrimPrefix(p, "/"),
			MTime: mtime,
			NLink: 1,
		}
		var rec cpio.Record
		switch e.kind {
		case kindDir:
			info.Mode = cpio.S_IFDIR | uint64(e.perm)
			info.NLink = 2
			rec = cpio.Record{Info: info}
		case kindFile:
			info.Mode = cpio.S_IFREG | uint64(e.perm)
			rec = cpio.StaticRecord(e.data, info)
		case kindSymlink:
			info.Mode = cpio.S_IFLNK | 0o777
			rec = cpio.StaticRecord(e.data, info)
		case kindCharDev:
			info.Mode = cpio.S_IFCHR | uint64(e.perm)
			info.Rmajor, info.Rminor = uint64(e.major), uint64(e.minor)
			rec = cpio.Record{Info: info}
		}
		if err := cw.WriteRecord(rec); err != nil {
			return fmt.Errorf("cpio %s: %w", p, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("cpio trailer: %w", err)
	}
	return nil
}
