package nbdserver

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Tests of the limits that keep one client from starving the others: reply memory,
// connection slots, hidden exports, shutdown with stalled clients.

// TestHiddenExport checks that an export the allow-list hides from a client answers GO and
// INFO byte for byte as an export that does not exist — by name and as the default — so
// its existence does not leak.
func TestHiddenExport(t *testing.T) {
	hidden := startServer(t, oneExport(t, func(e *Export) {
		e.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.2/32")}
		e.Default = true
	}))
	// Two exports, so neither is the default.
	other := startServer(t, Config{Exports: []Export{{Name: "a", Path: makeImage(t, testSize), ReadOnly: true}, {Name: "b", Path: makeImage(t, testSize), ReadOnly: true}}})
	raw := func(addr, name string, opt uint32) []byte {
		c := dialFrom(t, addr, "127.0.0.1")
		c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
		c.option(opt, nbd.AppendInfoRequest(nil, name, nbd.InfoName, nbd.InfoDescription))
		r, data, err := c.optReply()
		if err != nil {
			t.Fatal(err)
		}
		return nbd.AppendOptReply(nil, r.Option, r.Type, data)
	}
	for _, opt := range []uint32{nbd.OptGo, nbd.OptInfo} {
		for _, name := range []string{"root", ""} {
			got, want := raw(hidden.addr, name, opt), raw(other.addr, name, opt)
			if !bytes.Equal(got, want) {
				t.Errorf("%s %q of a hidden export:\n got %q\nwant %q (as for a missing one)", nbd.OptName(opt), name, got, want)
			}
		}
	}
	// The client the export is for still gets it, and the log tells the admin the truth.
	if _, _, err := goFrom(t, hidden.addr, "127.0.0.2", "root"); err != nil {
		t.Fatalf("allowed client refused: %v", err)
	}
	if !strings.Contains(hidden.logs.String(), `client 127.0.0.1 is not allowed to use export "root"`) {
		t.Errorf("log does not name the allow-list:\n%s", hidden.logs)
	}
}

// TestPerClientSlots opens more connections from one address than it may hold: the extra
// ones are closed at once, another address still gets in, and the refusals are logged once.
func TestPerClientSlots(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.ReadOnly = true })
	cfg.MaxClientConnections = 4
	s := startServer(t, cfg)
	var held []*testClient
	for i := 0; i < 4; i++ {
		held = append(held, connectFrom(t, s.addr, "127.0.0.1", "root", false))
	}
	for i := 0; i < 3; i++ {
		expectClosed(t, dialFrom(t, s.addr, "127.0.0.1"))
	}
	b := connectFrom(t, s.addr, "127.0.0.2", "root", false)
	if got := b.pread(0, 4096); !bytes.Equal(got, pattern(0, 4096)) {
		t.Fatal("the other client reads wrong data")
	}
	if n := strings.Count(s.logs.String(), "address 127.0.0.1 has 4 connections (limit 4"); n != 1 {
		t.Errorf("%d refusal lines, want 1 (the rest summarised later):\n%s", n, s.logs)
	}
	// A slot freed is a slot taken again.
	held[0].disconnect()
	waitFor(t, "the slot to be given back", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.slots["address 127.0.0.1"] == 3
	})
	connectFrom(t, s.addr, "127.0.0.1", "root", false).pread(0, 512)
}

// TestIdentitySlots checks the hook the client-identity option uses: an identity counts
// against its own slots wherever it connects from.
func TestIdentitySlots(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.ReadOnly = true })
	cfg.MaxClientConnections = 2
	s := startServer(t, cfg)
	var conns []*conn
	for _, src := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		dialFrom(t, s.addr, src).hello(nbd.ClientFlagFixedNewstyle)
	}
	waitFor(t, "three connections", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		conns = conns[:0]
		for c := range s.conns {
			conns = append(conns, c)
		}
		return len(conns) == 3
	})
	for i, c := range conns {
		r := c.claimIdentity("52:54:00:12:34:56")
		if (r == nil) != (i < 2) {
			t.Fatalf("claim %d: %v", i, r)
		}
		if r != nil && (r.typ != nbd.RepErrPolicy || !strings.Contains(r.msg, "client 52:54:00:12:34:56 has 2 connections")) {
			t.Errorf("refusal %+v", r)
		}
	}
	if r := conns[0].claimIdentity("52:54:00:12:34:56"); r != nil {
		t.Errorf("claiming the same identity again: %v", r)
	}
	if r := conns[0].claimIdentity("other"); r != nil {
		t.Errorf("changing identity: %v", r)
	}
	if r := conns[2].claimIdentity("52:54:00:12:34:56"); r != nil {
		t.Errorf("the slot given up by the change was not freed: %v", r)
	}
}

