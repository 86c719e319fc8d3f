package ext4

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"slices"
	"strings"
	"time"
)

var (
	_ fs.FS          = (*FS)(nil)
	_ fs.ReadDirFS   = (*FS)(nil)
	_ fs.StatFS      = (*FS)(nil)
	_ fs.ReadLinkFS  = (*FS)(nil)
	_ io.ReaderAt    = (*File)(nil)
	_ io.Seeker      = (*File)(nil)
	_ fs.ReadDirFile = (*dirFile)(nil)
)

// errNotDir is a path component that is not a directory (ENOTDIR).
var errNotDir = errors.New("not a directory")

// resolve walks name (an fs.ValidPath) from the root, following symbolic links in every
// component, and in the last one too when follow is set. Link targets are resolved inside
// this file system: an absolute target starts again at its root and ".." stops there, as
// under chroot.
func (f *FS) resolve(name string, follow bool) (*inode, error) {
	root, err := f.readInode(rootIno)
	if err != nil {
		return nil, err
	}
	if !root.isDir() {
		return nil, corrupt("the root inode is not a directory")
	}
	stack := []*inode{root}
	var comps []string
	if name != "." {
		comps = strings.Split(name, "/")
	}
	links := 0
	for len(comps) > 0 {
		c := comps[0]
		comps = comps[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		dir := stack[len(stack)-1]
		if !dir.isDir() {
			return nil, errNotDir
		}
		ino, ok, err := f.lookup(dir, c)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fs.ErrNotExist
		}
		in, err := f.readInode(ino)
		if err != nil {
			return nil, err
		}
		if in.isSymlink() && (len(comps) > 0 || follow) {
			links++
			if links > MaxSymlinks {
				return nil, ErrSymlinkLoop
			}
			target, err := f.readLink(in)
			if err != nil {
				return nil, err
			}
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			comps = append(strings.Split(target, "/"), comps...)
			continue
		}
		stack = append(stack, in)
	}
	return stack[len(stack)-1], nil
}

func (f *FS) pathError(op, name string, err error) error {
	return &fs.PathError{Op: op, Path: name, Err: err}
}

// Open opens the named file or directory, following symbolic links. Files are *File.
func (f *FS) Open(name string) (fs.File, error) {
	if !fs.ValidPath(name) {
		return nil, f.pathError("open", name, fs.ErrInvalid)
	}
	in, err := f.resolve(name, true)
	if err != nil {
		return nil, f.pathError("open", name, err)
	}
	info := &fileInfo{name: path.Base(name), in: in}
	if in.isDir() {
		return &dirFile{f: f, in: in, info: info}, nil
	}
	if !in.isRegular() {
		return nil, f.pathError("open", name, fmt.Errorf("not a regular file (%v)", in.fileMode().Type()))
	}
	d, err := f.content(in)
	if err != nil {
		return nil, f.pathError("open", name, err)
	}
	return &File{d: d, info: info}, nil
}

// OpenFile opens a regular file for reading at any offset.
func (f *FS) OpenFile(name string) (*File, error) {
	h, err := f.Open(name)
	if err != nil {
		return nil, err
	}
	file, ok := h.(*File)
	if !ok {
		h.Close()
		return nil, f.pathError("open", name, errors.New("is a directory"))
	}
	return file, nil
}

// ReadDir lists a directory sorted by name, as fs.ReadDir does.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if !fs.ValidPath(name) {
		return nil, f.pathError("readdir", name, fs.ErrInvalid)
	}
	in, err := f.resolve(name, true)
	if err != nil {
		return nil, f.pathError("readdir", name, err)
	}
	if !in.isDir() {
		return nil, f.pathError("readdir", name, errNotDir)
	}
	list, err := f.dirEntries(in)
	if err != nil {
		return nil, f.pathError("readdir", name, err)
	}
	return list, nil
}

