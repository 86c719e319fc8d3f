package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// This file holds the two halves every attach and every reconnect share: negotiate (dial,
// multi-conn, the compatibility check, the block size, the socket files) and failover (the
// one retry loop across servers). Attach and the keeper's reconnect differ only in what
// they do with a negotiated link: NBD_CMD_CONNECT (or the ioctl keeper) for a new device,
// NBD_CMD_RECONFIGURE for one whose connections died.

// Step names a step of an attach, so that callers can say what failed in their own words
// (the init's "BOOT FAILED … tried:" line).
type Step string

// The steps of an attach, in order.
const (
	// StepConnect dials and negotiates with the servers (every server, every round).
	StepConnect Step = "connect"
	// StepCompatible checks that a reconnect found the export its device was attached to,
	// and the copy-on-write overlay (an *OverlayError when not).
	StepCompatible Step = "compatible"
	// StepBlockSize chooses the logical block size from the request and the server's limits.
	StepBlockSize Step = "block size"
	// StepSockets makes the socket files the kernel takes.
	StepSockets Step = "sockets"
	// StepReady is the caller's Request.Ready (the init waits for the nbd module there).
	StepReady Step = "ready"
	// StepKernel hands the sockets to the kernel: NBD_CMD_CONNECT, the ioctl keeper, or
	// NBD_CMD_RECONFIGURE.
	StepKernel Step = "kernel"
)

// AttachError is a failed attach or reconnect: the step that failed and why. Its message
// is the reason's alone, which already names the server and export where they matter.
type AttachError struct {
	Step Step
	// Server is the host:port the step was for, "" when no server answered.
	Server string
	// Size is the export's size, for the steps after the handshake.
	Size uint64
	Err  error
}

// Error implements error.
func (e *AttachError) Error() string { return e.Err.Error() }

// Unwrap returns the reason.
func (e *AttachError) Unwrap() error { return e.Err }

// stepOf returns the step an error of negotiate or an attach failed in ("" when unknown).
func stepOf(err error) Step {
	var ae *AttachError
	if errors.As(err, &ae) {
		return ae.Step
	}
	return ""
}

// link is one negotiated set of connections to a server, ready for the kernel.
type link struct {
	addr  string
	conns []*Conn
	files []*os.File
	info  nbd.ExportInfo
	// bs is the logical block size for the device.
	bs uint32
	// relays has, for each file of a relayed TLS connection, the record layer a relay
	// continues (the file is then the TCP socket, for the relay, never for the kernel);
	// nil entries go to the kernel as they are. nil when no connection is relayed.
	relays []*ktls.State
	// tls says how the connections are secured ("" without TLS).
	tls string
}

// close closes the link's sockets: the kernel holds its own references once it took them.
func (l *link) close() {
	CloseFiles(l.files)
	CloseAll(l.conns)
}

// linkSpec is what negotiate needs from an attach or a reconnect.
type linkSpec struct {
	dial        DialFunc
	export      string
	connections int
	// dialTimeout bounds dialling and the handshake of all the connections to one server.
	dialTimeout time.Duration
	// blockSize is the block size asked for (0: negotiate).
	blockSize int
	// client is the identity to send and the overlay to resume (nil: no identity).
	client *nbd.ClientOption
	// expect, when set, is the overlay the server must serve: a reconnect's device's, or
	// an attach that resumes one. nil takes what a fresh attach is given.
	expect *nbd.OverlayID
	// device is the device a reconnect repairs: the export must still fit it. nil for a
	// new attach.
	device *KeeperTarget
	// tls is the attach's TLS: a connection that ends up without TLS when it is required
	// is refused here too, whatever the dial function did.
	tls  *TLSSettings
	note func(string)
}