// TestUnusedConnectionsMakeRoom fills the server with connections that never send a
// request: once they have been silent for UnusedTimeout, a new client takes the oldest
// one's slot; connections in use are never closed for it.
func TestUnusedConnectionsMakeRoom(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.ReadOnly = true })
	cfg.MaxConnections = 3
	cfg.UnusedTimeout = 300 * time.Millisecond
	s := startServer(t, cfg)
	busy := connectFrom(t, s.addr, "127.0.0.1", "root", false)
	busy.pread(0, 512)
	silent := connectFrom(t, s.addr, "127.0.0.2", "root", false) // negotiated, then nothing
	half := dialFrom(t, s.addr, "127.0.0.3")                     // never negotiates
	half.hello(nbd.ClientFlagFixedNewstyle)
	// Full, and nobody has been silent long enough: refused.
	expectClosed(t, dialFrom(t, s.addr, "127.0.0.4"))
	time.Sleep(cfg.UnusedTimeout)
	// The oldest silent one goes.
	c := connectFrom(t, s.addr, "127.0.0.4", "root", false)
	c.pread(0, 512)
	expectClosed(t, silent)
	c2 := connectFrom(t, s.addr, "127.0.0.5", "root", false)
	c2.pread(0, 512)
	expectClosed(t, half)
	busy.pread(4096, 512)
	if !strings.Contains(s.logs.String(), "closed to make room for a new client") {
		t.Errorf("no log line for the eviction:\n%s", s.logs)
	}
}

