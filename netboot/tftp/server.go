package tftp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// File is what a Handler opens: content read at any offset, and its size.
type File interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// Handler opens the file a read request names. remote is the client; local is the address
// it sent the request to (the server's address as the client sees it). Errors that are
// fs.ErrNotExist answer "file not found", fs.ErrPermission "access violation", an *Error
// its own code, anything else code 0 with the error's text.
type Handler func(req *Request, remote *net.UDPAddr, local net.IP) (File, error)

// Defaults of a Server.
const (
	DefaultTimeout      = 2 * time.Second
	DefaultRetries      = 5
	DefaultMaxTransfers = 256
)

// Server answers read requests on one listening socket.
type Server struct {
	Handler Handler
	// Log gets one line per transfer (file, client, size, outcome); nil discards.
	Log *log.Logger
	// Timeout is the retransmission timeout when the client sends no timeout option;
	// Retries how often a packet is sent again before the transfer is abandoned.
	Timeout time.Duration
	Retries int
	// MaxTransfers bounds the transfers running at once; more are refused.
	MaxTransfers int
	// MaxBlockSize caps the blksize option (0: MaxBlockSize, RFC 2348's limit).
	MaxBlockSize int

	wg sync.WaitGroup
}

func (s *Server) logf(format string, args ...any) {
	if s.Log != nil {
		s.Log.Printf(format, args...)
	}
}

// requestConn reads requests and tells which local address each was sent to, so the
// transfer answers from that address (a client ignores packets from another one).
type requestConn interface {
	read(b []byte) (n int, from *net.UDPAddr, to net.IP, err error)
}

type plainConn struct{ c *net.UDPConn }

func (p plainConn) read(b []byte) (int, *net.UDPAddr, net.IP, error) {
	n, from, err := p.c.ReadFromUDP(b)
	var to net.IP
	if a, ok := p.c.LocalAddr().(*net.UDPAddr); ok {
		to = a.IP
	}
	return n, from, to, err
}

type v4Conn struct{ p *ipv4.PacketConn }

func (c v4Conn) read(b []byte) (int, *net.UDPAddr, net.IP, error) {
	n, cm, from, err := c.p.ReadFrom(b)
	var to net.IP
	if cm != nil {
		to = cm.Dst
	}
	ua, _ := from.(*net.UDPAddr)
	return n, ua, to, err
}

type v6Conn struct{ p *ipv6.PacketConn }

func (c v6Conn) read(b []byte) (int, *net.UDPAddr, net.IP, error) {
	n, cm, from, err := c.p.ReadFrom(b)
	var to net.IP
	if cm != nil {
		to = cm.Dst
	}
	ua, _ := from.(*net.UDPAddr)
	return n, ua, to, err
}

// newRequestConn wraps the listener: on a wildcard address it asks the kernel for each
// datagram's destination (IP_PKTINFO / IPV6_RECVPKTINFO).
func newRequestConn(c *net.UDPConn) requestConn {
	la, _ := c.LocalAddr().(*net.UDPAddr)
	if la == nil || !la.IP.IsUnspecified() {
		return plainConn{c}
	}
	if la.IP.To4() != nil {
		p := ipv4.NewPacketConn(c)
		if p.SetControlMessage(ipv4.FlagDst, true) == nil {
			return v4Conn{p}
		}
	} else {
		p := ipv6.NewPacketConn(c)
		if p.SetControlMessage(ipv6.FlagDst, true) == nil {
			return v6Conn{p}
		}
	}
	return plainConn{c}
}

// Serve answers requests arriving on conn until ctx ends or conn fails, then waits for the
// transfers it started. It closes conn.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer s.wg.Wait()
	defer conn.Close()
	rc := newRequestConn(conn)
	max := s.MaxTransfers
	if max <= 0 {
		max = DefaultMaxTransfers
	}
	slots := make(chan struct{}, max)
	buf := make([]byte, 65536)
	for {
		n, from, to, err := rc.read(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("tftp: %w", err)
		}
		if from == nil {
			continue
		}
		pkt := append([]byte(nil), buf[:n]...)
		select {
		case slots <- struct{}{}:
		default:
			s.refuse(from, to, tftpErr(ErrUndefined, "server busy: %d transfers running", max))
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-slots }()
			s.transfer(ctx, pkt, from, to)
		}()
	}
}

// refuse answers a request with an error, from a socket of its own.
func (s *Server) refuse(to *net.UDPAddr, local net.IP, e *Error) {
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: local}, to)
	if err != nil {
		return
	}
	defer c.Close()
	c.Write(errorPacket(e))
}

// handlerError turns a Handler's error into the TFTP error sent to the client.
func handlerError(err error) *Error {
	var te *Error
	switch {
	case errors.As(err, &te):
		return te
	case errors.Is(err, fs.ErrNotExist):
		return &Error{Code: ErrNotFound, Message: err.Error()}
	case errors.Is(err, fs.ErrPermission):
		return &Error{Code: ErrAccess, Message: err.Error()}
	}
	return &Error{Code: ErrUndefined, Message: err.Error()}
}

