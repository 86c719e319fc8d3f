package ktls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/pki"
)

// session is a TLS 1.3 connection between crypto/tls's client, over a Counter, and
// crypto/tls's server, in the state a negotiation leaves it before the hand-off.
type session struct {
	client  *tls.Conn
	raw     net.Conn // the client's TCP connection, under the counter
	counter *Counter
	log     *KeyLog
	server  *tls.Conn
}

// newSession connects, completes the handshake and starts counting; the server runs
// serve on its side.
func newSession(t *testing.T, serve func(*tls.Conn)) *session {
	t.Helper()
	p := pki.New(t, "client")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &session{log: &KeyLog{}}
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		srv := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{p.Server.TLS}, MinVersion: tls.VersionTLS13})
		accepted <- srv
		if srv.Handshake() == nil && serve != nil {
			serve(srv)
		}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { raw.Close() })
	s.raw, s.counter = raw, NewCounter(raw)
	s.client = tls.Client(s.counter, &tls.Config{RootCAs: p.Pool, ServerName: "localhost", MinVersion: tls.VersionTLS13, KeyLogWriter: s.log})
	if err := s.client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := s.counter.Start(); err != nil {
		t.Fatal(err)
	}
	s.server = <-accepted
	return s
}

func (s *session) suite() Suite { return Suite(s.client.ConnectionState().CipherSuite) }

// echo is a server that sends back what it reads, in records of at most 1000 bytes
// (several records per answer), until the connection ends or it reads "bye".
func echo(c *tls.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if err != nil {
			c.Close()
			return
		}
		out := buf[:n]
		if string(out) == "bye" {
			c.Close() // close_notify
			return
		}
		for len(out) > 0 {
			k := min(1000, len(out))
			if _, err := c.Write(out[:k]); err != nil {
				return
			}
			out = out[k:]
		}
	}
}

// exchange sends msg through crypto/tls and reads the echo.
func (s *session) exchange(t *testing.T, msg []byte) {
	t.Helper()
	if _, err := s.client.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s.client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("echo differs")
	}
}

// TestHandoffContinuesCryptoTLS negotiates through crypto/tls (the server's session
// tickets and several records of data), hands off, and continues the same connection
// with this package's record layer: the server must accept our records and we must open
// its, which proves secrets, keys, IVs and both sequence numbers.
func TestHandoffContinuesCryptoTLS(t *testing.T) {
	s := newSession(t, echo)
	s.exchange(t, []byte("NBD_OPT_GO, say"))
	s.exchange(t, bytes.Repeat([]byte("0123456789"), 500)) // 5 records back
	st, err := Handoff(s.suite(), s.log, s.counter)
	if err != nil {
		t.Fatal(err)
	}
	// crypto/tls sizes its first records to a TCP segment and grows them
	// (Config.DynamicRecordSizingDisabled): 5000 bytes take more than one.
	if st.TX.Seq < 2 {
		t.Errorf("client records after the handshake: %d, want at least 2", st.TX.Seq)
	}
	// The server's records: its session ticket(s), 1 and 5 of data.
	if st.RX.Seq < 7 {
		t.Errorf("server records after the handshake: %d, want at least 7", st.RX.Seq)
	}
	t.Logf("%v: %d records sent, %d received", st.Suite, st.TX.Seq, st.RX.Seq)

	tx, _ := NewCipher(st.Suite, st.TX)
	rx, _ := NewCipher(st.Suite, st.RX)
	msg := []byte("the kernel's first request")
	rec, err := tx.Seal(nil, TypeApplicationData, msg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.raw.Write(rec); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for len(got) < len(msg) {
		rec := readRecord(t, s.raw)
		typ, pt, err := rx.Open(rec)
		if err != nil {
			t.Fatal(err)
		}
		if typ == TypeApplicationData {
			got = append(got, pt...)
		}
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("the server's answer after the hand-off: %q", got)
	}
}

func readRecord(t *testing.T, r io.Reader) []byte {
	t.Helper()
	rec := make([]byte, HeaderLen, HeaderLen+MaxCiphertext)
	if _, err := io.ReadFull(r, rec); err != nil {
		t.Fatal(err)
	}
	h, err := ParseHeader(rec)
	if err != nil {
		t.Fatal(err)
	}
	rec = rec[:HeaderLen+h.Length]
	if _, err := io.ReadFull(r, rec[HeaderLen:]); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestHandoffRefusesAMiscount starts counting late, as if records had been missed: the
// proof on the last records catches it.
func TestHandoffRefusesAMiscount(t *testing.T) {
	s := newSession(t, echo)
	s.exchange(t, []byte("first"))
	s.counter.Start() // forgets the records of the first exchange
	s.exchange(t, []byte("second"))
	if _, err := Handoff(s.suite(), s.log, s.counter); err == nil || !errors.Is(err, ErrRecord) {
		t.Fatalf("a state with wrong sequence numbers was handed off: %v", err)
	}
}

func TestCounterBoundary(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := NewCounter(a)
	go b.Write([]byte{TypeApplicationData, 3, 3, 0, 4, 1, 2})
	buf := make([]byte, 100)
	n, _ := c.Read(buf)
	if n != HeaderLen {
		t.Fatalf("first read returned %d bytes: more than the header", n)
	}
	n, _ = c.Read(buf)
	if n != 2 {
		t.Fatalf("second read returned %d bytes", n)
	}
	if err := c.Start(); !errors.Is(err, ErrNotAtBoundary) {
		t.Fatalf("Start inside a record: %v", err)
	}
	go b.Write([]byte{3, 4, TypeAlert})
	if n, _ = c.Read(buf); n != 2 {
		t.Fatalf("read past the record: %d bytes", n)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
}

// TestCounterBadHeader: after a header no TLS record has, reads are no longer limited, so
// crypto/tls sees the bytes and fails, instead of spinning on empty reads.
func TestCounterBadHeader(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	c := NewCounter(a)
	go b.Write([]byte{0x48, 0x54, 0x54, 0x50, 0x2f, 0x31, 0x2e, 0x31}) // "HTTP/1.1"
	buf := make([]byte, 100)
	if n, _ := c.Read(buf); n != HeaderLen {
		t.Fatalf("read %d bytes", n)
	}
	if n, err := c.Read(buf); n != 3 || err != nil {
		t.Fatalf("after a bad header: %d bytes, %v; want the rest", n, err)
	}
	if err := c.Start(); err == nil || !errors.Is(err, ErrRecord) {
		t.Errorf("Start on a stream with a bad header: %v", err)
	}
}
