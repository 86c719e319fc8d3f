//go:build !linux

package ktls

import (
	"errors"
	"syscall"
)

// Enable reports that only Linux has kernel TLS.
func Enable(rc syscall.RawConn, st State) error {
	return &KernelError{Op: "TCP_ULP", Err: errors.Join(ErrNoKernelTLS, errors.ErrUnsupported)}
}
