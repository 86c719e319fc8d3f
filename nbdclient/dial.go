package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Conn is a negotiated connection in the transmission phase.
type Conn struct {
	*net.TCPConn
	Info nbd.ExportInfo
	// TLS is how the connection is secured; nil for plain TCP.
	TLS *TLSState
}

// DialError says which server, port and export a connection attempt was for, and why it
// failed; the init prints it as is.
type DialError struct {
	Server string // host:port as dialled
	Export string
	Err    error
}

// Error implements error: "NBD server HOST:PORT, export "NAME": reason".
func (e *DialError) Error() string {
	exp := "the default export"
	if e.Export != "" {
		exp = fmt.Sprintf("export %q", e.Export)
	}
	return fmt.Sprintf("NBD server %s, %s: %v", e.Server, exp, e.Err)
}

// Unwrap returns the reason.
func (e *DialError) Unwrap() error { return e.Err }

// Socket options of every connection handed to the kernel. The kernel's nbd driver notices
// a dead peer only when a read or write on the socket fails; these make that happen within
// about half a minute instead of TCP's default of a quarter of an hour, so that the keeper
// gets its LINK_DEAD event while DEAD_CONN_TIMEOUT still holds the I/O.
const (
	// keepIdle, keepInterval and keepCount: an idle connection is probed after 10 s and
	// declared dead after 3 unanswered probes 5 s apart.
	keepIdle     = 10 * time.Second
	keepInterval = 5 * time.Second
	keepCount    = 3
	// userTimeout bounds how long sent data may stay unacknowledged (TCP_USER_TIMEOUT,
	// RFC 5482) while requests are in flight, when keepalive does not apply.
	userTimeout = 30 * time.Second
)

// Dialer negotiates connections, the same way for an attach and for the keeper's
// reconnects: TLS (when TLS is set), then the client identity and the export.
type Dialer struct {
	// TLS secures every connection; nil for plain TCP.
	TLS *TLSSettings
	// kernel remembers a kernel that refused kernel TLS.
	kernel *kernelTLS
}

// NewDialer returns a Dialer for the TLS settings s (nil: plain TCP).
func NewDialer(s *TLSSettings) *Dialer { return &Dialer{TLS: s, kernel: &kernelTLS{}} }

// Dial connects to the NBD server at addr (host:port) in plain TCP, negotiates o and
// returns the connection ready for the kernel (see Dialer.Dial).
func Dial(ctx context.Context, addr string, o DialOptions) (*Conn, error) {
	return NewDialer(nil).Dial(ctx, addr, o)
}

// Dial connects to the NBD server at addr (host:port), negotiates o (the export, and the
// client's identity when o.Client is set) and returns the connection ready for the
// kernel: with TLS, its records are the kernel's (kernel TLS), or Conn.TLS.Relay says that
// a relay must carry them. The context bounds connection and negotiation together.
// Sockets get TCP_NODELAY (requests are small and latency-bound), keepalive and a user
// timeout (a dead peer is noticed even when the filesystem is idle).
//
// Every error is a *DialError naming the server, port and export.
func (d *Dialer) Dial(ctx context.Context, addr string, o DialOptions) (*Conn, error) {
	fail := func(err error) error { return &DialError{Server: addr, Export: o.Export, Err: err} }
	nd := net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: keepIdle, Interval: keepInterval, Count: keepCount},
		Control:         setUserTimeout,
	}
	c, err := nd.DialContext(ctx, "tcp", addr)
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
	info, sec, err := d.handshake(ctx, tc, addr, o)
	stopped := stop()
	if err != nil {
		tc.Close()
		if !stopped || ctx.Err() != nil {
			return nil, fail(fmt.Errorf("handshake: %w", context.Cause(ctx)))
		}
		err = explainHandshake(err)
		var oe *nbd.OptionError
		if errors.As(err, &oe) && oe.Type == nbd.RepErrUnknown {
			err = d.withExportList(ctx, addr, err)
		}
		return nil, fail(err)
	}
	tc.SetDeadline(time.Time{})
	return &Conn{TCPConn: tc, Info: *info, TLS: sec}, nil
}

