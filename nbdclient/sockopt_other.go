//go:build !linux

package nbdclient

import "syscall"

// setUserTimeout does nothing where TCP_USER_TIMEOUT does not exist; the kernel side of
// nbdclient is Linux only anyway.
func setUserTimeout(network, address string, c syscall.RawConn) error { return nil }
