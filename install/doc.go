// Package install puts nbdroot into a client's root file system, so that a kernel
// installed inside a running client is the one it boots next: `nbdroot install --root DIR`.
//
// A root gets the two binaries where a package would put them (/usr/bin/nbdroot,
// /usr/lib/nbdroot/nbdroot-init), the kernel hooks of the package managers it uses —
// dpkg's /etc/kernel/postinst.d and postrm.d, pacman's alpm hooks and their script,
// systemd's kernel-install plugin — and the hooks' configuration, /etc/nbdroot/initramfs.conf
// (the options of `nbdroot initramfs`: hooks, compression, TLS files). Then every kernel in
// the root gets /boot/nbdroot.img-VERSION beside its /boot/vmlinuz-VERSION: the pair
// `nbdroot serve --http` boots (docs/netboot.md's /boot contract, package netboot's names).
//
// The hooks are small scripts that call back into `nbdroot install --root / --kernel
// VERSION` (or --remove-kernel), so one Go path builds and removes images for all three
// package managers and for the first installation. Arch names /boot's files by the kernel
// package's pkgbase (vmlinuz-linux): the modules directory's pkgbase file gives that name,
// and a kernel only in the modules directory is copied to /boot first.
//
// What the package must never do: write outside the root it is given (every access goes
// through an os.Root, so a symbolic link cannot lead out), write through an existing file
// (files are replaced by renaming a complete, synced temporary file: roots made with
// `cp -al` share inodes, and a reader never sees half a file), replace the administrator's
// configuration, or run the package manager. An unchanged file is left alone — a second
// run changes nothing — and a root without the configuration is not a client: the hooks
// do nothing there (the Debian package installs them on servers too).
package install
