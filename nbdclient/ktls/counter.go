package ktls

import (
	"errors"
	"fmt"
	"math"
	"net"
	"sync"
)

// Counter is the connection under crypto/tls while a connection is negotiated: it passes
// bytes through and follows the record headers in both directions, so that once the
// handshake is done (Start) it knows how many protected records each side has sent — the
// sequence numbers the kernel must continue from. It keeps the last whole record of each
// direction, with which Handoff proves the state it derives.
//
// Every Read returns at most the rest of the current record (or of its header): crypto/tls
// reads ahead whatever a Read gives it, and bytes it buffered beyond the records it
// processed would be lost to the kernel. Nothing is buffered here either.
type Counter struct {
	net.Conn

	mu       sync.Mutex
	rx, tx   recordStream
	counting bool
}

// NewCounter wraps c.
func NewCounter(c net.Conn) *Counter { return &Counter{Conn: c} }

// recordStream follows the records of one direction of a byte stream.
type recordStream struct {
	hdr   [HeaderLen]byte
	nhdr  int    // header bytes seen of the current record
	left  int    // body bytes still to come of the current record
	cur   []byte // the current record so far
	last  []byte // the last whole protected record
	count uint64 // protected records completed since Start
	err   error  // a malformed header: the stream can no longer be followed
}

// feed follows b, the next bytes of the stream.
func (s *recordStream) feed(b []byte, counting bool) {
	for len(b) > 0 && s.err == nil {
		if s.nhdr < HeaderLen {
			n := copy(s.hdr[s.nhdr:], b)
			s.nhdr += n
			b = b[n:]
			if s.nhdr < HeaderLen {
				return
			}
			h, err := ParseHeader(s.hdr[:])
			if err != nil {
				s.err = err
				return
			}
			s.left = h.Length
			s.cur = append(s.cur[:0], s.hdr[:]...)
		} else {
			n := min(s.left, len(b))
			s.cur = append(s.cur, b[:n]...)
			s.left -= n
			b = b[n:]
		}
		if s.nhdr == HeaderLen && s.left == 0 {
			if s.hdr[0] == TypeApplicationData {
				// Every protected record counts, whatever it carries inside: data, a
				// NewSessionTicket, an alert. The middlebox-compatibility
				// ChangeCipherSpec records (RFC 8446 D.4) are not protected and do not.
				s.last = append(s.last[:0], s.cur...)
				if counting {
					s.count++
				}
			}
			s.nhdr = 0
		}
	}
}

// want is how many bytes a Read may take now: the rest of the header, or of the body.
// A stream that can no longer be followed is not limited: crypto/tls reports the bad
// record itself (a Read of zero bytes would make it spin).
func (s *recordStream) want() int {
	switch {
	case s.err != nil:
		return math.MaxInt
	case s.nhdr < HeaderLen:
		return HeaderLen - s.nhdr
	}
	return s.left
}

// boundary reports whether the stream is between records.
func (s *recordStream) boundary() bool { return s.nhdr == 0 && s.err == nil }

// Read implements net.Conn, never past the current record.
func (c *Counter) Read(p []byte) (int, error) {
	c.mu.Lock()
	want := c.rx.want()
	c.mu.Unlock()
	if len(p) > want {
		p = p[:want]
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	c.rx.feed(p[:n], c.counting)
	c.mu.Unlock()
	return n, err
}

// Write implements net.Conn.
func (c *Counter) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.mu.Lock()
	c.tx.feed(p[:n], c.counting)
	c.mu.Unlock()
	return n, err
}

// ErrNotAtBoundary reports a connection that is inside a record in one direction: the
// kernel cannot continue it.
var ErrNotAtBoundary = errors.New("the connection is in the middle of a TLS record")

// Start begins counting protected records: call it when the handshake is complete. In
// TLS 1.3 the first record after the handshake is the first of the application traffic
// keys in each direction (sequence number 0); RFC 8446 5.1 makes a key change align with
// a record boundary.
func (c *Counter) Start() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.check(); err != nil {
		return err
	}
	c.rx.count, c.tx.count, c.counting = 0, 0, true
	return nil
}

func (c *Counter) check() error {
	for _, d := range []struct {
		name string
		s    *recordStream
	}{{"received", &c.rx}, {"sent", &c.tx}} {
		if d.s.err != nil {
			return fmt.Errorf("%s: %w", d.name, d.s.err)
		}
		if !d.s.boundary() {
			return fmt.Errorf("%s: %w", d.name, ErrNotAtBoundary)
		}
	}
	return nil
}

// Records returns the protected records sent (tx) and received (rx) since Start, and the
// last whole protected record of each direction.
func (c *Counter) Records() (tx, rx uint64, lastTX, lastRX []byte, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.counting {
		return 0, 0, nil, nil, errors.New("records are counted from the end of the handshake: Start was not called")
	}
	if err := c.check(); err != nil {
		return 0, 0, nil, nil, err
	}
	return c.tx.count, c.rx.count, append([]byte(nil), c.tx.last...), append([]byte(nil), c.rx.last...), nil
}
