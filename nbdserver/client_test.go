package nbdserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// This file holds a small NBD client written for the tests from proto.md, independent of
// the server code, so tests can say exactly what goes on the wire.

type testClient struct {
	t          testing.TB
	nc         net.Conn
	rw         net.Conn
	br         *bufio.Reader
	structured bool
	info       nbd.ExportInfo
	pending    map[uint64]nbd.Request
	nextHandle uint64
}

// reply is one complete reply as the test client saw it.
type reply struct {
	Handle  uint64
	Errno   uint32
	Msg     string
	Data    []byte       // READ: the assembled data (holes as zeroes)
	Holes   int          // READ: hole chunks received
	Chunks  int          // structured chunks received
	Extents []nbd.Extent // BLOCK_STATUS
}

func dialTest(t testing.TB, addr string) *testClient {
	t.Helper()
	return dialFrom(t, addr, "")
}

// dialFrom connects from a given loopback source address ("127.0.0.2"), so one machine can
// play several clients: Linux routes all of 127.0.0.0/8 to lo.
func dialFrom(t testing.TB, addr, src string) *testClient {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if src != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src)}
	}
	nc, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &testClient{t: t, nc: nc, rw: nc, br: bufio.NewReader(nc), pending: map[uint64]nbd.Request{}}
}

// hello reads the greeting and sends the client flags.
func (c *testClient) hello(flags uint32) uint16 {
	c.t.Helper()
	var b [18]byte
	if _, err := io.ReadFull(c.br, b[:]); err != nil {
		c.t.Fatalf("greeting: %v", err)
	}
	if binary.BigEndian.Uint64(b[:]) != nbd.NBDMagic || binary.BigEndian.Uint64(b[8:]) != nbd.IHaveOpt {
		c.t.Fatalf("bad greeting % x", b)
	}
	c.write(binary.BigEndian.AppendUint32(nil, flags))
	return binary.BigEndian.Uint16(b[16:])
}

func (c *testClient) write(b []byte) {
	c.t.Helper()
	if _, err := c.rw.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *testClient) option(opt uint32, data []byte) {
	c.t.Helper()
	c.write(nbd.AppendOption(nil, opt, data))
}

// optReply reads one option reply; err is non-nil when the connection failed.
func (c *testClient) optReply() (nbd.OptReply, []byte, error) {
	var h [nbd.OptReplyHeaderSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return nbd.OptReply{}, nil, err
	}
	r, err := nbd.ParseOptReply(h[:])
	if err != nil {
		return r, nil, err
	}
	data := make([]byte, r.Length)
	_, err = io.ReadFull(c.br, data)
	return r, data, err
}

// simpleOption sends an option and returns its single reply's type and data.
func (c *testClient) simpleOption(opt uint32, data []byte) (uint32, []byte) {
	c.t.Helper()
	c.option(opt, data)
	r, d, err := c.optReply()
	if err != nil {
		c.t.Fatalf("%s: %v", nbd.OptName(opt), err)
	}
	if r.Option != opt {
		c.t.Fatalf("reply for option %d, want %d", r.Option, opt)
	}
	return r.Type, d
}

// infoGo runs NBD_OPT_INFO or NBD_OPT_GO and returns the export information or the
// server's refusal as *nbd.OptionError.
func (c *testClient) infoGo(opt uint32, name string, infos ...uint16) (nbd.ExportInfo, error) {
	c.t.Helper()
	c.option(opt, nbd.AppendInfoRequest(nil, name, infos...))
	var e nbd.ExportInfo
	for {
		r, d, err := c.optReply()
		if err != nil {
			return e, err
		}
		switch {
		case r.Type == nbd.RepInfo:
			if err := nbd.ParseInfo(d, &e); err != nil {
				c.t.Fatal(err)
			}
		case r.Type == nbd.RepAck:
			if opt == nbd.OptGo {
				c.info = e
			}
			return e, nil
		case r.Type&nbd.RepFlagError != 0:
			return e, &nbd.OptionError{Option: opt, Type: r.Type, Message: string(d)}
		default:
			c.t.Fatalf("unexpected reply type %d", r.Type)
		}
	}
}

func (c *testClient) setMeta(name string, queries ...string) []string {
	c.t.Helper()
	c.option(nbd.OptSetMetaContext, nbd.AppendMetaContextRequest(nil, nbd.MetaContextRequest{Export: name, Queries: queries}))
	var got []string
	for {
		r, d, err := c.optReply()
		if err != nil {
			c.t.Fatal(err)
		}
		switch r.Type {
		case nbd.RepMetaContext:
			got = append(got, string(d[4:]))
		case nbd.RepAck:
			return got
		default:
			c.t.Fatalf("SET_META_CONTEXT: %s %q", nbd.RepName(r.Type), d)
		}
	}
}

