package ktls

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needKernelTLS skips where the kernel has no "tls" upper layer protocol (this project's
// hosts), unless NBDROOT_KTLS_REQUIRED=1: the QEMU test runs this test binary inside the
// guest, whose kernel has it.
func needKernelTLS(t *testing.T) {
	t.Helper()
	b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp")
	if !strings.Contains(string(b), "tls") {
		if os.Getenv("NBDROOT_KTLS_REQUIRED") == "1" {
			t.Fatalf("the kernel offers no tls ULP (tcp_available_ulp: %q)", b)
		}
		t.Skip("no kernel TLS here (the QEMU test TestTLSBoot runs this in its guest)")
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		got <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-got
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	for _, c := range []net.Conn{a, b} {
		c.SetDeadline(time.Now().Add(20 * time.Second))
	}
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

func enableOn(t *testing.T, c *net.TCPConn, st State) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	if err := Enable(rc, st); err != nil {
		t.Fatal(err)
	}
}

// recvRecord reads one record's plaintext through kernel TLS with its content type
// (TLS_GET_RECORD_TYPE, Documentation/networking/tls.rst): the kernel refuses to return a
// non-data record to a reader that cannot learn its type.
func recvRecord(t *testing.T, c *net.TCPConn) (uint8, []byte) {
	t.Helper()
	rc, _ := c.SyscallConn()
	buf := make([]byte, MaxPlaintext)
	oob := make([]byte, unix.CmsgSpace(1))
	var n, oobn int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		n, oobn, _, _, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
		return !errors.Is(rerr, unix.EAGAIN)
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		t.Fatalf("recvmsg: %v", err)
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 || msgs[0].Header.Level != unix.SOL_TLS || msgs[0].Header.Type != 2 {
		t.Fatalf("no TLS_GET_RECORD_TYPE control message: %v %+v", err, msgs)
	}
	return msgs[0].Data[0], buf[:n]
}

// TestKernelRFC8448 hands the kernel the RFC 8448 traffic secrets: what it sends must be
// the RFC's records byte for byte, and it must open the RFC's server records — the
// session ticket at sequence number 0, then the data at 1. This checks the crypto_info
// layout (salt and iv split, rec_seq) against the kernel itself.
func TestKernelRFC8448(t *testing.T) {
	needKernelTLS(t)
	client, peer := tcpPair(t)
	enableOn(t, client, State{Suite: AES128GCMSHA256, TX: Direction{Secret: rfc8448ClientAppSecret}, RX: Direction{Secret: rfc8448ServerAppSecret}})

	if _, err := client.Write(rfc8448AppData); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(rfc8448ClientAppRecord))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, rfc8448ClientAppRecord) {
		t.Errorf("the kernel's record:\n got %x\nwant %x", got, rfc8448ClientAppRecord)
	}

	peer.Write(rfc8448ServerTicketRecord)
	peer.Write(rfc8448ServerAppRecord)
	typ, pt := recvRecord(t, client)
	if typ != TypeHandshake || len(pt) == 0 || pt[0] != msgNewSessionTicket {
		t.Fatalf("first record: type %d %x…", typ, pt[:min(4, len(pt))])
	}
	typ, pt = recvRecord(t, client)
	if typ != TypeApplicationData || !bytes.Equal(pt, rfc8448AppData) {
		t.Fatalf("second record: type %d %x", typ, pt)
	}
}

// TestKernelSuites continues a connection of each suite at a high sequence number, both
// ways, between the kernel and this package's record layer.
func TestKernelSuites(t *testing.T) {
	needKernelTLS(t)
	for _, s := range []Suite{AES128GCMSHA256, AES256GCMSHA384, CHACHA20POLY1305SHA256} {
		t.Run(s.String(), func(t *testing.T) {
			_, h, _ := s.params()
			secret := func(b byte) []byte { return bytes.Repeat([]byte{b}, h().Size()) }
			st := State{Suite: s, TX: Direction{Secret: secret(1), Seq: 1 << 40}, RX: Direction{Secret: secret(2), Seq: 77}}
			client, peer := tcpPair(t)
			enableOn(t, client, st)
			open, _ := NewCipher(s, st.TX)
			seal, _ := NewCipher(s, st.RX)

			msg := bytes.Repeat([]byte("kernel to userspace "), 1000) // two records
			if _, err := client.Write(msg); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for len(got) < len(msg) {
				typ, pt, err := open.Open(readRecord(t, peer))
				if err != nil || typ != TypeApplicationData {
					t.Fatalf("the kernel's record does not open: type %d, %v", typ, err)
				}
				got = append(got, pt...)
			}
			if !bytes.Equal(got, msg) {
				t.Fatal("the kernel's records carry other data")
			}
			rec, _ := seal.Seal(nil, TypeApplicationData, []byte("userspace to kernel"))
			peer.Write(rec)
			buf := make([]byte, 100)
			n, err := client.Read(buf)
			if err != nil || string(buf[:n]) != "userspace to kernel" {
				t.Fatalf("the kernel read %q, %v", buf[:n], err)
			}
		})
	}
}

// TestKernelControlRecord pins what the nbd driver sees when the server sends a record
// that is not data (an alert such as close_notify, a KeyUpdate, a session ticket) after
// the hand-off: a plain read fails with EIO (the kernel will not hand a control record to
// a reader that cannot learn its type), so the driver marks the connection dead and the
// keeper reconnects with a new handshake.
func TestKernelControlRecord(t *testing.T) {
	needKernelTLS(t)
	st := State{Suite: AES128GCMSHA256, TX: Direction{Secret: rfc8448ClientAppSecret}, RX: Direction{Secret: rfc8448ServerAppSecret}}
	client, peer := tcpPair(t)
	enableOn(t, client, st)
	server, _ := NewCipher(st.Suite, st.RX)
	rec, _ := server.Seal(nil, TypeAlert, []byte{1, alertCloseNotify})
	peer.Write(rec)
	_, err := client.Read(make([]byte, 100))
	if !errors.Is(err, unix.EIO) {
		t.Fatalf("a plain read of an alert record: %v, want EIO", err)
	}
}
