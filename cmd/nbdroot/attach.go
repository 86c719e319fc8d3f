package main

import (
	"fmt"
	"io"
)

func runAttach(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot attach: not built yet")
	return 1
}

func runDetach(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot detach: not built yet")
	return 1
}

func runStatus(args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "nbdroot status: not built yet")
	return 1
}
