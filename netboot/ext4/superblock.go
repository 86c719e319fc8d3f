package ext4

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// ErrNotExt4 is returned by Open when the superblock has no ext2/3/4 magic.
var ErrNotExt4 = errors.New("ext4: no ext2/3/4 superblock (magic 0xEF53) at byte 1024")

// ErrSymlinkLoop is returned when a path needs more than MaxSymlinks symbolic links (the
// kernel's ELOOP).
var ErrSymlinkLoop = errors.New("ext4: too many levels of symbolic links")

// CorruptError says which on-disk structure is inconsistent.
type CorruptError struct {
	What string // "superblock: s_log_block_size 31", "inode 12: extent header magic", …
}

func (e *CorruptError) Error() string { return "ext4: corrupt " + e.What }

func corrupt(format string, args ...any) error {
	return &CorruptError{What: fmt.Sprintf(format, args...)}
}

// UnsupportedError names an incompatible feature this reader cannot read.
type UnsupportedError struct {
	Feature string
}

func (e *UnsupportedError) Error() string {
	return "ext4: unsupported feature " + e.Feature
}

// MaxSymlinks is how many symbolic links one path may pass through (the kernel's
// MAXSYMLINKS).
const MaxSymlinks = 40

// Bounds on what one file, directory or link may make us hold in memory.
const (
	// maxExtents bounds a file's extent list: 262144 runs, more than a 1 GiB file with
	// 4 KiB blocks fragmented to single blocks.
	maxExtents = 1 << 18
	// maxTreeNodes bounds the extent tree blocks read for one file.
	maxTreeNodes = 1 << 14
	// maxLinkTarget is PATH_MAX: the kernel refuses longer symbolic links.
	maxLinkTarget = 4096
	// maxDirSize bounds a directory's size (a /boot directory is a few blocks).
	maxDirSize = 64 << 20
	// maxDepth is EXT4_MAX_EXTENT_DEPTH.
	maxDepth = 5
)

// Feature bits (superblock s_feature_*; Documentation/filesystems/ext4/super.rst).
const (
	compatSparseSuper2 = 0x200

	incompatCompression = 0x1
	incompatFiletype    = 0x2
	incompatRecover     = 0x4
	incompatJournalDev  = 0x8
	incompatMetaBG      = 0x10
	incompatExtents     = 0x40
	incompat64Bit       = 0x80
	incompatMMP         = 0x100
	incompatFlexBG      = 0x200
	incompatEAInode     = 0x400
	incompatDirData     = 0x1000
	incompatCsumSeed    = 0x2000
	incompatLargeDir    = 0x4000
	incompatInlineData  = 0x8000
	incompatEncrypt     = 0x10000
	incompatCasefold    = 0x20000

	roCompatSparseSuper = 0x1
	roCompatBigalloc    = 0x200
)

// incompatKnown are the incompatible features whose on-disk changes this reader handles
// (or which do not change what it reads: flex_bg moves metadata the descriptors point at,
// mmp and csum_seed concern writers and checksums, encryption is refused per inode).
const incompatKnown = incompatFiletype | incompatRecover | incompatMetaBG | incompatExtents |
	incompat64Bit | incompatMMP | incompatFlexBG | incompatEAInode | incompatCsumSeed |
	incompatLargeDir | incompatInlineData | incompatEncrypt | incompatCasefold

// incompatNames names the features refused outright.
var incompatNames = map[uint32]string{
	incompatCompression: "compression",
	incompatJournalDev:  "journal_dev (an external journal device, not a file system)",
	incompatDirData:     "dirdata",
}

// FS is an open ext2/3/4 file system.
type FS struct {
	r    io.ReaderAt
	size int64 // bytes of r that belong to the file system

	blockSize      int64
	blocks         uint64 // s_blocks_count
	firstDataBlock uint64
	blocksPerGroup uint64
	inodesPerGroup uint32
	inodeCount     uint32
	inodeSize      int64
	descSize       int64
	groups         uint64
	incompat       uint32
	roCompat       uint32
	compat         uint32
	firstMetaBG    uint64
	backupBGs      [2]uint32

	// NeedsRecovery is true when the journal holds transactions not yet written to their
	// place (the file system was not cleanly unmounted): what this reader sees is the state
	// of the last checkpoint.
	NeedsRecovery bool
	// Label is the volume label (s_volume_name).
	Label string
}

