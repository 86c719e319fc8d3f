//go:build !linux

package hooks

// mountReadOnly is MS_RDONLY; the stages only run on Linux, but the package's logic and its
// unit tests build anywhere.
const mountReadOnly = 1
