package tftp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// memFile is a File in memory.
type memFile struct {
	*bytes.Reader
	size int64
}

func (m memFile) Size() int64  { return m.size }
func (m memFile) Close() error { return nil }

func newMem(b []byte) memFile { return memFile{bytes.NewReader(b), int64(len(b))} }

// start runs a server on loopback serving files; it returns its address.
func start(t *testing.T, files map[string][]byte, mod func(*Server)) *net.UDPAddr {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{
		Timeout: 200 * time.Millisecond,
		Handler: func(req *Request, remote *net.UDPAddr, local net.IP) (File, error) {
			if !local.Equal(net.IPv4(127, 0, 0, 1)) {
				return nil, fmt.Errorf("local address %v", local)
			}
			b, ok := files[req.Filename]
			if !ok {
				return nil, &fs.PathError{Op: "open", Path: req.Filename, Err: fs.ErrNotExist}
			}
			return newMem(b), nil
		},
	}
	if mod != nil {
		mod(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, conn) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return conn.LocalAddr().(*net.UDPAddr)
}

func request(op uint16, fields ...string) []byte {
	b := []byte{byte(op >> 8), byte(op)}
	for _, f := range fields {
		b = append(b, f...)
		b = append(b, 0)
	}
	return b
}

// client is a test TFTP client that does exactly what a test asks.
type client struct {
	t    *testing.T
	conn *net.UDPConn
	srv  *net.UDPAddr // the server's transfer address once known
}

func dial(t *testing.T, server *net.UDPAddr) *client {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c, srv: server}
}

