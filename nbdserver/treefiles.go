package nbdserver

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"

	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// Tree exports (nbd-server(5) "treefiles"): the image is a directory tree of 4096-byte
// files, one per block, each made on its first write. nbd-server's treefiles.c names them:
// block b is FILEdddd under TREEdddd directories, dddd being b's base-1024 digits in
// four upper-case hex digits, the last digit in the file name, one directory level per
// further digit the export's size needs. A missing file reads as zeroes. Files are opened
// per request, as nbd-server does: a tree may have millions of them.
const (
	treeBlockShift = 12
	treeBlock      = 1 << treeBlockShift // TREEPAGESIZE
	treeDirSize    = 1024                // TREEDIRSIZE: files (or directories) per directory
	treeStripes    = 64
	treeSyncers    = 16 // syncs a FLUSH runs at once
	// treeMaxDirty bounds the blocks written since the last FLUSH that the backend
	// remembers to sync; past it a write syncs them itself.
	treeMaxDirty = 1 << 16
)

// treeLevels is how many TREE directories lie above each block file of an export of size
// bytes: nbd-server's construct_path divides the size by 1024 until it is under 4 MiB.
func treeLevels(size int64) int {
	n := 0
	for s := size; s >= treeDirSize*treeBlock; s /= treeDirSize {
		n++
	}
	return n
}

// treeBlockPath is the file of block blk of a tree export at root with levels directory
// levels (treeLevels).
func treeBlockPath(root string, levels int, blk int64) string {
	var b strings.Builder
	b.Grow(len(root) + 9*(levels+1))
	b.WriteString(root)
	for l := levels; l >= 1; l-- {
		fmt.Fprintf(&b, "/TREE%04X", (blk>>(10*l))%treeDirSize)
	}
	fmt.Fprintf(&b, "/FILE%04X", blk%treeDirSize)
	return b.String()
}

// validateTreeExport checks what a tree export (Export.Tree) needs; the INI reader names
// the treefiles line with it.
func validateTreeExport(e *Export) error {
	if !e.Tree {
		return nil
	}
	switch {
	case objstore.IsURL(e.Path):
		return errors.New("treefiles: the tree is a local directory, not an s3:// object")
	case e.CreateSize <= 0:
		return errors.New("treefiles needs filesize, the size of the export (a tree has no size of its own)")
	case e.Temporary:
		return errors.New("treefiles and temporary do not mix: a temporary image is one unlinked file")
	}
	return nil
}

// treeKey identifies a tree export's image: its directory, created if the export writes
// to it, and its size (one directory served at two sizes would map blocks differently).
// A read-only tree may not exist yet: it reads as zeroes, as in nbd-server.
func treeKey(e *Export) (fileKey, error) {
	root := filepath.Clean(e.Path)
	if imageWritable(e) {
		if err := ovstore.MkdirAllSynced("", root); err != nil {
			return fileKey{}, fmt.Errorf("treefiles: %w", err)
		}
	}
	st, err := os.Stat(root)
	switch {
	case errors.Is(err, fs.ErrNotExist) && !imageWritable(e):
		return fileKey{obj: fmt.Sprintf("tree:%d:%s", e.CreateSize, root)}, nil
	case err != nil:
		return fileKey{}, fmt.Errorf("treefiles: %w", err)
	case !st.IsDir():
		return fileKey{}, fmt.Errorf("treefiles: %s is not a directory", root)
	}
	k := keyOf(st)
	k.obj = fmt.Sprintf("tree:%d", e.CreateSize)
	return k, nil
}

// treeBackend serves a tree export. Requests on one block are serialised by a stripe lock
// (reads share it), so a write never lands in a file a concurrent zeroing is unlinking.
// FLUSH syncs the files written and the directories changed since the last one.
type treeBackend struct {
	root     string
	levels   int
	size     int64
	readOnly bool
	lock     *os.File // the root directory, flocked as fileBackend locks an image; nil if missing

	stripes [treeStripes]sync.RWMutex

	// flushMu makes flushes one at a time: a FLUSH must not return while an earlier one
	// still syncs blocks it took out of the dirty sets.
	flushMu sync.Mutex
	mu      sync.Mutex          // guards the dirty sets
	files   map[int64]struct{}  // blocks written since the last flush
	dirs    map[string]struct{} // directories whose entries changed since the last flush

	// syncFile and syncDirectory make a block file or a directory durable; tests record
	// and fail them.
	syncFile      func(f *os.File) error
	syncDirectory func(path string) error
}

