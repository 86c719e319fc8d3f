package ext4

import (
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"time"
)

// errEOF is io.EOF: the end of a file's content.
var errEOF = io.EOF

// rootIno is the root directory's inode (EXT2_ROOT_INO).
const rootIno = 2

// Inode flags (i_flags; Documentation/filesystems/ext4/inodes.rst).
const (
	flagEncrypt    = 0x800
	flagExtents    = 0x80000
	flagInlineData = 0x10000000
)

// Mode type bits (i_mode & S_IFMT).
const (
	sIFMT   = 0xF000
	sIFIFO  = 0x1000
	sIFCHR  = 0x2000
	sIFDIR  = 0x4000
	sIFBLK  = 0x6000
	sIFREG  = 0x8000
	sIFLNK  = 0xA000
	sIFSOCK = 0xC000
)

// inode is one decoded inode.
type inode struct {
	num   uint32
	mode  uint16
	size  int64
	flags uint32
	mtime int64
	links uint16
	raw   []byte // the whole on-disk inode (i_block, the in-inode extended attributes)
}

func (in *inode) isDir() bool     { return in.mode&sIFMT == sIFDIR }
func (in *inode) isSymlink() bool { return in.mode&sIFMT == sIFLNK }
func (in *inode) isRegular() bool { return in.mode&sIFMT == sIFREG }

// iblock is i_block: the 60 bytes holding block pointers, the extent tree root, inline data
// or a fast symlink's target.
func (in *inode) iblock() []byte { return in.raw[0x28 : 0x28+60] }

// fileMode converts i_mode into an fs.FileMode.
func (in *inode) fileMode() fs.FileMode {
	m := fs.FileMode(in.mode & 0o777)
	if in.mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if in.mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if in.mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	switch in.mode & sIFMT {
	case sIFDIR:
		m |= fs.ModeDir
	case sIFLNK:
		m |= fs.ModeSymlink
	case sIFCHR:
		m |= fs.ModeDevice | fs.ModeCharDevice
	case sIFBLK:
		m |= fs.ModeDevice
	case sIFIFO:
		m |= fs.ModeNamedPipe
	case sIFSOCK:
		m |= fs.ModeSocket
	case sIFREG:
	default:
		m |= fs.ModeIrregular
	}
	return m
}

func (in *inode) modTime() time.Time { return time.Unix(in.mtime, 0) }

// readInode reads and decodes inode num.
func (f *FS) readInode(num uint32) (*inode, error) {
	if num == 0 || num > f.inodeCount {
		return nil, corrupt("inode number %d (the file system has %d)", num, f.inodeCount)
	}
	g := uint64(num-1) / uint64(f.inodesPerGroup)
	idx := int64(num-1) % int64(f.inodesPerGroup)
	table, err := f.inodeTable(g)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, f.inodeSize)
	if err := f.readAt(raw, int64(table)*f.blockSize+idx*f.inodeSize, fmt.Sprintf("inode %d", num)); err != nil {
		return nil, err
	}
	le16 := func(off int) uint16 { return binary.LittleEndian.Uint16(raw[off:]) }
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(raw[off:]) }
	in := &inode{
		num:   num,
		mode:  le16(0x0),
		size:  int64(uint64(le32(0x4)) | uint64(le32(0x6C))<<32),
		mtime: int64(int32(le32(0x10))),
		links: le16(0x1A),
		flags: le32(0x20),
		raw:   raw,
	}
	if in.size < 0 {
		return nil, corrupt("inode %d: size %d", num, uint64(in.size))
	}
	if in.links == 0 && in.mode == 0 {
		// A free inode named by a directory entry: the entry is stale.
		return nil, corrupt("inode %d: named by a directory entry but free", num)
	}
	if in.flags&flagEncrypt != 0 {
		return nil, &UnsupportedError{fmt.Sprintf("encryption (inode %d is encrypted)", num)}
	}
	return in, nil
}

// extent maps count blocks of a file starting at logical block to physical blocks from
// phys; a zero extent (a hole or an uninitialised extent) reads as zeros.
type extent struct {
	logical, phys, count uint64
	zero                 bool
}