// Open reads the superblock of the file system held by the first size bytes of r and
// checks it. Nothing else is read until a file is looked up.
func Open(r io.ReaderAt, size int64) (*FS, error) {
	sb := make([]byte, 1024)
	if _, err := r.ReadAt(sb, 1024); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, ErrNotExt4
		}
		return nil, fmt.Errorf("ext4: read superblock: %w", err)
	}
	le16 := func(off int) uint16 { return binary.LittleEndian.Uint16(sb[off:]) }
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(sb[off:]) }
	if le16(0x38) != 0xEF53 {
		return nil, ErrNotExt4
	}
	f := &FS{r: r, size: size}
	logBS := le32(0x18)
	if logBS > 6 { // 1 KiB << 6 = 64 KiB, the largest block size
		return nil, corrupt("superblock: s_log_block_size %d (block size above 64 KiB)", logBS)
	}
	f.blockSize = 1024 << logBS
	f.incompat, f.roCompat, f.compat = le32(0x60), le32(0x64), le32(0x5C)
	for bit, name := range incompatNames {
		if f.incompat&bit != 0 {
			return nil, &UnsupportedError{name}
		}
	}
	if unknown := f.incompat &^ incompatKnown; unknown != 0 {
		return nil, &UnsupportedError{fmt.Sprintf("incompat 0x%x", unknown)}
	}
	f.NeedsRecovery = f.incompat&incompatRecover != 0
	f.blocks = uint64(le32(0x4))
	if f.incompat&incompat64Bit != 0 {
		f.blocks |= uint64(le32(0x150)) << 32
	}
	// With bigalloc a group counts clusters of 2^s_log_cluster_size KiB in its bitmap, so
	// it spans that many times more blocks.
	clusterRatio := uint64(1)
	if f.roCompat&roCompatBigalloc != 0 {
		logCluster := le32(0x1C)
		if logCluster < logBS || logCluster > logBS+16 {
			return nil, corrupt("superblock: s_log_cluster_size %d with s_log_block_size %d", logCluster, logBS)
		}
		clusterRatio = 1 << (logCluster - logBS)
	}
	f.firstDataBlock = uint64(le32(0x14))
	f.blocksPerGroup = uint64(le32(0x20))
	f.inodesPerGroup = le32(0x28)
	f.inodeCount = le32(0x0)
	f.inodeSize = 128
	if le32(0x4C) >= 1 { // EXT2_DYNAMIC_REV: s_inode_size is valid
		f.inodeSize = int64(le16(0x58))
	}
	f.descSize = 32
	if f.incompat&incompat64Bit != 0 {
		f.descSize = int64(le16(0xFE))
	}
	f.firstMetaBG = uint64(le32(0x104))
	f.backupBGs = [2]uint32{le32(0x24C), le32(0x250)}
	f.Label = strings.TrimRight(string(sb[0x78:0x88]), "\x00")

	switch {
	case f.blocksPerGroup == 0 || f.blocksPerGroup > uint64(8*f.blockSize)*clusterRatio:
		return nil, corrupt("superblock: s_blocks_per_group %d", f.blocksPerGroup)
	case f.blocks == 0 || f.blocks > uint64(math.MaxInt64/f.blockSize)-f.blocksPerGroup:
		return nil, corrupt("superblock: s_blocks_count %d", f.blocks)
	case size > 0 && int64(f.blocks)*f.blockSize > size+int64(f.blocksPerGroup)*f.blockSize:
		// An image may be a little shorter than its file system (a sparse tail cut off),
		// never by more than a group: then the superblock is another file system's.
		return nil, corrupt("superblock: %d blocks of %d bytes in an image of %d bytes", f.blocks, f.blockSize, size)
	case f.inodesPerGroup == 0 || int64(f.inodesPerGroup) > 8*f.blockSize:
		return nil, corrupt("superblock: s_inodes_per_group %d", f.inodesPerGroup)
	case f.inodeSize < 128 || f.inodeSize > f.blockSize || f.inodeSize&(f.inodeSize-1) != 0:
		return nil, corrupt("superblock: s_inode_size %d", f.inodeSize)
	case f.descSize < 32 || f.descSize > f.blockSize || f.descSize&(f.descSize-1) != 0:
		return nil, corrupt("superblock: s_desc_size %d", f.descSize)
	case f.firstDataBlock != 0 && !(f.blockSize == 1024 && f.firstDataBlock == 1):
		// The superblock's block: 1 with 1 KiB blocks, else 0.
		return nil, corrupt("superblock: s_first_data_block %d with %d-byte blocks", f.firstDataBlock, f.blockSize)
	}
	f.groups = (f.blocks - f.firstDataBlock + f.blocksPerGroup - 1) / f.blocksPerGroup
	if uint64(f.inodeCount) > f.groups*uint64(f.inodesPerGroup) || f.inodeCount < rootIno {
		return nil, corrupt("superblock: s_inodes_count %d for %d groups of %d", f.inodeCount, f.groups, f.inodesPerGroup)
	}
	return f, nil
}