var (
	_ Backend = (*treeBackend)(nil)
	_ cowBase = (*treeBackend)(nil)
)

// openTree opens the tree at root as an export of size bytes. Read-write opens take an
// exclusive flock on the directory (shared for read-only ones), as openFile does on images.
func openTree(root string, size int64, readOnly bool) (*treeBackend, error) {
	root = filepath.Clean(root)
	b := &treeBackend{
		root: root, levels: treeLevels(size), size: size, readOnly: readOnly,
		files: map[int64]struct{}{}, dirs: map[string]struct{}{},
		syncFile:      func(f *os.File) error { return fdatasync(int(f.Fd())) },
		syncDirectory: ovstore.SyncDir,
	}
	d, err := os.Open(root)
	switch {
	case errors.Is(err, fs.ErrNotExist) && readOnly:
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("treefiles: %w", err)
	}
	if err := lockFile(int(d.Fd()), !readOnly); err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: %w", root, err)
	}
	b.lock = d
	return b, nil
}

func (b *treeBackend) Size() int64 { return b.size }

func (b *treeBackend) stripe(blk int64) *sync.RWMutex { return &b.stripes[blk%treeStripes] }

// eachBlock calls fn for the blocks [off, off+n) touches, with the range within the block
// and where it starts in the request.
func eachBlock(off, n int64, fn func(blk, boff, bn, pos int64) error) error {
	for pos := int64(0); pos < n; {
		blk, boff := (off+pos)>>treeBlockShift, (off+pos)&(treeBlock-1)
		bn := min(treeBlock-boff, n-pos)
		if err := fn(blk, boff, bn, pos); err != nil {
			return err
		}
		pos += bn
	}
	return nil
}

func (b *treeBackend) ReadAt(p []byte, off int64) error {
	return eachBlock(off, int64(len(p)), func(blk, boff, bn, pos int64) error {
		if err := b.readBlock(blk, p[pos:pos+bn], boff); err != nil {
			return &BackendError{"read", off + pos, bn, err}
		}
		return nil
	})
}

