// Package depmod is the build-time half of nbdroot's module handling: it reads the .modinfo
// section of kernel modules (name, depends=, softdep=, alias=, firmware=), indexes a
// modules directory (/lib/modules/VER) with its built-in modules, and resolves the modules
// an image needs to their full closure in dependency order, as modprobe would load them.
//
// Any kernel, any compression: module files may be plain or compressed (.ko.xz, .ko.zst,
// .ko.gz; ModuleFileName and UncompressedName own that list for the whole tree), and an
// alias is resolved through depmod(8)'s modules.alias where the directory has depmod's
// indexes (every installed kernel and package-built chroot), so that a build decompresses
// only the modules that go into the image, not the ~4000 of a distribution kernel. Where
// the indexes are absent (an unpacked kernel package has only modules.builtin and
// modules.builtin.modinfo, which the kernel build installs) or do not cover a module file
// (added or changed after depmod ran), the module's own .modinfo is read instead: the two
// give the same closure, which the tests check on real Debian 12 and 13 kernels.
//
// What the package must never do: let an index decide what goes into an image. The
// closure is always walked from the .modinfo of the modules in it; indexes only answer
// which module an alias names and predict which modules to decompress ahead, in parallel.
//
// The boot-time half, which reads the index this package's results are written into, is
// package kmod.
package depmod