// BlockSize is the file system's block size in bytes.
func (f *FS) BlockSize() int64 { return f.blockSize }

// readAt reads exactly len(p) bytes at off of the file system, which must lie inside it.
func (f *FS) readAt(p []byte, off int64, what string) error {
	if off < 0 || off+int64(len(p)) > int64(f.blocks)*f.blockSize || off+int64(len(p)) < off {
		return corrupt("%s: byte %d+%d outside the file system", what, off, len(p))
	}
	n, err := f.r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if errors.Is(err, io.EOF) || err == nil {
		// The tail of a sparse image that was truncated reads as zeros, as it would from
		// the device.
		if off+int64(len(p)) > f.size {
			clear(p[n:])
			return nil
		}
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("ext4: read %s: %w", what, err)
}

// hasSuper reports whether block group g holds a superblock backup (and so its group
// descriptors): ext4_bg_has_super.
func (f *FS) hasSuper(g uint64) bool {
	if g == 0 {
		return true
	}
	if f.compat&compatSparseSuper2 != 0 {
		return g == uint64(f.backupBGs[0]) || g == uint64(f.backupBGs[1])
	}
	if f.roCompat&roCompatSparseSuper == 0 || g == 1 {
		return true
	}
	if g&1 == 0 {
		return false
	}
	for _, base := range []uint64{3, 5, 7} {
		n := base
		for n < g {
			n *= base
		}
		if n == g {
			return true
		}
	}
	return false
}

// descBlock is where the nr-th block of group descriptors lives: descriptor_loc() in
// fs/ext4/super.c. Without meta_bg they follow the superblock; with it, each meta group's
// descriptors sit in its first group (after the superblock backup there, if any).
func (f *FS) descBlock(nr uint64) uint64 {
	if f.incompat&incompatMetaBG == 0 || nr < f.firstMetaBG {
		return f.firstDataBlock + 1 + nr
	}
	g := nr * uint64(f.blockSize/f.descSize)
	has := uint64(0)
	if f.hasSuper(g) {
		has = 1
	}
	if f.blockSize == 1024 && nr == 0 && f.firstDataBlock == 0 {
		has++
	}
	return g*f.blocksPerGroup + f.firstDataBlock + has
}

// inodeTable returns the first block of group g's inode table (bg_inode_table_lo/hi).
func (f *FS) inodeTable(g uint64) (uint64, error) {
	perBlock := uint64(f.blockSize / f.descSize)
	blk := f.descBlock(g / perBlock)
	d := make([]byte, f.descSize)
	if err := f.readAt(d, int64(blk)*f.blockSize+int64(g%perBlock)*f.descSize, fmt.Sprintf("group descriptor %d", g)); err != nil {
		return 0, err
	}
	t := uint64(binary.LittleEndian.Uint32(d[0x8:]))
	if f.descSize >= 64 {
		t |= uint64(binary.LittleEndian.Uint32(d[0x28:])) << 32
	}
	tableBlocks := (uint64(f.inodesPerGroup)*uint64(f.inodeSize) + uint64(f.blockSize) - 1) / uint64(f.blockSize)
	if t == 0 || t >= f.blocks || t+tableBlocks > f.blocks {
		return 0, corrupt("group descriptor %d: inode table at block %d", g, t)
	}
	return t, nil
}
