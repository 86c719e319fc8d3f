// Package dm speaks the Linux device-mapper ioctl interface (include/uapi/linux/dm-ioctl.h)
// in pure Go: it creates a mapped device from a table of targets and makes it live
// (DM_DEV_CREATE, DM_TABLE_LOAD, resume), creates its /dev/mapper node when udev is not
// there to, and removes devices. No libdevmapper, no dmsetup.
//
// It is the one place nbdroot talks to /dev/mapper/control: package luks builds dm-crypt
// tables and package lvm builds linear and striped ones, and both hand them to a Client.
//
// What the package owns, and what it must never do:
//   - The message layout is built and parsed by pure code (Message, ParseMessage) and
//     tested byte for byte against the kernel's struct layouts without root; the ioctl
//     itself is in dm_linux.go behind the Control interface, which package dmtest fakes.
//   - A table's parameters may hold key material (dm-crypt): Create wipes every buffer it
//     built from them once the kernel has read it, and never puts parameters into an
//     error. The caller owns (and wipes) the Target values it passes.
//   - A failed Create leaves nothing behind: a device half made is removed again.
package dm
