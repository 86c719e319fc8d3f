package nbdserver

import (
	"errors"
	"io"
)

// source is where a connection's requests come from.
type source interface {
	// read reads into p. With wait false it never waits for the client: when nothing is
	// there it returns 0 and errWouldBlock. With wait true it blocks until at least one
	// byte, the end of the stream, an error or the read deadline.
	read(p []byte, wait bool) (int, error)
}

// lazySource is a source that can wait for data without a buffer to read it into: inbuf
// gives its buffer back while the client is silent, so an idle connection holds none.
type lazySource interface {
	source
	// readWhenReady waits until there is something to read (data, the end of the stream,
	// an error or the read deadline), then reads into the buffer get(want) returns.
	readWhenReady(want int, get func(want int) []byte) (int, error)
}

// readerSource is a source for connections that cannot be asked without waiting (TLS):
// every read may wait.
type readerSource struct{ r io.Reader }

func (s readerSource) read(p []byte, wait bool) (int, error) {
	if !wait {
		return 0, errWouldBlock
	}
	return s.r.Read(p)
}

// inbuf is the buffered input of the transmission phase. Unlike bufio.Reader it tells a
// read that finds data already waiting in the socket from one that would have to wait for
// the client: onWait runs only before the latter. The reader queues replies while requests
// keep coming and sends them (onWait) only when it is about to wait, so a client with many
// requests in flight gets its replies in a few large writes instead of one write each.
type inbuf struct {
	src    source
	size   int     // the buffer's largest size; it starts at inbufStart and grows on demand
	buf    *buffer // from the pool; nil while idle (lazySource), when b is nil too
	b      []byte
	r, w   int          // b[r:w] is buffered
	onWait func() error // called before every read that may wait; an error aborts the read
	filled bool         // the last read filled the buffer to its end
	// limit, if positive, caps the next read from the source (then resets): after a
	// payload spliced from the socket, only the next request header is read into the
	// buffer, so that a following large payload stays in the socket to be spliced too.
	limit int
	// bufForFn is in.bufFor, made once: a closure made for every wait would be garbage.
	bufForFn func(int) []byte
}

func newInbuf(src source, size int, onWait func() error) *inbuf {
	in := &inbuf{src: src, size: size, onWait: onWait}
	in.bufForFn = in.bufFor
	return in
}

// bufFor takes the buffer back after a wait without it and returns room for want bytes.
func (in *inbuf) bufFor(want int) []byte {
	in.have()
	return in.b[:min(want, len(in.b))]
}

// inbufStart is the buffer's size until a request needs more: 16 KiB holds hundreds of
// request headers, and only write payloads (up to the full size) need more. A thousand
// busy connections then hold 16 MiB of input buffers rather than 256.
const inbufStart = 16 << 10

// have makes sure the buffer is there.
func (in *inbuf) have() {
	if in.buf == nil {
		in.buf = getBuffer(min(in.size, inbufStart))
		in.b = in.buf.b
	}
}

// grow makes the buffer hold at least n bytes (n ≤ size), keeping what is buffered.
func (in *inbuf) grow(n int) {
	in.have()
	if len(in.b) >= n {
		return
	}
	nb := getBuffer(in.size)
	in.w = copy(nb.b, in.b[in.r:in.w])
	in.r = 0
	in.buf.release()
	in.buf, in.b = nb, nb.b
}

// release gives the buffer back to the pool; only when nothing is buffered.
func (in *inbuf) release() {
	if in.buf != nil {
		in.buf.release()
		in.buf, in.b = nil, nil
		in.r, in.w = 0, 0
	}
}

// buffered is the number of bytes that can be had without I/O.
func (in *inbuf) buffered() int { return in.w - in.r }

// errShortBuffer reports a peek larger than the buffer: a bug, never the client's doing.
var errShortBuffer = errors.New("inbuf: peek larger than the buffer")

