package nbdclient

import "syscall"

// Errors the kernel returns from NBD_CMD_CONNECT, named for explainConnect.
var (
	errBusy    error = syscall.EBUSY
	errInvalid error = syscall.EINVAL
)