// connect does a typical libnbd handshake: structured replies, base:allocation, OPT_GO.
func connectTest(t testing.TB, addr, name string, structured bool) *testClient {
	t.Helper()
	return connectFrom(t, addr, "", name, structured)
}

func connectFrom(t testing.TB, addr, src, name string, structured bool) *testClient {
	t.Helper()
	c := dialFrom(t, addr, src)
	c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
	if structured {
		if typ, _ := c.simpleOption(nbd.OptStructuredReply, nil); typ != nbd.RepAck {
			t.Fatalf("STRUCTURED_REPLY: %s", nbd.RepName(typ))
		}
		c.structured = true
		c.setMeta(name, nbd.MetaBaseAllocation)
	}
	if _, err := c.infoGo(nbd.OptGo, name, nbd.InfoBlockSize); err != nil {
		t.Fatalf("GO %q: %v", name, err)
	}
	return c
}

// send queues a request; the handle is chosen by the client.
func (c *testClient) send(typ, flags uint16, off uint64, length uint32, payload []byte) uint64 {
	c.t.Helper()
	h, b := c.queue(typ, flags, off, length, payload)
	c.write(b)
	return h
}

// queue registers a request and returns its wire form, for tests that write requests from
// another goroutine while reading replies (so neither side's buffers can fill up).
func (c *testClient) queue(typ, flags uint16, off uint64, length uint32, payload []byte) (uint64, []byte) {
	c.nextHandle++
	r := nbd.Request{Type: typ, Flags: flags, Handle: c.nextHandle<<8 | 0x5a, Offset: off, Length: length}
	c.pending[r.Handle] = r
	return r.Handle, append(nbd.AppendRequest(nil, r), payload...)
}

// recv reads one complete reply (all chunks of a structured one).
func (c *testClient) recv() (reply, error) {
	var magic [4]byte
	if _, err := io.ReadFull(c.br, magic[:]); err != nil {
		return reply{}, err
	}
	switch binary.BigEndian.Uint32(magic[:]) {
	case nbd.SimpleReplyMagic:
		var rest [12]byte
		if _, err := io.ReadFull(c.br, rest[:]); err != nil {
			return reply{}, err
		}
		rp := reply{Errno: binary.BigEndian.Uint32(rest[:]), Handle: binary.BigEndian.Uint64(rest[4:])}
		req, ok := c.pending[rp.Handle]
		if !ok {
			return rp, fmt.Errorf("reply for unknown handle %#x", rp.Handle)
		}
		delete(c.pending, rp.Handle)
		if req.Type == nbd.CmdRead && rp.Errno == 0 {
			rp.Data = make([]byte, req.Length)
			if _, err := io.ReadFull(c.br, rp.Data); err != nil {
				return rp, err
			}
		}
		return rp, nil
	case nbd.StructuredReplyMagic:
		return c.recvStructured(magic[:])
	default:
		return reply{}, fmt.Errorf("bad reply magic % x", magic)
	}
}

