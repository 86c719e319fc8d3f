//go:build !linux

package luks

import "errors"

var errNotLinux = errors.New("luks: device-mapper is only available on Linux")

// Activate creates the dm-crypt mapping name; device-mapper exists only on Linux.
func Activate(name string, table *Table) (string, error) { return "", errNotLinux }

// Deactivate removes the mapping name; device-mapper exists only on Linux.
func Deactivate(name string) error { return errNotLinux }
