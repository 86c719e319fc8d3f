package initramfs

import "github.com/nbdroot/nbdroot/initramfs/layout"

// The image layout, re-exported from package layout, which the init imports instead of
// this package to stay small.
const (
	// InitPath is the nbdroot-init binary, the program the kernel runs as PID 1.
	InitPath = layout.InitPath
	// HooksPath lists the hook names to run, in boot order, one per line.
	HooksPath = layout.HooksPath
	// ModulesRoot holds /lib/modules/VER with the modules and the index kmod.IndexName.
	ModulesRoot = layout.ModulesRoot
	// NewRoot is where the init mounts the root filesystem before switch_root.
	NewRoot = layout.NewRoot
	// FirmwareRoot holds the firmware the modules name.
	FirmwareRoot = layout.FirmwareRoot
)

// Applets are the names under which the init binary is installed as symlinks to /init
// (layout.Applets): /sbin/modprobe and the rescue shell's toolkit.
var Applets = layout.Applets

// Dirs are the directories every image has (layout.Dirs).
var Dirs = layout.Dirs

// Nodes are the device nodes every image has (layout.Nodes).
var Nodes = layout.Nodes