func (c *testClient) recvStructured(magic []byte) (reply, error) {
	var rp reply
	first := true
	for {
		if !first {
			if _, err := io.ReadFull(c.br, magic); err != nil {
				return rp, err
			}
		}
		first = false
		var rest [nbd.StructuredReplyHdr - 4]byte
		if _, err := io.ReadFull(c.br, rest[:]); err != nil {
			return rp, err
		}
		h, err := nbd.ParseStructuredReply(append(append([]byte{}, magic...), rest[:]...))
		if err != nil {
			return rp, err
		}
		req, ok := c.pending[h.Handle]
		if !ok {
			return rp, fmt.Errorf("chunk for unknown handle %#x", h.Handle)
		}
		rp.Handle = h.Handle
		rp.Chunks++
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return rp, err
		}
		if req.Type == nbd.CmdRead && rp.Data == nil {
			rp.Data = make([]byte, req.Length)
		}
		switch h.Type {
		case nbd.ReplyTypeNone:
		case nbd.ReplyTypeOffsetData:
			off := binary.BigEndian.Uint64(payload)
			if off < req.Offset || off+uint64(len(payload)-8) > req.Offset+uint64(req.Length) {
				return rp, fmt.Errorf("data chunk %d+%d outside request %d+%d", off, len(payload)-8, req.Offset, req.Length)
			}
			copy(rp.Data[off-req.Offset:], payload[8:])
		case nbd.ReplyTypeOffsetHole:
			off, n := binary.BigEndian.Uint64(payload), binary.BigEndian.Uint32(payload[8:])
			if off < req.Offset || off+uint64(n) > req.Offset+uint64(req.Length) {
				return rp, fmt.Errorf("hole chunk %d+%d outside request", off, n)
			}
			clear(rp.Data[off-req.Offset : off-req.Offset+uint64(n)])
			rp.Holes++
		case nbd.ReplyTypeBlockStatus:
			id, ext, err := nbd.ParseBlockStatus(payload)
			if err != nil {
				return rp, err
			}
			if id != metaAllocID {
				return rp, fmt.Errorf("block status for context %d", id)
			}
			rp.Extents = append(rp.Extents, ext...)
		case nbd.ReplyTypeError, nbd.ReplyTypeErrorOffset:
			errno, msg, err := nbd.ParseErrorChunk(payload)
			if err != nil {
				return rp, err
			}
			rp.Errno, rp.Msg = errno, msg
		default:
			return rp, fmt.Errorf("unknown chunk type %d", h.Type)
		}
		if h.Flags&nbd.ReplyFlagDone != 0 {
			delete(c.pending, h.Handle)
			if rp.Errno != 0 {
				rp.Data = nil
			}
			return rp, nil
		}
	}
}

// do sends one request and waits for its reply.
func (c *testClient) do(typ, flags uint16, off uint64, length uint32, payload []byte) reply {
	c.t.Helper()
	h := c.send(typ, flags, off, length, payload)
	rp, err := c.recv()
	if err != nil {
		c.t.Fatalf("%s: %v", nbd.CmdName(typ), err)
	}
	if rp.Handle != h {
		c.t.Fatalf("%s: reply for handle %#x, want %#x", nbd.CmdName(typ), rp.Handle, h)
	}
	return rp
}

func (c *testClient) pread(off uint64, n uint32) []byte {
	c.t.Helper()
	rp := c.do(nbd.CmdRead, 0, off, n, nil)
	if rp.Errno != 0 {
		c.t.Fatalf("READ %d+%d: %v %s", off, n, nbd.Errno(rp.Errno), rp.Msg)
	}
	return rp.Data
}

func (c *testClient) pwrite(off uint64, p []byte, flags uint16) {
	c.t.Helper()
	if rp := c.do(nbd.CmdWrite, flags, off, uint32(len(p)), p); rp.Errno != 0 {
		c.t.Fatalf("WRITE %d+%d: %v %s", off, len(p), nbd.Errno(rp.Errno), rp.Msg)
	}
}

func (c *testClient) disconnect() {
	c.write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdDisc}))
	// The server closes after DISC; wait for that so tests see its effects.
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	io.Copy(io.Discard, c.br)
}

func (c *testClient) startTLS(cfg *tls.Config) error {
	c.t.Helper()
	typ, d := c.simpleOption(nbd.OptStartTLS, nil)
	if typ != nbd.RepAck {
		return &nbd.OptionError{Option: nbd.OptStartTLS, Type: typ, Message: string(d)}
	}
	tc := tls.Client(c.nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	c.rw = tc
	c.br = bufio.NewReader(tc)
	return nil
}

// testServer runs an in-process server on 127.0.0.1:0 for one test.
type testServer struct {
	*Server
	addr string
	logs *syncBuffer
}

func startServer(t testing.TB, cfg Config) *testServer {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = newTestLogger(t, logs)
	}
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Serve(ctx, ln)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		ctx, c := context.WithTimeout(context.Background(), 10*time.Second)
		defer c()
		if err := s.Shutdown(ctx); err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &testServer{Server: s, addr: ln.Addr().String(), logs: logs}
}

// makeImage creates a test image of size bytes filled with a recognisable pattern.
func makeImage(t testing.TB, size int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(path, pattern(0, size), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// pattern is the content makeImage writes at offset off (every byte depends on its offset).
func pattern(off, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		x := uint32(off + i)
		b[i] = byte(x>>12) ^ byte(x*7)
	}
	return b
}

func fill(n int, v byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = v
	}
	return b
}

// syncBuffer collects log output from server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTestLogger logs into buf and prints buf if the test fails.
func newTestLogger(t testing.TB, buf *syncBuffer) *log.Logger {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server log:\n%s", buf.String())
		}
	})
	return log.New(buf, "", 0)
}

// waitFor polls cond for up to 10 s; tests use it for effects of other goroutines (a
// connection's cleanup after the client closed it).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
