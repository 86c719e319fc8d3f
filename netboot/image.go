package netboot

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nbdroot/nbdroot/luks"
	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/netboot/ext4"
)

// Root is how a client names its root file system on its NBD device.
type Root struct {
	// Device holds the root: /dev/nbd0, or /dev/nbd0pN for a partitioned image.
	Device string
	// LUKS says Device is a LUKS volume: the command line unlocks it (cryptdevice=) and
	// mounts the unlocked mapping.
	LUKS bool
}

// fsAt locates a boot directory: in the file system at [offset, offset+size) of an image,
// or in a host directory.
type fsAt struct {
	hostDir      bool
	offset, size int64
	dir          string // "boot" or "." inside the file system or host directory
}

// scan is what one image holds for booting.
type scan struct {
	root    *Root // nil: no root file system recognised
	boot    *fsAt // nil: no kernels
	kernels []Kernel
	notes   []string
}

// isLUKS reports whether r starts a LUKS volume. A damaged LUKS header still counts: the
// client's encrypt hook says what is wrong with it, which beats booting it as plain.
func isLUKS(r io.ReaderAt) bool {
	_, err := luks.Open(r)
	return !errors.Is(err, luks.ErrNotLUKS)
}

// fsCandidate is an ext4 file system of an image.
type fsCandidate struct {
	dev          string
	offset, size int64
	fsys         *ext4.FS
}

// scanImage reads an image (size bytes of r): the root's device, and the newest kernels,
// from the root's /boot or a separate /boot file system. It understands a file system on
// the whole image, a LUKS volume on the whole image (no kernels then), and MBR or GPT
// partitions holding file systems or LUKS volumes.
func scanImage(r io.ReaderAt, size int64) (*scan, error) {
	s := &scan{}
	if isLUKS(r) {
		s.root = &Root{Device: "/dev/nbd0", LUKS: true}
		s.notes = append(s.notes, "the image is a LUKS volume: its kernels must come from a separate boot source")
		return s, nil
	}
	var cands []fsCandidate
	var luksParts []string
	whole, err := ext4.Open(r, size)
	switch {
	case err == nil:
		cands = append(cands, fsCandidate{"/dev/nbd0", 0, size, whole})
		s.root = &Root{Device: "/dev/nbd0"}
	case !errors.Is(err, ext4.ErrNotExt4):
		return nil, fmt.Errorf("the file system on the whole image: %w", err)
	default:
		parts, err := Partitions(r, size)
		if err != nil {
			return nil, err
		}
		if parts == nil {
			return nil, errors.New("neither an ext2/3/4 file system, a LUKS volume nor a partition table")
		}
		for _, p := range parts {
			dev := fmt.Sprintf("/dev/nbd0p%d", p.Number)
			sub := io.NewSectionReader(r, p.Start, p.Size)
			if isLUKS(sub) {
				luksParts = append(luksParts, dev)
				continue
			}
			fsys, err := ext4.Open(sub, p.Size)
			if err != nil {
				if !errors.Is(err, ext4.ErrNotExt4) {
					s.notes = append(s.notes, fmt.Sprintf("partition %d: %v", p.Number, err))
				}
				continue
			}
			cands = append(cands, fsCandidate{dev, p.Start, p.Size, fsys})
		}
	}
	// Kernels: the /boot of a file system, else the top of one (a separate /boot
	// partition). The root is the file system whose /boot it was.
	for _, dir := range []string{"boot", "."} {
		for _, c := range cands {
			ks, notes, err := FindKernels(c.fsys, dir)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				s.notes = append(s.notes, fmt.Sprintf("%s /%s: %v", c.dev, strings.TrimPrefix(dir, "."), err))
			}
			for _, n := range notes {
				s.notes = append(s.notes, fmt.Sprintf("%s /%s: %s", c.dev, strings.TrimPrefix(dir, "."), n))
			}
			if len(ks) == 0 {
				continue
			}
			s.kernels = ks
			s.boot = &fsAt{offset: c.offset, size: c.size, dir: dir}
			if dir == "boot" && s.root == nil {
				s.root = &Root{Device: c.dev}
			}
			break
		}
		if s.boot != nil {
			break
		}
	}
	if s.root == nil {
		// A separate /boot: the root is the partition that holds /etc, else a LUKS one.
		for _, c := range cands {
			if fi, err := fs.Stat(c.fsys, "etc"); err == nil && fi.IsDir() {
				s.root = &Root{Device: c.dev}
				break
			}
		}
	}
	if s.root == nil && len(luksParts) > 0 {
		s.root = &Root{Device: luksParts[0], LUKS: true}
	}
	return s, nil
}