// negotiate is the first half of every attach and reconnect, the same for both: dial addr
// (one connection, more when the server allows multi-conn), check that the export still
// fits the device being repaired and that the server serves the overlay expected, choose
// the block size and make the socket files the kernel takes. The caller hands them to the
// kernel and closes the link. Errors are *AttachError; an overlay the server does not
// serve is one of StepCompatible wrapping an *OverlayError.
func negotiate(ctx context.Context, s linkSpec, addr string) (*link, error) {
	dctx, cancel := context.WithTimeout(ctx, orDefault(s.dialTimeout, DefaultDialTimeout))
	defer cancel()
	conns, err := DialConns(dctx, s.dial, addr, DialOptions{Export: s.export, Client: s.client}, max(1, s.connections), s.note)
	if err != nil {
		if oe := overlayGone(addr, s.client, err); oe != err {
			return nil, &AttachError{Step: StepCompatible, Server: addr, Err: oe}
		}
		return nil, &AttachError{Step: StepConnect, Server: addr, Err: err}
	}
	l := &link{addr: addr, conns: conns, info: conns[0].Info}
	fail := func(step Step, err error) (*link, error) {
		l.close()
		return nil, &AttachError{Step: step, Server: addr, Size: l.info.Size, Err: err}
	}
	if s.tls != nil {
		for _, c := range conns {
			if s.tls.required() && !c.TLS.Secured() {
				return fail(StepConnect, &DialError{Server: addr, Export: s.export, Err: &TLSError{Reason: TLSRefused, Err: fmt.Errorf("%w: the connection is not encrypted and TLS is required", ErrTLSRefused)}})
			}
		}
		l.tls = describeTLS(conns)
	}
	want := s.blockSize
	if s.device != nil {
		if err := compatible(*s.device, l.info); err != nil {
			return fail(StepCompatible, fmt.Errorf("%s: %w", BackendID(addr, s.export), err))
		}
		want = int(s.device.BlockSize)
	}
	if s.expect != nil {
		if err := checkOverlay(addr, s.client, *s.expect, l.info); err != nil {
			return fail(StepCompatible, err)
		}
	}
	if l.bs, err = BlockSize(l.info, want); err != nil {
		return fail(StepBlockSize, fmt.Errorf("%s: %w", BackendID(addr, s.export), err))
	}
	if l.files, err = SocketFiles(conns); err != nil {
		return fail(StepSockets, err)
	}
	for i, c := range conns {
		if c.TLS != nil && c.TLS.Relay != nil {
			if l.relays == nil {
				l.relays = make([]*ktls.State, len(conns))
			}
			l.relays[i] = c.TLS.Relay
		}
	}
	return l, nil
}

// compatible refuses to hand the kernel a connection to an export that is not the one the
// device was attached to: another size would corrupt the filesystem's idea of the disk, and
// a writable device on a read-only export turns every write into an error.
func compatible(t KeeperTarget, info nbd.ExportInfo) error {
	if info.Size != t.Size {
		return fmt.Errorf("the export is now %d bytes, the device has %d: refusing it (another export, or a resized image?)", info.Size, t.Size)
	}
	if t.Flags&nbd.TransReadOnly == 0 && info.Flags&nbd.TransReadOnly != 0 {
		return errors.New("the export is now read-only but the device was attached writable: refusing it")
	}
	return nil
}

// retry is how failover goes on after a failure.
type retry struct {
	// minBackoff and maxBackoff bound the wait between rounds (0: the defaults).
	minBackoff, maxBackoff time.Duration
	// rounds is the number of rounds over the servers, 0 for no limit (until ctx ends).
	rounds int
	// final says whether an error ends the attempts at once.
	final func(error) bool
	// failed, when set, hears every failure: the round (from 1), the server and why.
	failed func(round int, addr string, err error)
}

// isContextErr reports whether err is a context's end (a deadline, a cancellation).
func isContextErr(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// failover is the one retry loop of an attach or a reconnect: it tries the servers in
// order, starting at start, round after round, until try succeeds, an error is final, the
// rounds are done or ctx ends. Between rounds it waits with exponential backoff, from
// DefaultMinBackoff doubling up to DefaultMaxBackoff with ±20% jitter: the first retry
// comes quickly (a restarting server is back within seconds), and a room of clients does
// not hammer a server that just came back in lockstep.
//
// It returns the index of the server that succeeded and the round it took; on failure the
// last error (ctx's when there was none; the one before when ctx cut the last attempt
// short) and the round reached.
func failover(ctx context.Context, r retry, servers []string, start int, try func(addr string) error) (int, int, error) {
	if len(servers) == 0 {
		return -1, 0, errors.New("no server to connect to")
	}
	backoff := orDefault(r.minBackoff, DefaultMinBackoff)
	maxBackoff := orDefault(r.maxBackoff, DefaultMaxBackoff)
	var last error
	for round := 1; ; round++ {
		for i := range servers {
			s := (start + i) % len(servers)
			err := try(servers[s])
			if err == nil {
				return s, round, nil
			}
			if r.failed != nil && ctx.Err() == nil {
				r.failed(round, servers[s], err)
			}
			if r.final != nil && r.final(err) {
				return -1, round, err
			}
			// An attempt the deadline cut short says less than the one before it (a
			// certificate that does not verify, a refusal): that one is the reason.
			if ctx.Err() == nil || last == nil || !isContextErr(err) {
				last = err
			}
			if ctx.Err() != nil {
				return -1, round, last
			}
		}
		if r.rounds > 0 && round >= r.rounds {
			return -1, round, last
		}
		pause := time.NewTimer(time.Duration(float64(backoff) * (0.8 + 0.4*rand.Float64())))
		select {
		case <-ctx.Done():
			pause.Stop()
			if last == nil {
				last = ctx.Err()
			}
			return -1, round, last
		case <-pause.C:
		}
		if backoff *= 2; backoff > maxBackoff {
			backoff = maxBackoff
		}
	}
}
