//go:build !linux

package kmod

import (
	"errors"
	"fmt"
	"os"
)

// FinitLoader inserts modules with finit_module(2); it exists only on Linux, elsewhere
// every Load fails.
type FinitLoader struct{}

var _ Loader = FinitLoader{}

// Load implements Loader.
func (FinitLoader) Load(path, params string) error {
	return errors.ErrUnsupported
}

// ModulesDir is only meaningful on Linux.
func ModulesDir(root string) (string, error) {
	return "", fmt.Errorf("modules directory: %w", errors.ErrUnsupported)
}

// Modprobe is only meaningful on Linux; elsewhere it reports that and fails.
func Modprobe(root string, args []string) int {
	fmt.Fprintln(os.Stderr, "modprobe: only supported on Linux")
	return 1
}
