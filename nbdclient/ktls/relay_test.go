package ktls

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
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
