// Package kernelcfg knows what each nbdroot boot hook needs from the Linux kernel, and checks a
// kernel for it: its .config (plain or gzip, as /proc/config.gz), its modules dir
// (/lib/modules/VER, also inside a chroot), or both.
//
// Hooks() reads the requirements of the one hook table, package hooks/catalog (hook, kernel
// options, the module each builds when =m, what breaks without it); Check() turns a kernel
// into a Report; Fragment() prints the Kconfig fragment kept in nbdroot.config, in step with
// the table. The initramfs builder calls Check to warn before it builds an image the kernel
// cannot boot.
//
// The package only reads files it is given: it never loads modules, never reads the running
// kernel's state except /proc/sys/kernel/osrelease (HostRelease), and never resolves module
// dependencies (depends=, softdep=), which is the initramfs builder's work.
package kernelcfg
