package main

import (
	"fmt"
	"io"
)

// runServe is being written; until then it says so.
func runServe(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot serve: not built yet")
	return 1
}
