//go:build !linux

// Command nbdroot-init is the /init of an nbdroot initramfs; it runs on Linux only.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "nbdroot-init: the initramfs's /init runs on Linux only")
	os.Exit(2)
}
