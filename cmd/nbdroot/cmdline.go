package main

import (
	"fmt"
	"io"
)

// runCmdline is being written; until then it says so.
func runCmdline(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot cmdline: not built yet")
	return 1
}
