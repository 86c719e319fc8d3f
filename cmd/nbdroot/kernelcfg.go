package main

import (
	"fmt"
	"io"
)

// runKernelcfg is being written; until then it says so.
func runKernelcfg(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot kernelcfg: not built yet")
	return 1
}