// readBlock fills q from offset boff of a block; a missing file (or the part beyond a
// short one) reads as zeroes.
func (b *treeBackend) readBlock(blk int64, q []byte, boff int64) error {
	mu := b.stripe(blk)
	mu.RLock()
	defer mu.RUnlock()
	f, err := os.Open(treeBlockPath(b.root, b.levels, blk))
	if errors.Is(err, fs.ErrNotExist) {
		clear(q)
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	for len(q) > 0 {
		n, err := pread(int(f.Fd()), q, boff)
		if err != nil {
			return err
		}
		if n == 0 {
			clear(q)
			break
		}
		q, boff = q[n:], boff+int64(n)
	}
	return nil
}

// ReadAtNoWait never reads: every read opens a file, which may wait.
func (b *treeBackend) ReadAtNoWait(p []byte, off int64) (bool, error) { return false, nil }

func (b *treeBackend) WriteAt(p []byte, off int64, fua bool) error {
	if b.readOnly {
		return ErrReadOnly
	}
	err := eachBlock(off, int64(len(p)), func(blk, boff, bn, pos int64) error {
		if err := b.writeBlock(blk, p[pos:pos+bn], boff); err != nil {
			return &BackendError{"write", off + pos, bn, err}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return b.afterChange(fua)
}

// afterChange syncs what a change left dirty when FUA asks for it (nbd-server "sync" sets
// FUA on every write), or when the dirty set has grown past its bound. A FUA write needs
// more than its own file synced: the directories that lead to a new file, maybe made by
// other unflushed writes.
func (b *treeBackend) afterChange(fua bool) error {
	b.mu.Lock()
	many := len(b.files) > treeMaxDirty
	b.mu.Unlock()
	if fua || many {
		return b.Flush()
	}
	return nil
}

// writeBlock stores q at offset boff of a block, creating its file (4096 bytes, as
// nbd-server makes them) and directories first if needed.
func (b *treeBackend) writeBlock(blk int64, q []byte, boff int64) error {
	mu := b.stripe(blk)
	mu.Lock()
	defer mu.Unlock()
	f, err := b.openForWrite(blk)
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	for len(q) > 0 {
		n, err := pwrite(fd, q, boff, false)
		if err != nil {
			return err
		}
		q, boff = q[n:], boff+int64(n)
	}
	b.mu.Lock()
	b.files[blk] = struct{}{}
	b.mu.Unlock()
	return f.Close()
}

// openForWrite opens a block's file for writing, creating it and its directories if
// missing; each directory that gains an entry is remembered for the next flush.
func (b *treeBackend) openForWrite(blk int64) (*os.File, error) {
	path := treeBlockPath(b.root, b.levels, blk)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	// Directories from the top: each one made is a new entry in its parent.
	rel := strings.TrimPrefix(path, b.root)
	parts := strings.Split(strings.TrimPrefix(rel, "/"), "/")
	dir := b.root
	for _, name := range parts[:len(parts)-1] {
		sub := dir + "/" + name
		switch err := os.Mkdir(sub, 0o700); {
		case err == nil:
			b.dirty(dir)
		case !errors.Is(err, fs.ErrExist):
			return nil, err
		}
		dir = sub
	}
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return os.OpenFile(path, os.O_RDWR, 0)
	}
	if err != nil {
		return nil, err
	}
	b.dirty(dir)
	if err := f.Truncate(treeBlock); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (b *treeBackend) dirty(dir string) {
	b.mu.Lock()
	b.dirs[dir] = struct{}{}
	b.mu.Unlock()
}

// Flush syncs every block file written and every directory changed since the last flush.
// On failure they stay on the list, so the next flush tries them again.
func (b *treeBackend) Flush() error {
	if b.readOnly {
		return nil
	}
	b.flushMu.Lock()
	defer b.flushMu.Unlock()
	b.mu.Lock()
	files, dirs := b.files, b.dirs
	b.files, b.dirs = map[int64]struct{}{}, map[string]struct{}{}
	b.mu.Unlock()
	err := b.syncAll(files, dirs)
	if err != nil {
		b.mu.Lock()
		for blk := range files {
			b.files[blk] = struct{}{}
		}
		for d := range dirs {
			b.dirs[d] = struct{}{}
		}
		b.mu.Unlock()
		return &BackendError{"flush", 0, b.size, err}
	}
	return nil
}

// syncAll syncs the files and directories, several at once: a file system commits its
// journal for many syncs together, which makes a FLUSH after many small writes several
// times faster than syncing one file after another.
func (b *treeBackend) syncAll(files map[int64]struct{}, dirs map[string]struct{}) error {
	var g errgroup.Group
	g.SetLimit(treeSyncers)
	for blk := range files {
		g.Go(func() error {
			f, err := os.Open(treeBlockPath(b.root, b.levels, blk))
			if errors.Is(err, fs.ErrNotExist) {
				return nil // unlinked since (zeroed): its directory is on the list
			}
			if err != nil {
				return err
			}
			defer f.Close()
			return b.syncFile(f)
		})
	}
	for d := range dirs {
		g.Go(func() error { return b.syncDirectory(d) })
	}
	return g.Wait()
}

// Trim removes the files of the blocks the range covers whole, as nbd-server does.
func (b *treeBackend) Trim(off, length int64, fua bool) error {
	if b.readOnly {
		return ErrReadOnly
	}
	first := (off + treeBlock - 1) >> treeBlockShift
	for blk := first; (blk+1)<<treeBlockShift <= off+length; blk++ {
		if err := b.removeBlock(blk); err != nil {
			return &BackendError{"trim", blk << treeBlockShift, treeBlock, err}
		}
	}
	return b.afterChange(fua)
}

// removeBlock unlinks a block's file: the block reads as zeroes again.
func (b *treeBackend) removeBlock(blk int64) error {
	mu := b.stripe(blk)
	mu.Lock()
	defer mu.Unlock()
	path := treeBlockPath(b.root, b.levels, blk)
	err := os.Remove(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	delete(b.files, blk)
	b.dirs[filepath.Dir(path)] = struct{}{}
	b.mu.Unlock()
	return nil
}

// Zero unlinks the files of whole blocks (unless noHole) and zeroes parts of the others;
// a missing block already reads as zeroes.
func (b *treeBackend) Zero(off, length int64, noHole, fast, fua bool) error {
	if b.readOnly {
		return ErrReadOnly
	}
	err := eachBlock(off, length, func(blk, boff, bn, pos int64) error {
		var err error
		if bn == treeBlock && !noHole {
			err = b.removeBlock(blk)
		} else {
			err = b.zeroBlock(blk, boff, bn, noHole, fast)
		}
		if err != nil && !errors.Is(err, ErrNotFast) {
			return &BackendError{"zero", off + pos, bn, err}
		}
		return err
	})
	if err != nil {
		return err
	}
	return b.afterChange(fua)
}

func (b *treeBackend) zeroBlock(blk, boff, bn int64, noHole, fast bool) error {
	mu := b.stripe(blk)
	mu.Lock()
	defer mu.Unlock()
	path := treeBlockPath(b.root, b.levels, blk)
	var f *os.File
	var err error
	if noHole {
		f, err = b.openForWrite(blk) // keep the block allocated: it gets a file
	} else {
		f, err = os.OpenFile(path, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	fd := int(f.Fd())
	if noHole {
		err = zeroRange(fd, boff, bn)
	} else {
		err = punchHole(fd, boff, bn)
	}
	if errors.Is(err, errUnsupported) {
		if fast {
			return ErrNotFast
		}
		err = writeZeroes(fd, boff, bn)
	}
	if err != nil {
		return err
	}
	b.mu.Lock()
	b.files[blk] = struct{}{}
	b.mu.Unlock()
	return f.Close()
}

// Extents reports blocks without a file as holes that read as zeroes, and the others as
// data. It lists each directory of block files once (1024 blocks) rather than looking
// at every block.
func (b *treeBackend) Extents(off, length int64, fn func(int64, uint32) bool) error {
	var runLen int64
	var runFlags uint32
	var dir string            // the directory listed last
	var names map[string]bool // its entries
	err := eachBlock(off, length, func(blk, boff, bn, pos int64) error {
		path := treeBlockPath(b.root, b.levels, blk)
		d, name := filepath.Split(path)
		if d != dir || names == nil {
			ents, err := os.ReadDir(d)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return &BackendError{"block status", off + pos, bn, err}
			}
			dir, names = d, make(map[string]bool, len(ents))
			for _, e := range ents {
				names[e.Name()] = true
			}
		}
		flags := uint32(0)
		if !names[name] {
			flags = nbd.StateHole | nbd.StateZero
		}
		if runLen > 0 && flags != runFlags {
			if !fn(runLen, runFlags) {
				runLen = 0
				return errStop
			}
			runLen = 0
		}
		runLen, runFlags = runLen+bn, flags
		return nil
	})
	if err != nil && err != errStop {
		return err
	}
	if runLen > 0 {
		fn(runLen, runFlags)
	}
	return nil
}

// errStop ends an eachBlock walk early without an error.
var errStop = errors.New("stop")

// Cache does nothing: the block files are opened per request, and read-ahead of files not
// yet opened is not worth a syscall each (CACHE is a hint, proto.md).
func (b *treeBackend) Cache(off, length int64) error { return nil }

// Close releases the directory lock; writes were flushed by the image's close.
func (b *treeBackend) Close() error {
	if b.lock == nil {
		return nil
	}
	return b.lock.Close()
}