func (f *FS) dirEntries(in *inode) ([]fs.DirEntry, error) {
	ents, err := f.list(in)
	if err != nil {
		return nil, err
	}
	out := make([]fs.DirEntry, 0, len(ents))
	for _, e := range ents {
		ein, err := f.readInode(e.ino)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
		out = append(out, fs.FileInfoToDirEntry(&fileInfo{name: e.name, in: ein}))
	}
	slices.SortFunc(out, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return out, nil
}

// Stat describes the named file, following symbolic links.
func (f *FS) Stat(name string) (fs.FileInfo, error) { return f.stat("stat", name, true) }

// Lstat describes the named file; a symbolic link is described, not followed.
func (f *FS) Lstat(name string) (fs.FileInfo, error) { return f.stat("lstat", name, false) }

func (f *FS) stat(op, name string, follow bool) (fs.FileInfo, error) {
	if !fs.ValidPath(name) {
		return nil, f.pathError(op, name, fs.ErrInvalid)
	}
	in, err := f.resolve(name, follow)
	if err != nil {
		return nil, f.pathError(op, name, err)
	}
	return &fileInfo{name: path.Base(name), in: in}, nil
}

// ReadLink returns the target of the named symbolic link.
func (f *FS) ReadLink(name string) (string, error) {
	if !fs.ValidPath(name) {
		return "", f.pathError("readlink", name, fs.ErrInvalid)
	}
	in, err := f.resolve(name, false)
	if err != nil {
		return "", f.pathError("readlink", name, err)
	}
	if !in.isSymlink() {
		return "", f.pathError("readlink", name, errors.New("not a symbolic link"))
	}
	t, err := f.readLink(in)
	if err != nil {
		return "", f.pathError("readlink", name, err)
	}
	return t, nil
}

// fileInfo is an fs.FileInfo of an inode.
type fileInfo struct {
	name string
	in   *inode
}

func (i *fileInfo) Name() string       { return i.name }
func (i *fileInfo) Size() int64        { return i.in.size }
func (i *fileInfo) Mode() fs.FileMode  { return i.in.fileMode() }
func (i *fileInfo) ModTime() time.Time { return i.in.modTime() }
func (i *fileInfo) IsDir() bool        { return i.in.isDir() }

// Sys returns the inode number (uint32).
func (i *fileInfo) Sys() any { return i.in.num }

// File is an open regular file. It reads at any offset (io.ReaderAt) and keeps no state but
// the offset Read and Seek use; it holds no resources, so Close only ends its use.
type File struct {
	d    *data
	info *fileInfo
	off  int64
}

// Stat describes the file.
func (fl *File) Stat() (fs.FileInfo, error) { return fl.info, nil }

// Size is the file's size in bytes.
func (fl *File) Size() int64 { return fl.d.size }

// ReadAt reads len(p) bytes at off; at the end of the file it returns io.EOF.
func (fl *File) ReadAt(p []byte, off int64) (int, error) { return fl.d.ReadAt(p, off) }

// Read reads from the current offset.
func (fl *File) Read(p []byte) (int, error) {
	n, err := fl.d.ReadAt(p, fl.off)
	fl.off += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

// Seek sets the offset for the next Read.
func (fl *File) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += fl.off
	case io.SeekEnd:
		offset += fl.d.size
	default:
		return 0, fmt.Errorf("ext4: seek whence %d", whence)
	}
	if offset < 0 {
		return 0, fmt.Errorf("ext4: seek to negative offset %d", offset)
	}
	fl.off = offset
	return offset, nil
}

// Close ends the file's use.
func (fl *File) Close() error { return nil }

// dirFile is an open directory.
type dirFile struct {
	f    *FS
	in   *inode
	info *fileInfo
	list []fs.DirEntry
	read bool
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.name, Err: errors.New("is a directory")}
}
func (d *dirFile) Close() error { return nil }

// ReadDir returns the next n entries (all with n <= 0), as fs.ReadDirFile does.
func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	if !d.read {
		l, err := d.f.dirEntries(d.in)
		if err != nil {
			return nil, err
		}
		d.list, d.read = l, true
	}
	if n <= 0 {
		out := d.list
		d.list = nil
		return out, nil
	}
	if len(d.list) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(d.list))
	out := d.list[:n]
	d.list = d.list[n:]
	return out, nil
}
