package nbdserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		cc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(); cc.Close() })
	return sc.(*net.TCPConn), cc.(*net.TCPConn)
}

func TestRawSocketRead(t *testing.T) {
	sc, cc := tcpPair(t)
	rs := newRawSocket(sc)
	if rs == nil {
		t.Fatal("no raw socket for a TCP connection")
	}
	if p1, _ := net.Pipe(); newRawSocket(p1) != nil {
		t.Error("raw socket for a net.Pipe")
	}
	buf := make([]byte, 64)
	if n, err := rs.read(buf, false); n != 0 || !errors.Is(err, errWouldBlock) {
		t.Errorf("read of an empty socket without waiting: %d, %v", n, err)
	}
	go func() {
		time.Sleep(10 * time.Millisecond)
		cc.Write([]byte("hello"))
	}()
	n, err := rs.read(buf, true)
	if err != nil || string(buf[:n]) != "hello" {
		t.Errorf("waiting read: %q, %v", buf[:n], err)
	}
	sc.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := rs.read(buf, true); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
	sc.SetReadDeadline(time.Time{})
	cc.Write([]byte("bye"))
	cc.CloseWrite()
	var got []byte
	for {
		n, err := rs.read(buf, true)
		got = append(got, buf[:n]...)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Errorf("end of stream: %v", err)
			}
			break
		}
	}
	if string(got) != "bye" {
		t.Errorf("read %q before the end, want %q", got, "bye")
	}
}

// writev must deliver everything in order through partial writes (a full socket buffer
// and a slow reader), more buffers than one writev takes, and empty buffers.
func TestRawSocketWritev(t *testing.T) {
	sc, cc := tcpPair(t)
	sc.SetWriteBuffer(16 << 10)
	cc.SetReadBuffer(16 << 10)
	rs := newRawSocket(sc)
	var bufs [][]byte
	var want []byte
	for i := 0; i < 1500; i++ { // > maxIovecs
		n := (i * 7919) % 1000
		if i%10 == 0 {
			n = 0
		}
		b := bytes.Repeat([]byte{byte(i)}, n)
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	done := make(chan []byte)
	go func() {
		var got []byte
		p := make([]byte, 1000)
		for len(got) < len(want) {
			if len(got)%50 == 0 {
				time.Sleep(time.Millisecond) // now and then let the writer find the socket full
			}
			n, err := cc.Read(p)
			got = append(got, p[:n]...)
			if err != nil {
				break
			}
		}
		done <- got
	}()
	iov, err := rs.writev(bufs, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range iov[:cap(iov)] {
		if v.Base != nil {
			t.Fatal("writev kept a pointer into a written buffer")
		}
	}
	select {
	case got := <-done:
		if !bytes.Equal(got, want) {
			t.Errorf("received %d bytes differing from the %d written", len(got), len(want))
		}
	case <-time.After(30 * time.Second):
		t.Fatal("reader did not finish")
	}
	cc.Close()
	// A write to a connection the peer closed fails rather than blocking or killing us.
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		_, werr = rs.writev([][]byte{make([]byte, 64<<10)}, iov)
	}
	if werr == nil {
		t.Error("writes to a closed peer kept succeeding")
	}
}