// data is the content of an inode: inline bytes or a sorted list of extents.
type data struct {
	f       *FS
	ino     uint32
	size    int64
	inline  []byte
	extents []extent
}

// content maps an inode's content: its inline data, extent tree or block map.
func (f *FS) content(in *inode) (*data, error) {
	d := &data{f: f, ino: in.num, size: in.size}
	nblocks := uint64((in.size + f.blockSize - 1) / f.blockSize)
	switch {
	case in.flags&flagInlineData != 0:
		b, err := f.inlineData(in)
		if err != nil {
			return nil, err
		}
		d.inline = b
	case in.flags&flagExtents != 0:
		w := extentWalk{f: f, ino: in.num, nblocks: nblocks}
		if err := w.node(in.iblock(), -1, 0); err != nil {
			return nil, err
		}
		d.extents = w.out
	default:
		ex, err := f.blockMap(in, nblocks)
		if err != nil {
			return nil, err
		}
		d.extents = ex
	}
	return d, nil
}

// extentWalk collects the leaves of an extent tree in logical order.
type extentWalk struct {
	f       *FS
	ino     uint32
	nblocks uint64 // logical blocks the file's size covers
	nodes   int
	out     []extent
}

// node reads one extent tree node (ext4_extent_header, then entries): leaves add extents,
// index entries descend. want is the depth the parent expects (-1 for the root, which
// sets it), so a child pointing back up the tree is caught: each level's depth is exactly
// one less than its parent's, and the root's is at most maxDepth.
func (w *extentWalk) node(b []byte, want int, minLogical uint64) error {
	le16 := func(off int) uint16 { return binary.LittleEndian.Uint16(b[off:]) }
	if len(b) < 12 || le16(0) != 0xF30A {
		return corrupt("inode %d: extent header magic", w.ino)
	}
	entries, max, depth := int(le16(2)), int(le16(4)), int(le16(6))
	if entries > max || 12+12*max > len(b) {
		return corrupt("inode %d: extent node with %d of %d entries in %d bytes", w.ino, entries, max, len(b))
	}
	if depth > maxDepth || want >= 0 && depth != want {
		return corrupt("inode %d: extent node depth %d (expected %d)", w.ino, depth, want)
	}
	w.nodes++
	if w.nodes > maxTreeNodes {
		return corrupt("inode %d: extent tree with more than %d nodes", w.ino, maxTreeNodes)
	}
	for i := 0; i < entries; i++ {
		e := b[12+12*i : 24+12*i]
		logical := uint64(binary.LittleEndian.Uint32(e[0:]))
		if logical < minLogical {
			return corrupt("inode %d: extent entries out of order (block %d after %d)", w.ino, logical, minLogical)
		}
		if logical >= w.nblocks {
			return nil // beyond the file's size: preallocated blocks nobody reads
		}
		if depth == 0 {
			n := uint64(binary.LittleEndian.Uint16(e[4:]))
			zero := false
			if n > 32768 { // EXT_INIT_MAX_LEN: the top bit marks an uninitialised extent
				n, zero = n-32768, true
			}
			phys := uint64(binary.LittleEndian.Uint16(e[6:]))<<32 | uint64(binary.LittleEndian.Uint32(e[8:]))
			if n == 0 {
				return corrupt("inode %d: empty extent at block %d", w.ino, logical)
			}
			if !zero && (phys < w.f.firstDataBlock || phys >= w.f.blocks || phys+n > w.f.blocks) {
				return corrupt("inode %d: extent at block %d points to blocks %d+%d", w.ino, logical, phys, n)
			}
			if err := w.add(extent{logical: logical, phys: phys, count: n, zero: zero}); err != nil {
				return err
			}
			minLogical = logical + n
			continue
		}
		child := uint64(binary.LittleEndian.Uint16(e[8:]))<<32 | uint64(binary.LittleEndian.Uint32(e[4:]))
		if child < w.f.firstDataBlock || child >= w.f.blocks {
			return corrupt("inode %d: extent index points to block %d", w.ino, child)
		}
		nb := make([]byte, w.f.blockSize)
		if err := w.f.readAt(nb, int64(child)*w.f.blockSize, fmt.Sprintf("inode %d extent node", w.ino)); err != nil {
			return err
		}
		if err := w.node(nb, depth-1, max2(minLogical, logical)); err != nil {
			return err
		}
		if n := len(w.out); n > 0 {
			minLogical = w.out[n-1].logical + w.out[n-1].count
		}
	}
	return nil
}

