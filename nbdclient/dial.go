package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Conn is a negotiated connection in the transmission phase.
type Conn struct {
	*net.TCPConn
	Info nbd.ExportInfo
}

// DialError says which server, port and export a connection attempt was for, and why it
// failed; the init prints it as is.
type DialError struct {
	Server string // host:port as dialled
	Export string
	Err    error
}

func (e *DialError) Error() string {
	exp := "the default export"
	if e.Export != "" {
		exp = fmt.Sprintf("export %q", e.Export)
	}
	return fmt.Sprintf("NBD server %s, %s: %v", e.Server, exp, e.Err)
}

func (e *DialError) Unwrap() error { return e.Err }

// Dial connects to the NBD server at addr (host:port), negotiates export and returns the
// connection ready for the kernel. The context bounds connection and negotiation together.
// Sockets get TCP_NODELAY (requests are small and latency-bound) and keepalive (a dead peer
// is noticed even when the filesystem is idle).
func Dial(ctx context.Context, addr, export string) (*Conn, error) {
	fail := func(err error) error { return &DialError{Server: addr, Export: export, Err: err} }
	d := net.Dialer{KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 10 * time.Second, Interval: 5 * time.Second, Count: 3}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fail(explainDial(err))
	}
	tc := c.(*net.TCPConn)
	if err := tc.SetNoDelay(true); err != nil {
		tc.Close()
		return nil, fail(err)
	}
	if dl, ok := ctx.Deadline(); ok {
		tc.SetDeadline(dl)
	}
	// A cancelled context interrupts a server that stalls mid-handshake.
	stop := context.AfterFunc(ctx, func() { tc.SetDeadline(time.Unix(1, 0)) })
	info, err := Handshake(tc, export)
	stopped := stop()
	if err != nil {
		tc.Close()
		if !stopped || ctx.Err() != nil {
			return nil, fail(fmt.Errorf("handshake: %w", context.Cause(ctx)))
		}
		return nil, fail(err)
	}
	tc.SetDeadline(time.Time{})
	return &Conn{TCPConn: tc, Info: *info}, nil
}

// explainDial turns the common connect failures into words a person booting a thin client
// can act on.
func explainDial(err error) error {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("connection refused: is the server running and listening on that port? (%w)", err)
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return fmt.Errorf("no route to the server: check ip= and the network (%w)", err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("no answer (timed out): %w", err)
	}
	return err
}

// File returns a blocking duplicate of the connection's socket for the kernel. The caller
// closes it after the kernel took its own reference (NBD_CMD_CONNECT or RECONFIGURE).
func (c *Conn) File() (*os.File, error) {
	f, err := c.TCPConn.File()
	if err != nil {
		return nil, err
	}
	// The kernel reads and writes the socket from its own threads; it must not see EAGAIN.
	if err := syscall.SetNonblock(int(f.Fd()), false); err != nil {
		f.Close()
		return nil, os.NewSyscallError("set blocking", err)
	}
	return f, nil
}

// BlockSize picks the logical block size for the kernel device: the wanted size when given,
// else the server's minimum, raised to 512 (the kernel accepts powers of two from 512 to the
// page size). The server's preferred size is not used: a larger logical block size would
// make filesystems with smaller blocks unmountable.
func BlockSize(info nbd.ExportInfo, want int) (uint32, error) {
	bs := uint32(512)
	if want > 0 {
		bs = uint32(want)
	} else if info.MinBlock > bs {
		bs = info.MinBlock
	}
	if bs < 512 || bs > 4096 || bs&(bs-1) != 0 {
		return 0, fmt.Errorf("block size %d: the kernel needs a power of two from 512 to 4096", bs)
	}
	if info.MaxBlock != 0 && bs > info.MaxBlock {
		return 0, fmt.Errorf("block size %d exceeds the server's maximum %d", bs, info.MaxBlock)
	}
	return bs, nil
}

// JoinHostPort formats a server address for Dial.
func JoinHostPort(host string, port int) string {
	return net.JoinHostPort(host, strconv.Itoa(port))
}
