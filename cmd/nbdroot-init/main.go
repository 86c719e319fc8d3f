//go:build linux

// Command nbdroot-init is the /init of an nbdroot initramfs: it boots the machine from a root
// filesystem on NBD (see package hooks). The same binary answers to the names of the image's
// helper programs (modprobe for the kernel's module requests, the rescue applets).
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/nbdroot/nbdroot/hooks"
	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/nbdclient"
	"github.com/nbdroot/nbdroot/rescue"
	"github.com/nbdroot/nbdroot/version"
)

func main() {
	name := filepath.Base(os.Args[0])
	switch name {
	case "modprobe":
		os.Exit(kmod.Modprobe("/", os.Args[1:]))
	case nbdclient.KeeperArgv0:
		// The keeper of the root's NBD device, re-executed by the init before switch_root.
		os.Exit(nbdclient.KeeperMain())
	}
	if code, ok := rescue.RunApplet(name, os.Args[1:]); ok {
		os.Exit(code)
	}
	if len(os.Args) == 2 && os.Args[1] == "--version" && os.Getpid() != 1 {
		fmt.Println(version.Line("nbdroot-init"))
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "nbdroot-init: this is the initramfs's /init and runs as PID 1 only")
		os.Exit(2)
	}
	env := os.Environ() // for the root's init, before ours is changed
	// The DHCP client's transaction IDs come from u-root's uio/rand, which otherwise spins on
	// getrandom until the kernel's CRNG is initialised: minutes on machines without a
	// hardware RNG. A transaction ID needs no cryptographic randomness; /dev/urandom will do.
	os.Setenv("UROOT_NOHWRNG", "1")
	hooks.Boot(hooks.DefaultConfig(os.Stdout, os.Args[1:], env))
}