func max2(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

// add appends an extent, merging it with the previous one when they are contiguous.
func (w *extentWalk) add(e extent) error {
	if n := len(w.out); n > 0 {
		p := &w.out[n-1]
		if e.logical < p.logical+p.count {
			return corrupt("inode %d: extents overlap at block %d", w.ino, e.logical)
		}
		if p.zero == e.zero && p.logical+p.count == e.logical && (e.zero || p.phys+p.count == e.phys) {
			p.count += e.count
			return nil
		}
	}
	if len(w.out) >= maxExtents {
		return corrupt("inode %d: more than %d extents", w.ino, maxExtents)
	}
	w.out = append(w.out, e)
	return nil
}

// blockMap reads an ext2/3 block map: i_block[0..11] point at data blocks, [12] at a block
// of pointers, [13] at a block of pointer blocks, [14] one level deeper. A zero pointer is
// a hole.
func (f *FS) blockMap(in *inode, nblocks uint64) ([]extent, error) {
	w := extentWalk{f: f, ino: in.num, nblocks: nblocks}
	perBlock := uint64(f.blockSize / 4)
	ib := in.iblock()
	logical := uint64(0)
	// visit maps the pointer ptr at tree level (0: data block) covering logical blocks
	// from logical on.
	var visit func(ptr uint64, level int) error
	visit = func(ptr uint64, level int) error {
		span := uint64(1)
		for i := 0; i < level; i++ {
			span *= perBlock
		}
		if logical >= nblocks {
			return nil
		}
		if ptr == 0 {
			logical += span
			return nil
		}
		if ptr < f.firstDataBlock || ptr >= f.blocks {
			return corrupt("inode %d: block pointer %d at block %d", in.num, ptr, logical)
		}
		if level == 0 {
			err := w.add(extent{logical: logical, phys: ptr, count: 1})
			logical++
			return err
		}
		w.nodes++
		if w.nodes > maxTreeNodes {
			return corrupt("inode %d: block map with more than %d indirect blocks", in.num, maxTreeNodes)
		}
		b := make([]byte, f.blockSize)
		if err := f.readAt(b, int64(ptr)*f.blockSize, fmt.Sprintf("inode %d indirect block", in.num)); err != nil {
			return err
		}
		for i := uint64(0); i < perBlock && logical < nblocks; i++ {
			if err := visit(uint64(binary.LittleEndian.Uint32(b[4*i:])), level-1); err != nil {
				return err
			}
		}
		return nil
	}
	for i := 0; i < 15 && logical < nblocks; i++ {
		level := 0
		if i >= 12 {
			level = i - 11
		}
		if err := visit(uint64(binary.LittleEndian.Uint32(ib[4*i:])), level); err != nil {
			return nil, err
		}
	}
	return w.out, nil
}

// inlineData returns an inline-data inode's content: i_block, then the value of the
// "system.data" extended attribute in the inode body (inline_data.rst).
func (f *FS) inlineData(in *inode) ([]byte, error) {
	ib := in.iblock()
	if in.size <= int64(len(ib)) {
		return append([]byte(nil), ib[:in.size]...), nil
	}
	extra, err := f.inodeXattr(in, 7, "data") // index 7 is the "system." namespace
	if err != nil {
		return nil, err
	}
	if int64(len(ib))+int64(len(extra)) < in.size {
		return nil, corrupt("inode %d: inline data of %d bytes holds %d", in.num, in.size, len(ib)+len(extra))
	}
	out := make([]byte, 0, in.size)
	out = append(out, ib...)
	return append(out, extra[:in.size-int64(len(ib))]...), nil
}

// inodeXattr finds an extended attribute stored in the inode body after i_extra_isize
// (xattr.rst: a 4-byte magic 0xEA020000, then entries whose values are at offsets from the
// first entry, ending with four zero bytes).
func (f *FS) inodeXattr(in *inode, index byte, name string) ([]byte, error) {
	if f.inodeSize <= 128 {
		return nil, corrupt("inode %d: inline data without room for extended attributes", in.num)
	}
	extra := int64(binary.LittleEndian.Uint16(in.raw[0x80:]))
	start := 128 + extra
	if extra&3 != 0 || start+4 > f.inodeSize {
		return nil, corrupt("inode %d: i_extra_isize %d", in.num, extra)
	}
	if binary.LittleEndian.Uint32(in.raw[start:]) != 0xEA020000 {
		return nil, corrupt("inode %d: inline data without in-inode extended attributes", in.num)
	}
	area := in.raw[start+4:]
	for off := 0; off+16 <= len(area); {
		e := area[off:]
		nameLen, idx := int(e[0]), e[1]
		if nameLen == 0 && idx == 0 && binary.LittleEndian.Uint32(e) == 0 {
			break // the end of the entries
		}
		valOff := int(binary.LittleEndian.Uint16(e[2:]))
		valInode := binary.LittleEndian.Uint32(e[4:])
		valSize := int(binary.LittleEndian.Uint32(e[8:]))
		if off+16+nameLen > len(area) {
			return nil, corrupt("inode %d: extended attribute name past the inode", in.num)
		}
		if idx == index && string(e[16:16+nameLen]) == name {
			if valInode != 0 {
				return nil, &UnsupportedError{fmt.Sprintf("inode %d: inline data in an EA inode", in.num)}
			}
			if valOff+valSize > len(area) || valOff < 0 || valSize < 0 {
				return nil, corrupt("inode %d: extended attribute value at %d+%d past the inode", in.num, valOff, valSize)
			}
			return area[valOff : valOff+valSize], nil
		}
		off += (16 + nameLen + 3) &^ 3
	}
	return nil, corrupt("inode %d: inline data without its system.data attribute", in.num)
}

// ReadAt reads the content at off, like io.ReaderAt: holes and uninitialised extents read as
// zeros; it returns io.EOF at the end.
func (d *data) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("ext4: negative offset %d", off)
	}
	if off >= d.size {
		return 0, errEOF
	}
	want := len(p)
	if int64(want) > d.size-off {
		p = p[:d.size-off]
	}
	if d.inline != nil {
		n := copy(p, d.inline[off:])
		clear(p[n:])
		return d.finish(len(p), want)
	}
	bs := d.f.blockSize
	done := 0
	for done < len(p) {
		pos := off + int64(done)
		blk := uint64(pos / bs)
		// The first extent ending after blk.
		lo, hi := 0, len(d.extents)
		for lo < hi {
			m := (lo + hi) / 2
			if e := d.extents[m]; e.logical+e.count <= blk {
				lo = m + 1
			} else {
				hi = m
			}
		}
		chunk := len(p) - done
		if lo == len(d.extents) || d.extents[lo].logical > blk {
			// A hole up to the next extent (or the end).
			end := int64(-1)
			if lo < len(d.extents) {
				end = int64(d.extents[lo].logical) * bs
			}
			if end >= 0 && end-pos < int64(chunk) {
				chunk = int(end - pos)
			}
			clear(p[done : done+chunk])
			done += chunk
			continue
		}
		e := d.extents[lo]
		endOfExtent := int64(e.logical+e.count) * bs
		if endOfExtent-pos < int64(chunk) {
			chunk = int(endOfExtent - pos)
		}
		if e.zero {
			clear(p[done : done+chunk])
		} else {
			at := int64(e.phys)*bs + (pos - int64(e.logical)*bs)
			if err := d.f.readAt(p[done:done+chunk], at, fmt.Sprintf("inode %d data", d.ino)); err != nil {
				return done, err
			}
		}
		done += chunk
	}
	return d.finish(done, want)
}

func (d *data) finish(n, want int) (int, error) {
	if n < want {
		return n, errEOF
	}
	return n, nil
}
