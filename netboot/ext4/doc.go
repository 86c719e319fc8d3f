// Package ext4 reads ext2, ext3 and ext4 file systems from an io.ReaderAt, read-only and in
// pure Go: enough for the NBD server to find the kernels in a client image's /boot and stream
// them, without a loop mount and without root privileges. An *FS is an io/fs.FS (with
// ReadDir, Stat, ReadLink and Lstat), so the standard library's fs helpers work on it.
//
// It reads what mke2fs and the kernel write: superblock and group descriptors (32- and
// 64-bit, meta_bg), inodes of any size, extent trees, ext2/3 block maps, inline data
// (files and directories), linear and htree directories (an htree directory reads linearly:
// its index blocks look like empty entries, Documentation/filesystems/ext4/directory.rst),
// fast and slow symbolic links. The journal is not replayed: an image whose journal needs
// recovery reads as its last checkpoint, and FS.NeedsRecovery says so.
//
// The on-disk format is the kernel's Documentation/filesystems/ext4; field offsets are cited
// by their names there.
//
// What it must never do, whatever the image holds (the image belongs to a client, which may
// be hostile or simply crashed mid-write):
//   - write to the image;
//   - allocate or read without a bound taken from the image itself and checked first: a
//     file's extent list, a directory, a symbolic link target and an extent tree's node
//     count are all capped;
//   - loop or recurse without bound: symbolic links stop after MaxSymlinks (the kernel's
//     limit, 40) with ErrSymlinkLoop, extent trees after their depth (at most 5);
//   - panic: a corrupt structure is a *CorruptError naming it.
package ext4
