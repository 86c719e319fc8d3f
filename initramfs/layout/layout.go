// Package layout is the contract between the image builder (package initramfs) and the
// init (cmd/nbdroot-init): where things are inside an nbdroot initramfs. It has no
// dependencies, so the init can import it without pulling in the builder's compressors,
// cpio writer and ELF reader (importing package initramfs would add ~850 KB to /init).
package layout

// Paths are absolute inside the image.
const (
	// InitPath is the nbdroot-init binary, the program the kernel runs as PID 1.
	InitPath = "/init"
	// HooksPath lists the hook names to run, in boot order, one per line.
	HooksPath = "/etc/nbdroot/hooks"
	// ModulesRoot holds one directory per kernel release (/lib/modules/VER) with the module
	// files at their usual relative paths and the boot index kmod.IndexName.
	ModulesRoot = "/lib/modules"
	// NewRoot is where the init mounts the root filesystem before switch_root.
	NewRoot = "/newroot"
	// FirmwareRoot holds the firmware files the image's modules name, where the kernel's
	// firmware loader looks for them.
	FirmwareRoot = "/lib/firmware"
	// KeymapPath is the console keymap of the keymap hook, compiled (package keymap's
	// binary form); absent when the image has none.
	KeymapPath = "/etc/nbdroot/keymap"
)

// Applets are the names under which the init binary is installed as symlinks to /init;
// the init dispatches on argv[0]. /sbin/modprobe is what the kernel runs for its module
// requests (request_module, /proc/sys/kernel/modprobe); the others make up the rescue
// shell's toolkit.
var Applets = []string{
	"/sbin/modprobe",
	"/bin/sh",
	"/bin/ls",
	"/bin/cat",
	"/bin/ip",
	"/bin/mount",
	"/bin/umount",
	"/bin/dmesg",
	"/sbin/switch_root",
	"/sbin/reboot",
	"/sbin/poweroff",
}

// Dirs are the directories every image has, whether or not a file lives in them: the
// init mounts proc, sysfs, devtmpfs and tmpfs on the first ones, and /newroot is the
// mount point of the root filesystem.
var Dirs = []string{"/bin", "/dev", "/etc", "/lib", "/newroot", "/proc", "/run", "/sbin", "/sys", "/tmp"}

// Node is a device node of the image.
type Node struct {
	Path         string
	Mode         uint32 // permission bits
	Major, Minor uint32
}

// Nodes are the character devices the image carries. The kernel opens /dev/console of
// the rootfs for /init's stdin/stdout/stderr before running it (init/main.c,
// console_on_rootfs) — before any devtmpfs is mounted — so without it PID 1 starts without
// a console. /dev/null is for the same early window.
var Nodes = []Node{
	{Path: "/dev/console", Mode: 0o600, Major: 5, Minor: 1},
	{Path: "/dev/null", Mode: 0o666, Major: 1, Minor: 3},
}