// scanDir reads a host directory of kernels (a --boot-source directory): its top, else its
// boot/ subdirectory. Symbolic links cannot leave it (os.Root).
func scanDir(dir string) (*scan, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	s := &scan{}
	for _, sub := range []string{".", "boot"} {
		ks, notes, err := FindKernels(root.FS(), sub)
		s.notes = append(s.notes, notes...)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		if len(ks) > 0 {
			s.kernels, s.boot = ks, &fsAt{hostDir: true, dir: sub}
			break
		}
	}
	return s, nil
}

// Boot is an export's boot material as read at one moment; it is never changed.
type Boot struct {
	// Export is the export's name; Default says clients get it for the empty name.
	Export  string
	Default bool
	// Image is the export's image; Source is where the kernels were read (the image, or
	// its --boot-source).
	Image, Source string
	Root          Root
	// Kernels are the bootable pairs, newest first; never empty.
	Kernels []Kernel
	// Notes say what was skipped while reading, for the log.
	Notes []string
	where fsAt
}

// Newest is the kernel clients boot.
func (b *Boot) Newest() Kernel { return b.Kernels[0] }

// Has reports whether name is a kernel or initramfs file of b.
func (b *Boot) Has(name string) bool {
	for _, k := range b.Kernels {
		if k.Kernel == name || k.Initrd == name {
			return true
		}
	}
	return false
}

// BootFile is an open kernel or initramfs.
type BootFile struct {
	io.ReaderAt
	Name    string
	Size    int64
	ModTime time.Time
	closer  io.Closer
}

// Close releases the image or file the content is read from.
func (f *BootFile) Close() error { return f.closer.Close() }

// Open opens one of b's kernel or initramfs files by name (Has must be true): the content
// as it is now, read through the file system without mounting it.
func (b *Boot) Open(name string) (*BootFile, error) {
	if !b.Has(name) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	p := path.Join(b.where.dir, name)
	if b.where.hostDir {
		root, err := os.OpenRoot(b.Source)
		if err != nil {
			return nil, err
		}
		defer root.Close()
		f, err := root.Open(p)
		if err != nil {
			return nil, err
		}
		st, err := f.Stat()
		if err != nil || !st.Mode().IsRegular() || st.Size() > MaxBootFile {
			f.Close()
			return nil, fmt.Errorf("%s: not a regular file of at most %d bytes", p, MaxBootFile)
		}
		return &BootFile{ReaderAt: f, Name: name, Size: st.Size(), ModTime: st.ModTime(), closer: f}, nil
	}
	img, err := os.Open(b.Source)
	if err != nil {
		return nil, err
	}
	fsys, err := ext4.Open(io.NewSectionReader(img, b.where.offset, b.where.size), b.where.size)
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("%s: %w", b.Source, err)
	}
	f, err := fsys.OpenFile(p)
	if err != nil {
		img.Close()
		return nil, fmt.Errorf("%s: %w", b.Source, err)
	}
	if f.Size() > MaxBootFile {
		img.Close()
		return nil, fmt.Errorf("%s: /%s is %d bytes", b.Source, p, f.Size())
	}
	st, _ := f.Stat()
	return &BootFile{ReaderAt: f, Name: name, Size: f.Size(), ModTime: st.ModTime(), closer: img}, nil
}

// ExportError is a failure to find what an export boots; Export is "" for the default.
type ExportError struct {
	Export string
	Err    error
}

func (e *ExportError) Error() string {
	name := fmt.Sprintf("export %q", e.Export)
	if e.Export == "" {
		name = "the default export"
	}
	return name + ": " + e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ExportError) Unwrap() error { return e.Err }

// ErrNoExport is wrapped when no export has the asked name (or there is no default).
var ErrNoExport = errors.New("no such export")

// DefaultTTL is how long a Catalog trusts what it read from an unchanged image: block
// devices and directories do not change their stamp when written.
const DefaultTTL = 5 * time.Second

// stamp identifies a version of a file: a write or a replacement changes it (for regular
// files; see DefaultTTL for the rest).
type stamp struct {
	dev, ino uint64
	size     int64
	mtime    time.Time
}

