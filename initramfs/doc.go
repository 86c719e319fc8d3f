// Package initramfs builds nbdroot's initramfs image (kernel26.img): the nbdroot-init
// binary, the kernel modules the boot hooks need with a boot-time module index, and any
// extra files and keyfiles, as a newc cpio archive (u-root's pkg/cpio) compressed for the
// kernel's initramfs unpacker.
//
// # Image layout (the contract with cmd/nbdroot-init)
//
// The paths and names below are declared in package initramfs/layout, which the init
// imports (this package re-exports them).
//
//	/init                       the nbdroot-init binary, mode 0755
//	/sbin/modprobe              symlink to /init: the kernel's request_module helper
//	/bin/sh /bin/ls /bin/cat /bin/ip /bin/mount /bin/umount /bin/dmesg
//	/sbin/switch_root /sbin/reboot /sbin/poweroff
//	                            symlinks to /init (Applets); the init dispatches on argv[0]
//	/etc/nbdroot/hooks          the hook names in boot order, one per line
//	/lib/modules/VER/nbdroot.modidx
//	                            the module index (kmod.Index): modules, dependencies,
//	                            aliases, built-ins, each hook's modules, the NIC drivers
//	/lib/modules/VER/kernel/…   the module files, uncompressed, at their usual paths
//	/lib/firmware/…             firmware the modules name, when the build root has it
//	/dev/console (c 5 1, 0600), /dev/null (c 1 3, 0666)
//	/bin /dev /etc /lib /newroot /proc /run /sbin /sys /tmp
//	extra files at their destination; keyfiles with mode 0400
//
// Every hook of the image is listed in /etc/nbdroot/hooks, including those that do nothing
// at boot (catalog.Spec.Runs false); a hook that maps to others (systemd → base udev) is
// replaced by them, so the init runs what the hook table says without knowing mkinitcpio's
// systemd hooks. With the keymap hook, /etc/nbdroot/keymap holds the compiled console
// keymap (package keymap); with microcode, an uncompressed cpio archive holding
// kernel/x86/microcode/*.bin comes before the compressed one.
//
// # Reproducibility
//
// Entries are written in byte order of their paths (which puts every directory before its
// contents, as the kernel's unpacker needs), with owner 0:0, one mtime for all (0 or
// SOURCE_DATE_EPOCH), inode numbers by position and no host metadata; compressors run with
// fixed settings and no timestamps. The same inputs give the same bytes.
//
// The package never runs external programs (cpio, find, compressors) and never modifies
// module files: they stay signed as the distribution shipped them.
package initramfs