// TestManyConnectionsFromOneAddress is the probe: 1,025 connections from one
// address, none of which ever speaks, while a normal client boots from another.
func TestManyConnectionsFromOneAddress(t *testing.T) {
	s := startServer(t, oneExport(t))
	var conns []net.Conn
	for i := 0; i < 1025; i++ {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.9")}}
		c, err := d.Dial("tcp", s.addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	c := connectFrom(t, s.addr, "127.0.0.1", "root", false)
	if got := c.pread(1<<20, 65536); !bytes.Equal(got, pattern(1<<20, 65536)) {
		t.Fatal("wrong data")
	}
	s.mu.Lock()
	n := s.slots["address 127.0.0.9"]
	s.mu.Unlock()
	if n != DefaultMaxClientConnections {
		t.Errorf("the address holds %d slots, want its limit %d", n, DefaultMaxClientConnections)
	}
}

// stallReads sends count READs of n bytes at off on a raw connection after negotiating
// export, and never reads a reply.
func stallReads(t *testing.T, addr, src, export string, count int, off uint64, n uint32) net.Conn {
	t.Helper()
	c := connectFrom(t, addr, src, export, false)
	var b []byte
	for i := 0; i < count; i++ {
		b = nbd.AppendRequest(b, nbd.Request{Type: nbd.CmdRead, Handle: uint64(i), Offset: off, Length: n})
	}
	c.write(b)
	return c.nc
}

// TestReplyMemoryBounded: clients that send large READs on a copy-on-write export (no
// sendfile) and never read the replies hold little memory each, and the server's total
// stays near its bound, while another client is served as usual.
func TestReplyMemoryBounded(t *testing.T) {
	img := makeImage(t, 64<<20)
	cfg := Config{Exports: []Export{{Name: "root", Path: img, Cow: true, CowDir: t.TempDir()}}, ReplyMemory: 16 << 20}
	s := startServer(t, cfg)
	const stalled = 8
	var peak int64
	for i := 0; i < stalled; i++ {
		stallReads(t, s.addr, fmt.Sprintf("127.0.1.%d", i+1), "root", 4, uint64(i)<<20, 32<<20)
	}
	c := connectFrom(t, s.addr, "127.0.0.1", "root", false)
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		peak = max(peak, s.replyMem.held.Load())
		// Served while the others stall: small reads, a large one, a write.
		if got := c.pread(4096, 4096); !bytes.Equal(got, pattern(4096, 4096)) {
			t.Fatal("wrong data")
		}
		peak = max(peak, s.replyMem.held.Load())
		time.Sleep(10 * time.Millisecond)
	}
	if got := c.pread(3<<20, 3<<20+5); !bytes.Equal(got, pattern(3<<20, 3<<20+5)) {
		t.Fatal("large read: wrong data")
	}
	c.pwrite(0, []byte("still writable"), nbd.CmdFlagFUA)
	// The bound plus at most one buffer (streamed piece or batch) per connection.
	if limit := cfg.ReplyMemory + (stalled+1)*streamChunk; peak > limit {
		t.Errorf("reply memory peaked at %d MiB, want at most %d MiB", peak>>20, limit>>20)
	}
	if peak < streamChunk {
		t.Errorf("reply memory peaked at %d bytes: the stalled clients were not even served", peak)
	}
}

// TestStreamedReads checks the replies of reads too large to buffer whole, without
// sendfile (a copy-on-write export): simple replies and structured ones with holes, and
// data written to the overlay in the middle.
func TestStreamedReads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sparse.img")
	const size = 12 << 20
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	// Data in the first and last 3 MiB, a 6 MiB hole between.
	f.WriteAt(pattern(0, 3<<20), 0)
	f.WriteAt(pattern(9<<20, 3<<20), 9<<20)
	f.Truncate(size)
	f.Close()
	want := make([]byte, size)
	copy(want, pattern(0, 3<<20))
	copy(want[9<<20:], pattern(9<<20, 3<<20))
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: path, Cow: true, CowDir: t.TempDir()}}})
	for _, structured := range []bool{false, true} {
		c := connectTest(t, s.addr, "root", structured)
		c.pwrite(5<<20+7, []byte("in the hole"), 0)
		copy(want[5<<20+7:], "in the hole")
		off, n := uint64(1<<20+3), uint32(10<<20+11)
		rp := c.do(nbd.CmdRead, 0, off, n, nil)
		if rp.Errno != 0 || !bytes.Equal(rp.Data, want[off:off+uint64(n)]) {
			t.Fatalf("structured=%v: streamed read: errno %d, data equal %v", structured, rp.Errno, bytes.Equal(rp.Data, want[off:off+uint64(n)]))
		}
		if structured && (rp.Holes == 0 || rp.Chunks < 3) {
			t.Errorf("structured read of a sparse range: %d chunks, %d holes", rp.Chunks, rp.Holes)
		}
		// Several at once, replies in any order.
		for i := 0; i < 4; i++ {
			c.send(nbd.CmdRead, 0, uint64(i)<<20, 2<<20+uint32(i), nil)
		}
		for i := 0; i < 4; i++ {
			rp, err := c.recv()
			if err != nil || rp.Errno != 0 {
				t.Fatalf("pipelined streamed read: %v %d", err, rp.Errno)
			}
		}
		c.disconnect()
	}
}

// TestShutdownWithStalledClient: SIGTERM's drain must not wait for a client that stopped
// reading its replies (before, a 30 s safety net ended it).
func TestShutdownWithStalledClient(t *testing.T) {
	img := makeImage(t, 64<<20)
	p := startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + img}, DrainTimeout: time.Second})
	nc := stallReads(t, p.addr, "127.0.0.1", "root", 64, 0, 4<<20)
	time.Sleep(200 * time.Millisecond) // the server has filled the socket
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t); code != 0 {
		t.Fatalf("exit code %d\n%s", code, p.stderr)
	}
	// The drain is 1 s; allow generously for a loaded machine, far below the old 31 s.
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %v with a 1s drain timeout", d)
	}
	io.Copy(io.Discard, nc) // the server is gone: the connection ends
}

