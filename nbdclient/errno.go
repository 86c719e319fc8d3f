package nbdclient

import "syscall"

// Errors the kernel returns from the nbd family's commands, named for the explanations.
var (
	errBusy    error = syscall.EBUSY
	errInvalid error = syscall.EINVAL
	errPerm    error = syscall.EPERM
	errNoBufs  error = syscall.ENOBUFS
)
