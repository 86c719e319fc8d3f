package ktls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// relayed hands s off to a relay and returns the kernel's end of its socket pair and the
// relay's result.
func relayed(t *testing.T, s *session) (*Relay, net.Conn, <-chan error) {
	t.Helper()
	st, err := Handoff(s.suite(), s.log, s.counter)
	if err != nil {
		t.Fatal(err)
	}
	kernel, plain := net.Pipe()
	t.Cleanup(func() { kernel.Close() })
	r, err := NewRelay(plain, s.raw, st)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run() }()
	return r, kernel, done
}

func roundTrip(t *testing.T, c net.Conn, msg []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatal("the echo through the relay differs")
	}
}

// TestRelay carries data both ways through the relay after a hand-off, across a KeyUpdate
// in both directions (ours asks crypto/tls's server for one: it answers with its own before
// its next data, which proves NextSecret against crypto/tls), and ends on the server's
// close_notify.
func TestRelay(t *testing.T) {
	s := newSession(t, echo)
	s.exchange(t, []byte("negotiation"))
	r, kernel, done := relayed(t, s)
	roundTrip(t, kernel, []byte("NBD_CMD_READ"))
	roundTrip(t, kernel, bytes.Repeat([]byte{0xa5}, 100<<10))
	if err := r.updateTX(true); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, kernel, []byte("after the key update"))
	roundTrip(t, kernel, bytes.Repeat([]byte{0x5a}, 40<<10))

	kernel.Write([]byte("bye"))
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("relay ended with %v, want the server's close_notify", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end after the server's close_notify")
	}
	// The kernel's end sees the connection end.
	kernel.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := kernel.Read(make([]byte, 1)); err == nil {
		t.Error("the kernel's end is still open")
	}
}

// TestRelayKernelCloses: the kernel closing its end ends the relay and sends close_notify.
func TestRelayKernelCloses(t *testing.T) {
	closed := make(chan error, 1)
	s := newSession(t, func(c *tls.Conn) {
		_, err := c.Read(make([]byte, 10))
		closed <- err
	})
	_, kernel, done := relayed(t, s)
	kernel.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("relay ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end when the kernel closed its end")
	}
	if err := <-closed; !errors.Is(err, io.EOF) {
		t.Errorf("the server read %v, want io.EOF (close_notify)", err)
	}
}

// lingeringWire delays the return of its writes once armed, so that the server's answer
// to a close_notify (it closes) reaches the relay before the write that sent it returns.
type lingeringWire struct {
	net.Conn
	armed chan struct{}
}

func (w *lingeringWire) Write(p []byte) (int, error) {
	n, err := w.Conn.Write(p)
	select {
	case <-w.armed:
		time.Sleep(200 * time.Millisecond)
	default:
	}
	return n, err
}

// TestRelayKernelClosesServerAnswers: the kernel closing its end is the reason the relay
// reports, even when the server, answering the relay's close_notify by closing, is
// noticed first (the keeper tells a replaced socket from a lost server by it).
func TestRelayKernelClosesServerAnswers(t *testing.T) {
	s := newSession(t, func(c *tls.Conn) {
		c.Read(make([]byte, 10)) // the close_notify
		c.Close()
	})
	st, err := Handoff(s.suite(), s.log, s.counter)
	if err != nil {
		t.Fatal(err)
	}
	kernel, plain := net.Pipe()
	wire := &lingeringWire{Conn: s.raw, armed: make(chan struct{})}
	r, err := NewRelay(plain, wire, st)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run() }()
	close(wire.armed)
	kernel.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "the kernel closed its end") {
			t.Fatalf("relay ended with %v, want the kernel's close", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the relay did not end when the kernel closed its end")
	}
}