// handshake negotiates o on tc: the greeting, NBD_OPT_STARTTLS and the TLS handshake when
// d.TLS asks for them, then (over TLS) the client identity and the export, and the
// hand-off of the records. The TLS state is nil for plain TCP.
func (d *Dialer) handshake(ctx context.Context, tc *net.TCPConn, addr string, o DialOptions) (*nbd.ExportInfo, *TLSState, error) {
	fixed, noZeroes, err := greet(tc)
	if err != nil {
		return nil, nil, err
	}
	if d.TLS == nil {
		info, err := haggle(tc, o, fixed, noZeroes)
		return info, nil, err
	}
	sess, refused, err := d.secure(ctx, tc, addr, fixed)
	if err != nil {
		return nil, nil, err
	}
	if sess == nil {
		info, err := haggle(tc, o, fixed, noZeroes)
		return info, &TLSState{Refused: refused}, err
	}
	info, err := haggle(sess.conn, o, fixed, noZeroes)
	if isRemoteTLS(err) {
		return nil, nil, remoteTLSError(err)
	}
	if err != nil {
		return nil, nil, err
	}
	st, err := d.handOff(tc, sess)
	return info, st, err
}

// secure upgrades tc to TLS after the greeting: NBD_OPT_STARTTLS, then the handshake. A
// refusal is an error when TLS is required; otherwise secure returns no session and the
// refusal, and the negotiation goes on in clear text.
func (d *Dialer) secure(ctx context.Context, tc *net.TCPConn, addr string, fixed bool) (*tlsSession, string, error) {
	refused := "the server is not fixed newstyle, which TLS needs"
	if fixed {
		var err error
		if refused, err = askStartTLS(tc); err != nil {
			return nil, "", err
		}
	}
	if refused != "" {
		if d.TLS.required() {
			return nil, "", &TLSError{Reason: TLSRefused, Err: fmt.Errorf("%w: %s; TLS is required (nbdroot.tls=require), and nbdroot never goes on in clear text", ErrTLSRefused, refused)}
		}
		return nil, refused, nil
	}
	sess, err := handshakeTLS(ctx, tc, d.TLS, addr)
	if err != nil {
		var te *TLSError
		if !errors.As(err, &te) {
			err = &TLSError{Err: err}
		}
		return nil, "", err
	}
	return sess, "", nil
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

// explainHandshake adds what a failure during negotiation usually means.
func explainHandshake(err error) error {
	var oe *nbd.OptionError
	var me *nbd.MagicError
	var te *TLSError
	switch {
	case errors.As(err, &te):
		return err // says what happened already
	case errors.As(err, &oe):
		switch oe.Type {
		case nbd.RepErrPolicy:
			return fmt.Errorf("%w (the server's access policy refuses this client: check its allow list and its per-client connection limits)", err)
		case nbd.RepErrTLSReqd:
			return fmt.Errorf("%w (the server requires TLS: nbdroot.tls=require with the image's CA, or nbdroot attach --tls-ca)", err)
		case nbd.RepErrBlockSizeReqd:
			return fmt.Errorf("%w (the server insists on block size constraints)", err)
		}
	case errors.As(err, &me):
		return fmt.Errorf("%w (is this port an NBD server?)", err)
	case errors.Is(err, io.EOF):
		return fmt.Errorf("the server closed the connection during the handshake (it refused this client, or is not an NBD server): %w", err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("short read: the server closed the connection mid-message: %w", err)
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("the server reset the connection during the handshake: %w", err)
	}
	return err
}

// withExportList adds the server's export names to an "unknown export" error, on a second
// connection (secured like the first); the original error stands alone when listing fails.
func (d *Dialer) withExportList(ctx context.Context, addr string, err error) error {
	var nd net.Dialer
	c, derr := nd.DialContext(ctx, "tcp", addr)
	if derr != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	} else {
		c.SetDeadline(time.Now().Add(5 * time.Second))
	}
	names, lerr := d.list(ctx, c.(*net.TCPConn), addr)
	if lerr != nil {
		return err
	}
	for i, n := range names {
		if n == "" {
			names[i] = `"" (default)`
		} else {
			names[i] = strconv.Quote(n)
		}
	}
	if len(names) == 0 {
		return fmt.Errorf("%w (the server lists no exports)", err)
	}
	return fmt.Errorf("%w (the server offers: %s)", err, strings.Join(names, ", "))
}

// File returns a blocking duplicate of the connection's socket for the kernel. The caller
// closes it after the kernel took its own reference (NBD_CMD_CONNECT or RECONFIGURE). A
// relayed connection's socket (Conn.TLS.Relay) carries TLS records, which the kernel
// cannot read: its file goes to a relay (Relays.Start), never to the kernel.
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

// DialFunc negotiates one connection; Dial is the real one, tests pass fakes.
type DialFunc func(ctx context.Context, addr string, o DialOptions) (*Conn, error)

// DialConns opens up to want connections to o.Export at addr. The first one decides: more are
// opened only when the server advertises NBD_FLAG_CAN_MULTI_CONN (proto.md: without it,
// writes on one connection need not be visible on another, and the kernel refuses several
// sockets), and only while they describe the same export. A failure of the first connection
// is returned; later failures leave fewer connections and are reported through note.
//
// The extra connections of a client with an identity resume the overlay the first one got
// (CONTRACTS.md: without overlay=, each connection of a fresh boot would start an overlay
// of its own on a temporary cow export), and one that is served another is dropped.
func DialConns(ctx context.Context, dial DialFunc, addr string, o DialOptions, want int, note func(string)) ([]*Conn, error) {
	first, err := dial(ctx, addr, o)
	if err != nil {
		return nil, err
	}
	if o.Client != nil && !first.Info.Overlay.IsZero() {
		c := *o.Client
		c.Overlay = first.Info.Overlay
		o.Client = &c
	}
	conns := []*Conn{first}
	if want > 1 && first.Info.Flags&nbd.TransCanMultiConn == 0 {
		if note != nil {
			note(fmt.Sprintf("%s does not allow multi-conn (no NBD_FLAG_CAN_MULTI_CONN); using one connection", addr))
		}
		return conns, nil
	}
	for len(conns) < want {
		c, err := dial(ctx, addr, o)
		switch {
		case err != nil:
		case c.Info.Size != first.Info.Size || c.Info.Flags != first.Info.Flags:
			c.Close()
			err = fmt.Errorf("it describes the export differently (size %d flags %#x, first %d %#x)",
				c.Info.Size, c.Info.Flags, first.Info.Size, first.Info.Flags)
		case c.Info.Overlay != first.Info.Overlay:
			c.Close()
			err = fmt.Errorf("it is served overlay %s, the first connection %s", overlayName(c.Info.Overlay), overlayName(first.Info.Overlay))
		}
		if err != nil {
			if note != nil {
				note(fmt.Sprintf("extra connection %d to %s: %v; continuing with %d", len(conns)+1, addr, err, len(conns)))
			}
			break
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// CloseAll closes every connection.
func CloseAll(conns []*Conn) {
	for _, c := range conns {
		c.Close()
	}
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
	if info.MinBlock != 0 && bs < info.MinBlock {
		return 0, fmt.Errorf("block size %d is below the server's minimum %d", bs, info.MinBlock)
	}
	if info.MaxBlock != 0 && bs > info.MaxBlock {
		return 0, fmt.Errorf("block size %d exceeds the server's maximum %d", bs, info.MaxBlock)
	}
	return bs, nil
}

// SocketFiles returns a blocking duplicate of each connection's socket for the kernel (see
// Conn.File); on error it closes those it made. The caller closes them with CloseFiles once
// the kernel has its own references.
func SocketFiles(conns []*Conn) ([]*os.File, error) {
	files := make([]*os.File, 0, len(conns))
	for _, c := range conns {
		f, err := c.File()
		if err != nil {
			CloseFiles(files)
			return nil, err
		}
		files = append(files, f)
	}
	return files, nil
}

// CloseFiles closes every file.
func CloseFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// BackendID names an attachment, "server:port/export" ("server:port" for the default
// export): the kernel shows it in /sys/block/nbdN/backend, and RECONFIGURE must repeat what
// CONNECT said.
func BackendID(addr, export string) string {
	if export == "" {
		return addr
	}
	return addr + "/" + strings.TrimPrefix(export, "/")
}