// fill reads at least one more byte into the buffer: first without waiting, and only if
// the socket is empty after onWait, waiting.
func (in *inbuf) fill() error {
	if in.r == in.w {
		in.r, in.w = 0, 0
	}
	in.have()
	if in.filled && len(in.b) < in.size {
		// The last read filled the buffer: the client sends more than it holds (many
		// requests, or write payloads), so read in larger pieces until it goes quiet.
		in.grow(in.size)
	}
	if in.w == len(in.b) {
		// Only called when more is needed than b[r:] holds: slide the rest to the start.
		if in.r == 0 {
			return errShortBuffer
		}
		in.w = copy(in.b, in.b[in.r:in.w])
		in.r = 0
	}
	end := len(in.b)
	if in.limit > 0 {
		end = min(end, in.w+in.limit)
		in.limit = 0
	}
	n, err := in.src.read(in.b[in.w:end], false)
	if errors.Is(err, errWouldBlock) {
		if werr := in.onWait(); werr != nil {
			return werr
		}
		if ls, ok := in.src.(lazySource); ok && in.r == in.w {
			// Nothing buffered: wait without the buffer, which may be a while.
			want := end - in.w
			in.release()
			n, err = ls.readWhenReady(want, in.bufForFn)
		} else {
			n, err = in.src.read(in.b[in.w:end], true)
		}
	}
	if n < 0 {
		n = 0
	}
	in.filled = n > 0 && in.w+n == len(in.b)
	in.w += n
	if n > 0 {
		return nil // an error comes back with the next read
	}
	if err == nil {
		err = io.ErrNoProgress
	}
	return err
}

// peek returns the next n bytes (n ≤ the buffer size) without consuming them, reading as
// needed. The slice is valid until the next call that reads.
func (in *inbuf) peek(n int) ([]byte, error) {
	if n > in.size {
		return nil, errShortBuffer
	}
	in.grow(n)
	for in.w-in.r < n {
		if in.b != nil && len(in.b)-in.r < n {
			// Not enough room behind r for n bytes: slide what we have to the start.
			in.w = copy(in.b, in.b[in.r:in.w])
			in.r = 0
		}
		if err := in.fill(); err != nil {
			if errors.Is(err, io.EOF) && in.w > in.r {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return in.b[in.r : in.r+n], nil
}

// discard consumes n buffered bytes (n ≤ buffered()).
func (in *inbuf) discard(n int) { in.r += n }

// skip consumes n bytes, reading (and dropping) what is not buffered yet.
func (in *inbuf) skip(n int) error {
	for n > 0 {
		if in.r == in.w {
			if err := in.fill(); err != nil {
				return unexpected(err)
			}
		}
		k := min(n, in.w-in.r)
		in.r += k
		n -= k
	}
	return nil
}

// readFull fills p with the next len(p) bytes: what is buffered first, then straight from
// the source into p, so a large payload is copied once, not twice.
func (in *inbuf) readFull(p []byte) error {
	k := copy(p, in.b[in.r:in.w])
	in.r += k
	p = p[k:]
	for len(p) > 0 {
		if len(p) < in.size/4 {
			// A short rest: read it through the buffer, which may bring the next
			// requests with it.
			q, err := in.peek(len(p))
			if err != nil {
				return unexpected(err)
			}
			copy(p, q)
			in.r += len(p)
			return nil
		}
		// The buffer is empty, so reading past it keeps the stream in order.
		return in.readDirect(p)
	}
	return nil
}

// readDirect fills p straight from the source, bypassing the buffer: the caller has
// taken (or will discard) everything buffered, so the stream stays in order. What is
// buffered is left where it is.
func (in *inbuf) readDirect(p []byte) error {
	for len(p) > 0 {
		n, err := in.src.read(p, false)
		if errors.Is(err, errWouldBlock) {
			if werr := in.onWait(); werr != nil {
				return werr
			}
			n, err = in.src.read(p, true)
		}
		if n > 0 {
			p = p[n:]
			continue
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return unexpected(err)
	}
	return nil
}

// unexpected turns the end of the stream in the middle of a request into ErrUnexpectedEOF.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