func (c *client) send(b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP(b, c.srv); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next packet from the server's transfer address (learning it from the
// first answer), or nil after timeout.
func (c *client) recv(timeout time.Duration) []byte {
	c.t.Helper()
	buf := make([]byte, 70000)
	c.conn.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	c.srv = from
	return buf[:n]
}

func ack(block uint16) []byte { return []byte{0, opACK, byte(block >> 8), byte(block)} }

// get reads a whole file: RRQ with options, the OACK if any, then DATA until a short block.
func (c *client) get(name, mode string, opts ...string) (data []byte, oack []Option, err error) {
	c.send(request(opRRQ, append([]string{name, mode}, opts...)...))
	blk := DefaultBlockSize
	expect := uint16(1)
	for {
		p := c.recv(5 * time.Second)
		if p == nil {
			return data, oack, errors.New("timeout")
		}
		switch binary.BigEndian.Uint16(p) {
		case opERROR:
			return data, oack, &Error{Code: binary.BigEndian.Uint16(p[2:]), Message: string(bytes.TrimRight(p[4:], "\x00"))}
		case opOACK:
			f := strings.Split(strings.TrimRight(string(p[2:]), "\x00"), "\x00")
			for i := 0; i+1 < len(f); i += 2 {
				oack = append(oack, Option{f[i], f[i+1]})
				if f[i] == "blksize" {
					blk, _ = strconv.Atoi(f[i+1])
				}
			}
			c.send(ack(0))
		case opDATA:
			if binary.BigEndian.Uint16(p[2:]) != expect {
				continue
			}
			data = append(data, p[4:]...)
			c.send(ack(expect))
			if len(p)-4 < blk {
				return data, oack, nil
			}
			expect++
		}
	}
}

func content(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}

func TestTransfers(t *testing.T) {
	files := map[string][]byte{
		"small":             []byte("hello"),
		"exact":             content(1024), // a multiple of 512: ends with an empty block
		"big":               content(300000),
		"text":              []byte("a\nb\rc\r\n"),
		"empty":             {},
		"dir/undionly.kpxe": content(70000),
	}
	srv := start(t, files, nil)
	tests := []struct {
		name, file, mode string
		opts             []string
		want             []byte
		wantOACK         []Option
	}{
		{name: "octet", file: "small", mode: "octet", want: files["small"]},
		{name: "multiple of 512", file: "exact", mode: "octet", want: files["exact"]},
		{name: "empty", file: "empty", mode: "octet", want: nil},
		{name: "mode is case-insensitive", file: "small", mode: "OCTET", want: files["small"]},
		{name: "blksize and tsize", file: "big", mode: "octet", opts: []string{"tsize", "0", "blksize", "1468"},
			want: files["big"], wantOACK: []Option{{"tsize", "300000"}, {"blksize", "1468"}}},
		{name: "option names are case-insensitive", file: "big", mode: "octet", opts: []string{"BLKSIZE", "1432"},
			want: files["big"], wantOACK: []Option{{"blksize", "1432"}}},
		{name: "blksize above the limit is lowered", file: "dir/undionly.kpxe", mode: "octet", opts: []string{"blksize", "99999999999999999999999"},
			want: files["dir/undionly.kpxe"], wantOACK: []Option{{"blksize", "65464"}}},
		{name: "timeout", file: "small", mode: "octet", opts: []string{"timeout", "3"},
			want: files["small"], wantOACK: []Option{{"timeout", "3"}}},
		{name: "unknown options are left out", file: "small", mode: "octet", opts: []string{"windowsize", "8", "multicast", ""},
			want: files["small"]},
		{name: "netascii", file: "text", mode: "netascii", opts: []string{"tsize", "0"},
			want: []byte("a\r\nb\r\x00c\r\x00\r\n")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, oack, err := dial(t, srv).get(tt.file, tt.mode, tt.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("got %d bytes, want %d (equal: %v)", len(got), len(tt.want), bytes.Equal(got, tt.want))
			}
			if diff := cmp.Diff(tt.wantOACK, oack); diff != "" {
				t.Errorf("OACK (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	srv := start(t, map[string][]byte{"f": []byte("x")}, nil)
	long := request(opRRQ, "f", "octet", "blksize", strings.Repeat("9", 600))
	tests := []struct {
		name     string
		pkt      []byte
		wantCode uint16
		wantMsg  string
	}{
		{"missing file", request(opRRQ, "nothing", "octet"), ErrNotFound, "nothing"},
		{"write request", request(opWRQ, "f", "octet"), ErrAccess, "only sends"},
		{"request over 512 bytes", long, ErrIllegalOp, "RFC 2347"},
		{"blksize too small", request(opRRQ, "f", "octet", "blksize", "4"), ErrOptionRefused, "blksize"},
		{"blksize not a number", request(opRRQ, "f", "octet", "blksize", "big"), ErrOptionRefused, "blksize"},
		{"timeout 0", request(opRRQ, "f", "octet", "timeout", "0"), ErrOptionRefused, "timeout"},
		{"tsize not a number", request(opRRQ, "f", "octet", "tsize", "x"), ErrOptionRefused, "tsize"},
		{"mail mode", request(opRRQ, "f", "mail"), ErrIllegalOp, "mode"},
		{"no mode", []byte{0, 1, 'f', 0}, ErrIllegalOp, "mode"},
		{"option without value", request(opRRQ, "f", "octet", "blksize"), ErrIllegalOp, "without a value"},
		{"data packet as a request", []byte{0, opDATA, 0, 1, 'x'}, ErrIllegalOp, "opcode 3"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, srv)
			c.send(tt.pkt)
			p := c.recv(2 * time.Second)
			if p == nil || binary.BigEndian.Uint16(p) != opERROR {
				t.Fatalf("answer %q, want an ERROR", p)
			}
			code, msg := binary.BigEndian.Uint16(p[2:]), string(p[4:])
			if code != tt.wantCode || !strings.Contains(msg, tt.wantMsg) {
				t.Errorf("ERROR %d %q, want %d containing %q", code, msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
	// The server still serves after all that.
	if got, _, err := dial(t, srv).get("f", "octet"); err != nil || string(got) != "x" {
		t.Errorf("after the refusals: %q, %v", got, err)
	}
}

// TestRetransmit: a lost ACK makes the server send the block again; a duplicate ACK does
// not (the Sorcerer's Apprentice bug); a silent client is abandoned, and another client is
// served meanwhile.
func TestRetransmit(t *testing.T) {
	files := map[string][]byte{"f": content(1500)}
	srv := start(t, files, func(s *Server) { s.Retries = 2 })
	c := dial(t, srv)
	c.send(request(opRRQ, "f", "octet"))
	first := c.recv(time.Second)
	again := c.recv(time.Second) // no ACK sent: the same block comes again
	if first == nil || !bytes.Equal(first, again) {
		t.Fatalf("block 1 not sent again after a lost ACK: %x / %x", first[:4], again)
	}
	c.send(ack(1))
	b2 := c.recv(time.Second)
	c.send(ack(1)) // a duplicate of the old ACK
	c.send(ack(1))
	if p := c.recv(120 * time.Millisecond); p != nil {
		t.Fatalf("a duplicate ACK made the server send %x", p[:4])
	}
	if binary.BigEndian.Uint16(b2[2:]) != 2 {
		t.Fatalf("second packet is block %d", binary.BigEndian.Uint16(b2[2:]))
	}
	// c now goes silent; another client gets the whole file meanwhile.
	if got, _, err := dial(t, srv).get("f", "octet"); err != nil || !bytes.Equal(got, files["f"]) {
		t.Errorf("second client: %d bytes, %v", len(got), err)
	}
}

// TestBlockWrap sends a file of more than 65535 blocks: block numbers wrap to 0.
func TestBlockWrap(t *testing.T) {
	if testing.Short() {
		t.Skip("65540 round trips")
	}
	data := content(8*65540 + 3)
	srv := start(t, map[string][]byte{"f": data}, nil)
	c := dial(t, srv)
	c.send(request(opRRQ, "f", "octet", "blksize", "8"))
	var got []byte
	var seen0 bool
	expect := uint16(0)
	for {
		p := c.recv(2 * time.Second)
		if p == nil {
			t.Fatalf("timeout after %d bytes", len(got))
		}
		op, blk := binary.BigEndian.Uint16(p), binary.BigEndian.Uint16(p[2:])
		if op == opOACK {
			c.send(ack(0))
			expect = 1
			continue
		}
		if op == opDATA && blk == expect-1 && len(got) > 0 {
			// The server's retransmission of the block acknowledged last (our ACK was
			// late on a loaded machine): a client ignores it without answering, as RFC
			// 1350's fix of the Sorcerer's Apprentice bug asks.
			continue
		}
		if op != opDATA || blk != expect {
			t.Fatalf("got op %d block %d, want DATA %d", op, blk, expect)
		}
		if blk == 0 {
			seen0 = true
		}
		got = append(got, p[4:]...)
		c.send(ack(blk))
		if len(p)-4 < 8 {
			break
		}
		expect++
	}
	if !seen0 || !bytes.Equal(got, data) {
		t.Errorf("wrapped to block 0: %v; content equal: %v", seen0, bytes.Equal(got, data))
	}
}

// TestBusy: past MaxTransfers a request is refused at once instead of waiting.
func TestBusy(t *testing.T) {
	srv := start(t, map[string][]byte{"f": content(5000)}, func(s *Server) { s.MaxTransfers = 1; s.Retries = 20 })
	hog := dial(t, srv)
	hog.send(request(opRRQ, "f", "octet"))
	if p := hog.recv(time.Second); p == nil {
		t.Fatal("no first block")
	}
	c := dial(t, srv)
	c.send(request(opRRQ, "f", "octet"))
	p := c.recv(time.Second)
	if p == nil || binary.BigEndian.Uint16(p) != opERROR || !strings.Contains(string(p), "busy") {
		t.Fatalf("second transfer answered %q, want ERROR busy", p)
	}
}

// TestPeers fetches files with real TFTP clients: busybox tftp (blksize) and curl (tsize,
// blksize).
func TestPeers(t *testing.T) {
	files := map[string][]byte{"pxelinux.0": content(46000), "root/vmlinuz-6.1": content(1<<20 + 17)}
	srv := start(t, files, nil)
	port := strconv.Itoa(srv.Port)
	dir := t.TempDir()
	ran := 0
	if bb, err := exec.LookPath("busybox"); err == nil {
		for name, want := range files {
			out := filepath.Join(dir, "bb")
			cmd := exec.Command(bb, "tftp", "-g", "-b", "1468", "-r", name, "-l", out, "127.0.0.1", port)
			if o, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("busybox tftp %s: %v\n%s", name, err, o)
				continue
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
				t.Errorf("busybox tftp %s: %d bytes differ", name, len(got))
			}
		}
		ran++
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		for name, want := range files {
			out := filepath.Join(dir, "curl")
			cmd := exec.Command(curl, "-sS", "--tftp-blksize", "1024", "-o", out, "tftp://127.0.0.1:"+port+"/"+name)
			if o, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("curl %s: %v\n%s", name, err, o)
				continue
			}
			if got, _ := os.ReadFile(out); !bytes.Equal(got, want) {
				t.Errorf("curl %s: %d bytes differ", name, len(got))
			}
		}
		ran++
	}
	if ran == 0 {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatal("no TFTP client (busybox, curl) and NBDROOT_REQUIRE_PEERS=1")
		}
		t.Skip("no TFTP client (busybox, curl)")
	}
}

// FuzzRequest: whatever arrives on port 69, parsing and negotiation neither panic nor grant
// a block size outside RFC 2348's range.
func FuzzRequest(f *testing.F) {
	f.Add(request(opRRQ, "pxelinux.0", "octet", "tsize", "0", "blksize", "1408"))
	f.Add(request(opRRQ, "x", "netascii", "timeout", "5"))
	f.Add(request(opWRQ, "x", "octet"))
	f.Add(request(opRRQ, "../../etc/passwd", "octet", "blksize", "65465"))
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, b []byte) {
		n.Add(1)
		r, err := ParseRequest(b)
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %v is not a *Error", err)
			}
			if len(errorPacket(te)) > MaxRequest {
				t.Fatalf("error packet of %d bytes", len(errorPacket(te)))
			}
			return
		}
		s, err := Negotiate(r, 1000, 0, time.Second)
		if err != nil {
			return
		}
		if s.BlockSize < MinBlockSize || s.BlockSize > MaxBlockSize {
			t.Fatalf("block size %d granted", s.BlockSize)
		}
		if s.Timeout < time.Second || s.Timeout > 255*time.Second {
			t.Fatalf("timeout %v", s.Timeout)
		}
	})
}
