// Package kmod loads kernel modules inside the nbdroot initramfs: it reads the image's
// module index (nbdroot.modidx), loads named modules and their dependencies in parallel
// with finit_module(2), coldplugs devices by modalias, and is /sbin/modprobe for the
// kernel's on-the-fly module requests.
//
// It is the boot-time half of module handling; kmod/depmod is the build-time half (reading
// .modinfo, resolving dependencies, writing the index). This package never parses ELF files
// and never walks a full modules tree: at boot everything it needs is in the index, which
// keeps the init small and fast. Everything that touches the kernel is behind the Loader
// interface, so the logic is tested with a fake and the real syscall runs in QEMU.
package kmod