// TestProcessReplyMemory is the probe against a server process: 32 connections to
// a copy-on-write export each send two 32 MiB READs and never read the replies. The
// server must stay within 256 MiB of RSS and keep serving another client.
func TestProcessReplyMemory(t *testing.T) {
	img := makeImage(t, 64<<20)
	p := startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + img + ",cow,cowtmp=" + t.TempDir()}})
	defer func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t)
	}()
	for i := 0; i < 32; i++ {
		nc := stallReads(t, p.addr, fmt.Sprintf("127.0.2.%d", i+1), "root", 1, 0, 32<<20)
		nc.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Handle: 99, Offset: 32 << 20, Length: 32 << 20}))
	}
	c := connectFrom(t, p.addr, "127.0.0.1", "root", false)
	var rss, anon int64
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		// A client booting meanwhile: reads of all sizes, a write, a flush.
		if got := c.pread(1<<20, 128<<10); !bytes.Equal(got, pattern(1<<20, 128<<10)) {
			t.Fatal("wrong data")
		}
		c.pwrite(8192, []byte("booting"), 0)
		if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
			t.Fatal(nbd.Errno(rp.Errno))
		}
		st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(st), "\n") {
			var v int64
			if _, err := fmt.Sscanf(l, "VmHWM: %d kB", &v); err == nil {
				rss = v << 10
			}
			if _, err := fmt.Sscanf(l, "RssAnon: %d kB", &v); err == nil {
				anon = max(anon, v<<10)
			}
		}
	}
	if got := c.pread(30<<20, 4<<20); !bytes.Equal(got, pattern(30<<20, 4<<20)) {
		t.Fatal("large read: wrong data")
	}
	t.Logf("server peak RSS %d MiB, anonymous memory up to %d MiB", rss>>20, anon>>20)
	if rss > 256<<20 {
		t.Errorf("server peak RSS %d MiB with 32 stalled clients, want at most 256 MiB", rss>>20)
	}
}

// TestUnixClientsNotCapped: local clients on the Unix socket count only against the
// server's bound, not a per-client one (an administrator attaching several devices).
func TestUnixClientsNotCapped(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.ReadOnly = true })
	cfg.MaxClientConnections = 2
	s := startServer(t, cfg)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), ln)
	for i := 0; i < 4; i++ {
		nc, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(30 * time.Second))
		c := &testClient{t: t, nc: nc, rw: nc, br: bufio.NewReader(nc), pending: map[uint64]nbd.Request{}}
		c.hello(nbd.ClientFlagFixedNewstyle)
		if _, err := c.infoGo(nbd.OptGo, "root"); err != nil {
			t.Fatalf("Unix-socket connection %d: %v", i, err)
		}
	}
}

// TestIdentityOptionSlots: the client-identity option counts the connection against the
// identity's slots; past them it is refused with NBD_REP_ERR_POLICY, from any address.
func TestIdentityOptionSlots(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.ReadOnly = true })
	cfg.MaxClientConnections = 2
	s := startServer(t, cfg)
	identify := func(src string) (uint32, string) {
		c := dialFrom(t, s.addr, src)
		c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
		typ, data := c.simpleOption(nbd.OptNbdrootClient, []byte("id=52:54:00:aa:bb:cc"))
		return typ, string(data)
	}
	for i, src := range []string{"127.0.0.1", "127.0.0.2"} {
		if typ, msg := identify(src); typ != nbd.RepAck {
			t.Fatalf("connection %d: %s %s", i, nbd.RepName(typ), msg)
		}
	}
	typ, msg := identify("127.0.0.3")
	if typ != nbd.RepErrPolicy || !strings.Contains(msg, "client 52:54:00:aa:bb:cc has 2 connections") {
		t.Errorf("third connection of the identity: %s %q, want NBD_REP_ERR_POLICY naming the limit", nbd.RepName(typ), msg)
	}
}