func stampOf(p string) (stamp, error) {
	st, err := os.Stat(p)
	if err != nil {
		return stamp{}, err
	}
	s := stamp{size: st.Size(), mtime: st.ModTime()}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		s.dev, s.ino = uint64(sys.Dev), uint64(sys.Ino)
	}
	return s, nil
}

type cached struct {
	stamps [2]stamp
	at     time.Time
	boot   *Boot
	err    error
}

// Catalog knows the exports and reads each one's boot material on demand, again whenever
// its image (or boot source) changes and at least every TTL, so a kernel installed inside a
// client shows up at its next boot and a removed one stops being offered. It is safe for
// concurrent use.
type Catalog struct {
	// TTL: see DefaultTTL (0 means DefaultTTL).
	TTL time.Duration
	// Sources maps export names to a boot source: an image or a host directory holding the
	// kernels instead of the export's own image (a LUKS root).
	Sources map[string]string

	mu      sync.Mutex
	exports []nbdserver.Export
	cache   map[string]*cached
	now     func() time.Time
}

// SetExports replaces the export list (the server's configuration, after a reload too).
func (c *Catalog) SetExports(exports []nbdserver.Export) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.exports = append([]nbdserver.Export(nil), exports...)
	c.cache = nil
}

// Exports returns the export list.
func (c *Catalog) Exports() []nbdserver.Export {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]nbdserver.Export(nil), c.exports...)
}

// export finds an export by name; "" is the default export.
func (c *Catalog) export(name string) (nbdserver.Export, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if name == "" {
		if d := nbdserver.DefaultExport(c.exports); d != nil {
			return *d, true
		}
		return nbdserver.Export{}, false
	}
	for _, e := range c.exports {
		if e.Name == name {
			return e, true
		}
	}
	return nbdserver.Export{}, false
}

// Lookup returns what export name ("" for the default export) boots. Errors are
// *ExportError.
func (c *Catalog) Lookup(name string) (*Boot, error) {
	e, ok := c.export(name)
	if !ok {
		return nil, &ExportError{name, ErrNoExport}
	}
	src := c.Sources[e.Name]
	var st [2]stamp
	var err error
	if st[0], err = stampOf(e.Path); err != nil {
		return nil, &ExportError{name, err}
	}
	if src != "" {
		if st[1], err = stampOf(src); err != nil {
			return nil, &ExportError{name, fmt.Errorf("boot source: %w", err)}
		}
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	ttl := c.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	key := name // "" and the default export's name boot alike but name the export differently
	c.mu.Lock()
	hit := c.cache[key]
	c.mu.Unlock()
	if hit != nil && hit.stamps == st && now().Sub(hit.at) < ttl {
		return hit.boot, hit.err
	}
	b, err := read(e, src)
	if err != nil {
		err = &ExportError{name, err}
	} else {
		b.Default = name == ""
	}
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]*cached{}
	}
	c.cache[key] = &cached{stamps: st, at: now(), boot: b, err: err}
	c.mu.Unlock()
	return b, err
}

// read reads an export's boot material: the root from its image, the kernels from its
// image or its boot source.
func read(e nbdserver.Export, src string) (*Boot, error) {
	img, err := scanPath(e.Path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.Path, err)
	}
	b := &Boot{Export: e.Name, Image: e.Path, Source: e.Path, Notes: img.notes}
	if img.root == nil {
		return nil, fmt.Errorf("%s: no root file system found (a file system or LUKS volume on the whole image, or a partition with /etc or LUKS)", e.Path)
	}
	b.Root = *img.root
	kern := img
	if src != "" {
		b.Source = src
		if kern, err = scanPath(src); err != nil {
			return nil, fmt.Errorf("boot source %s: %w", src, err)
		}
		b.Notes = append(b.Notes, kern.notes...)
	}
	if kern.boot == nil {
		where := b.Source + ": /boot"
		if src != "" {
			where = src
		}
		return nil, fmt.Errorf("%s: %w (vmlinuz-VERSION beside nbdroot.img-VERSION)%s", where, ErrNoKernel, noteSuffix(b.Notes))
	}
	b.Kernels, b.where = kern.kernels, *kern.boot
	return b, nil
}

func noteSuffix(notes []string) string {
	if len(notes) == 0 {
		return ""
	}
	return "; " + strings.Join(notes, "; ")
}

// scanPath scans an image file, block device or host directory.
func scanPath(p string) (*scan, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		return scanDir(p)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	size := st.Size()
	if !st.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	return scanImage(f, size)
}
