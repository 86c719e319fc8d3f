//go:build !linux

package nbdserver

import "net"

// rawSocket is the Linux fast path for plain sockets (see sockio_linux.go); elsewhere every
// connection goes through net.Conn.
type rawSocket struct{}

type iovec struct{}

func newRawSocket(net.Conn) *rawSocket { return nil }

func (*rawSocket) read(p []byte, wait bool) (int, error) { return 0, errNoNowait }

func (*rawSocket) writev(bufs [][]byte, iov []iovec) ([]iovec, error) { return iov, errNoNowait }

type pipe struct{}

func newPipe() (*pipe, error) { return nil, errUnsupported }

func (*pipe) close() {}

func (*rawSocket) spliceToFile(p *pipe, fd int, off int64, n int, onWait func() error) (int, bool, error, error) {
	return 0, true, nil, errUnsupported
}