// transfer serves one request from a new socket connected to the client: its own
// transfer identifier (RFC 1350 section 4).
func (s *Server) transfer(ctx context.Context, pkt []byte, from *net.UDPAddr, local net.IP) {
	conn, err := net.DialUDP("udp", &net.UDPAddr{IP: local}, from)
	if err != nil {
		s.logf("tftp %s: answer socket: %v", from, err)
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	fail := func(name string, e *Error) {
		conn.Write(errorPacket(e))
		s.logf("tftp %s %q: refused: %s", from.IP, name, e.Message)
	}
	req, err := ParseRequest(pkt)
	if err != nil {
		fail("", handlerError(err))
		return
	}
	if req.Write {
		fail(req.Filename, tftpErr(ErrAccess, "this server only sends files"))
		return
	}
	f, err := s.Handler(req, from, local)
	if err != nil {
		fail(req.Filename, handlerError(err))
		return
	}
	defer f.Close()
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	set, err := Negotiate(req, f.Size(), s.MaxBlockSize, timeout)
	if err != nil {
		fail(req.Filename, handlerError(err))
		return
	}
	start := time.Now()
	t := &xfer{s: s, conn: conn, set: set}
	n, err := t.send(req, f)
	if err != nil {
		s.logf("tftp %s %q: failed after %d bytes: %v", from.IP, req.Filename, n, err)
		return
	}
	s.logf("tftp %s %q: sent %d bytes in %d-byte blocks in %.1fs", from.IP, req.Filename, n, set.BlockSize, time.Since(start).Seconds())
}

// xfer is one running transfer.
type xfer struct {
	s    *Server
	conn *net.UDPConn
	set  Settings
}

// errGiveUp ends a transfer whose client stopped answering.
var errGiveUp = errors.New("no answer from the client")

// exchange sends pkt and waits for the ACK of block, sending pkt again on each timeout.
// ACKs of other blocks are ignored without a retransmission (RFC 1123 4.2.3.1).
func (t *xfer) exchange(pkt []byte, block uint16) error {
	retries := t.s.Retries
	if retries <= 0 {
		retries = DefaultRetries
	}
	buf := make([]byte, 1024)
	for try := 0; try <= retries; try++ {
		if _, err := t.conn.Write(pkt); err != nil {
			return err
		}
		deadline := time.Now().Add(t.set.Timeout)
		for {
			t.conn.SetReadDeadline(deadline)
			n, err := t.conn.Read(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // send again
				}
				if errors.Is(err, net.ErrClosed) {
					return err
				}
				// ICMP port unreachable shows up as ECONNREFUSED on a connected socket:
				// the client is gone.
				return err
			}
			ack, cerr, perr := parseReply(buf[:n])
			switch {
			case cerr != nil:
				return fmt.Errorf("the client ended the transfer: %w", cerr)
			case perr != nil:
				t.conn.Write(errorPacket(tftpErr(ErrIllegalOp, "%v", perr)))
				return perr
			case ack == block:
				return nil
			}
		}
	}
	return errGiveUp
}

// send runs the transfer: the OACK when options were granted (acknowledged by ACK 0),
// then DATA 1, 2, … until a block shorter than the block size. Block numbers wrap from
// 65535 to 0, as the common implementations (tftp-hpa, iPXE, pxelinux) expect for files
// of more than 65535 blocks.
func (t *xfer) send(req *Request, f File) (int64, error) {
	if len(t.set.OACK) > 0 {
		if err := t.exchange(oackPacket(t.set.OACK), 0); err != nil {
			return 0, err
		}
	}
	var r io.Reader = io.NewSectionReader(f, 0, f.Size())
	if req.Mode == "netascii" {
		r = newNetascii(r)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	buf := make([]byte, 4+t.set.BlockSize)
	var sent int64
	for block := uint16(1); ; block++ {
		n, err := io.ReadFull(br, buf[4:])
		if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
			t.conn.Write(errorPacket(tftpErr(ErrUndefined, "read error")))
			return sent, err
		}
		if err := t.exchange(dataPacket(buf, block, n), block); err != nil {
			return sent, err
		}
		sent += int64(n)
		if n < t.set.BlockSize {
			return sent, nil
		}
	}
}

// netascii converts a byte stream to netascii (RFC 764 via RFC 1350): LF becomes CR LF,
// CR becomes CR NUL.
type netascii struct {
	r       *bufio.Reader
	pending byte
	has     bool
}

func newNetascii(r io.Reader) *netascii { return &netascii{r: bufio.NewReader(r)} }

func (n *netascii) Read(p []byte) (int, error) {
	i := 0
	for i < len(p) {
		if n.has {
			p[i], n.has = n.pending, false
			i++
			continue
		}
		c, err := n.r.ReadByte()
		if err != nil {
			if i > 0 {
				return i, nil
			}
			return 0, err
		}
		switch c {
		case '\n':
			p[i], n.pending, n.has = '\r', '\n', true
		case '\r':
			p[i], n.pending, n.has = '\r', 0, true
		default:
			p[i] = c
		}
		i++
	}
	return i, nil
}

// osFile adapts an *os.File to File.
type osFile struct {
	*os.File
	size int64
}

func (f osFile) Size() int64 { return f.size }

// OpenFile opens a host file as a File (for handlers serving files from disk).
func OpenFile(name string) (File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return osFile{f, st.Size()}, nil
}
