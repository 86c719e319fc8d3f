//go:build unix

package nbdclient

import (
	"os"

	"golang.org/x/sys/unix"
)

// socketPair makes a connected pair of Unix stream sockets, blocking (the kernel reads and
// writes its end from its own threads). The nbd driver takes any socket whose family has
// shutdown (nbd_get_socket); nbd-client hands it such a pair for TLS too.
func socketPair() (kernelEnd, relayEnd *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	return os.NewFile(uintptr(fds[0]), "nbd-relay-kernel"), os.NewFile(uintptr(fds[1]), "nbd-relay"), nil
}

func dupFD(fd int, name string) (*os.File, error) {
	nfd, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("fcntl", err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}
