// Package depmod is the build-time half of nbdroot's module handling: it reads the .modinfo
// section of kernel modules (name, depends=, softdep=, alias=, firmware=), indexes a
// modules directory (/lib/modules/VER) with its built-in modules, and resolves the modules
// an image needs to their full closure in dependency order, as modprobe would load them.
//
// It works from the module files alone (plus modules.builtin and modules.builtin.modinfo,
// which the kernel build installs): it does not need depmod(8)'s output, which an unpacked
// kernel package does not have. The boot-time half, which reads the index this package's
// results are written into, is package kmod.
package depmod
