package main

import (
	"fmt"
	"io"
)

// runInitramfs is being written; until then it says so.
func runInitramfs(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot initramfs: not built yet")
	return 1
}
