package ktls

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// Enable hands the records of the connected TCP socket rc to the kernel: from now on the
// kernel encrypts what is written to the socket and decrypts what is read from it,
// continuing st's sequence numbers, and any reader of the socket (the nbd driver) sees
// plaintext. Every error is a *KernelError; errors.Is(err, ErrNoKernelTLS) when the
// kernel cannot do it at all (the socket is then unchanged for userspace use: the "tls"
// upper layer protocol passes bytes through until a direction is configured).
//
// Any record received before Enable and still queued in the socket is decrypted by the
// kernel; crypto/tls must not have read past its last record (see Counter).
func Enable(rc syscall.RawConn, st State) error {
	tx, err := cryptoInfo(st.Suite, st.TX)
	if err != nil {
		return &KernelError{Op: "TLS_TX", Err: fmt.Errorf("%w: %w", ErrNoKernelTLS, err)}
	}
	rx, err := cryptoInfo(st.Suite, st.RX)
	if err != nil {
		return &KernelError{Op: "TLS_RX", Err: fmt.Errorf("%w: %w", ErrNoKernelTLS, err)}
	}
	var kerr error
	if err := rc.Control(func(fd uintptr) { kerr = enable(int(fd), st.Suite, tx, rx) }); err != nil {
		return &KernelError{Op: "socket", Err: err}
	}
	return kerr
}

func enable(fd int, s Suite, tx, rx []byte) error {
	if err := unix.SetsockoptString(fd, unix.SOL_TCP, unix.TCP_ULP, "tls"); err != nil {
		// ENOENT: no "tls" ULP (the module is missing and could not be loaded).
		return &KernelError{Op: `TCP_ULP "tls"`, Err: fmt.Errorf("%w (CONFIG_TLS, module tls): %w", ErrNoKernelTLS, os.NewSyscallError("setsockopt", err))}
	}
	if err := setCryptoInfo(fd, tlsTX, tx); err != nil {
		// The cipher is unknown (EINVAL) or its crypto module is missing (ENOENT): nothing
		// is configured yet, the socket still passes bytes through.
		return &KernelError{Op: "TLS_TX", Err: fmt.Errorf("%w (%v): %w", ErrNoKernelTLS, s, os.NewSyscallError("setsockopt", err))}
	}
	if err := setCryptoInfo(fd, tlsRX, rx); err != nil {
		return &KernelError{Op: "TLS_RX", Half: true, Err: fmt.Errorf("the kernel took TLS_TX but refused TLS_RX (%v): %w", s, os.NewSyscallError("setsockopt", err))}
	}
	return nil
}

func setCryptoInfo(fd, dir int, info []byte) error {
	// setsockopt(fd, SOL_TLS, TLS_TX/TLS_RX, &info, sizeof info): x/sys has no struct for
	// it, and the bytes are built in pure code (cryptoInfo).
	return unix.SetsockoptString(fd, unix.SOL_TLS, dir, string(info))
}
