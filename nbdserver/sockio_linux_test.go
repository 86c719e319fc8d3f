package nbdserver

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
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

// TestSpliceToFile moves payloads from a socket into files: one that takes spliced data,
// one that does not (O_APPEND: splice refuses it, the bytes go through user space) and one
// that takes no writes at all, after which the pipe must be empty and the stream aligned.
func TestSpliceToFile(t *testing.T) {
	payload := make([]byte, 700<<10) // more than a default 64 KiB pipe, and not a multiple of it
	for i := range payload {
		payload[i] = byte(i*7 + i>>12)
	}
	const marker = "next request"
	tests := []struct {
		name      string
		flags     int
		off       int64
		wantSplit bool // splice refused, bytes copied through user space
		wantWErr  bool
	}{
		{"plain file", os.O_RDWR, 12345, false, false},
		{"append-only file", os.O_RDWR | os.O_APPEND, 0, true, false},
		{"read-only file", os.O_RDONLY, 0, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc, cc := tcpPair(t)
			rs := newRawSocket(sc)
			p, err := newPipe()
			if err != nil {
				t.Fatal(err)
			}
			defer p.close()
			path := t.TempDir() + "/img"
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(path, tt.flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			go func() {
				// Slowly, in pieces, so that the splice waits for the client.
				cc.Write(payload[:1000])
				time.Sleep(20 * time.Millisecond)
				cc.Write(payload[1000:])
				cc.Write([]byte(marker))
			}()
			waits := 0
			taken, noSplice, werr, err := rs.spliceToFile(p, int(f.Fd()), tt.off, len(payload), func() error { waits++; return nil })
			if err != nil {
				t.Fatalf("connection error: %v", err)
			}
			if noSplice != tt.wantSplit {
				t.Errorf("noSplice = %v, want %v", noSplice, tt.wantSplit)
			}
			if (werr != nil) != tt.wantWErr {
				t.Fatalf("write error = %v, want one: %v", werr, tt.wantWErr)
			}
			// A file that takes no writes ends the call at its first failed write, which
			// may come before any wait: the first piece can be in the socket already.
			if waits == 0 && !tt.wantWErr {
				t.Error("onWait never called, though the client was slow")
			}
			if tt.wantWErr {
				// The caller skips what was not taken; after it, the stream is aligned.
				if _, err := io.CopyN(io.Discard, sc, int64(len(payload)-taken)); err != nil {
					t.Fatal(err)
				}
			} else {
				if taken != len(payload) {
					t.Fatalf("took %d bytes, want %d", taken, len(payload))
				}
				got, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if int64(len(got)) != tt.off+int64(len(payload)) || !bytes.Equal(got[tt.off:], payload) {
					t.Errorf("file holds %d bytes, not the payload at %d", len(got), tt.off)
				}
			}
			// The pipe is empty: nothing left to read from it.
			var b [1]byte
			if n, err := syscall.Read(p.r, b[:]); n > 0 || err != syscall.EAGAIN {
				t.Errorf("pipe not empty after the payload: %d, %v", n, err)
			}
			m := make([]byte, len(marker))
			sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(sc, m); err != nil || string(m) != marker {
				t.Errorf("stream after the payload: %q, %v", m, err)
			}
		})
	}
}

// The raw socket's reads and writes allocate nothing: a connection makes several per
// request, and their garbage would set off collections in the middle of a boot storm.
func TestRawSocketAllocatesNothing(t *testing.T) {
	sc, cc := tcpPair(t)
	rs := newRawSocket(sc)
	in := newInbuf(rs, 4096, func() error { return nil })
	defer in.release()
	msg := []byte("0123456789abcdef")
	buf := make([]byte, len(msg))
	bufs := [][]byte{msg[:8], msg[8:]}
	iov := make([]iovec, 0, 4)
	var err error
	for _, tc := range []struct {
		name string
		op   func()
	}{
		{"read", func() {
			cc.Write(msg)
			for n, k := 0, 0; n < len(buf) && err == nil; n += k {
				k, err = rs.read(buf[n:], true)
			}
		}},
		{"readWhenReady", func() {
			cc.Write(msg)
			_, err = in.peek(len(msg))
			in.discard(len(msg))
		}},
		{"writev", func() {
			iov, err = rs.writev(bufs, iov)
			if err == nil {
				_, err = io.ReadFull(cc, buf)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n := testing.AllocsPerRun(50, tc.op); n != 0 {
				t.Errorf("%v allocations per call, want 0", n)
			}
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
