package nbdserver

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

func TestReadWrite(t *testing.T) {
	for _, structured := range []bool{false, true} {
		name := "simple"
		if structured {
			name = "structured"
		}
		t.Run(name, func(t *testing.T) {
			cfg := oneExport(t)
			path := cfg.Exports[0].Path
			s := startServer(t, cfg)
			c := connectTest(t, s.addr, "root", structured)

			if got := c.pread(12345, 70000); !bytes.Equal(got, pattern(12345, 70000)) {
				t.Fatal("unaligned read returned wrong data")
			}
			// Inline (small) and worker (large, FUA) paths.
			small := fill(4096, 0xa1)
			c.pwrite(8192, small, 0)
			large := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
			c.pwrite(1<<20+3, large, 0)
			c.pwrite(100, []byte("fua"), nbd.CmdFlagFUA)
			if got := c.pread(8192, 4096); !bytes.Equal(got, small) {
				t.Error("small write not read back")
			}
			if got := c.pread(1<<20+3, uint32(len(large))); !bytes.Equal(got, large) {
				t.Error("large write not read back")
			}
			if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
				t.Fatalf("FLUSH: %v", nbd.Errno(rp.Errno))
			}
			file, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := pattern(0, testSize)
			copy(want[8192:], small)
			copy(want[1<<20+3:], large)
			copy(want[100:], "fua")
			if !bytes.Equal(file, want) {
				t.Error("image file differs from what was written")
			}
			// The last byte and a zero-length read at the end are fine.
			if got := c.pread(testSize-1, 1); got[0] != want[testSize-1] {
				t.Error("last byte")
			}
			if rp := c.do(nbd.CmdRead, 0, testSize, 0, nil); rp.Errno != 0 || len(rp.Data) != 0 {
				t.Errorf("zero-length read at the end: %+v", rp)
			}
			c.disconnect()
		})
	}
}

func TestRequestErrors(t *testing.T) {
	tests := []struct {
		name       string
		readOnly   bool
		structured bool
		typ, flags uint16
		off        uint64
		length     uint32
		payload    []byte
		want       uint32
	}{
		{name: "read past end", typ: nbd.CmdRead, off: testSize - 10, length: 11, want: nbd.EINVAL},
		{name: "read offset overflow", typ: nbd.CmdRead, off: ^uint64(0) - 5, length: 10, want: nbd.EINVAL},
		{name: "read with NO_HOLE", typ: nbd.CmdRead, flags: nbd.CmdFlagNoHole, length: 512, want: nbd.EINVAL},
		{name: "read DF without structured", typ: nbd.CmdRead, flags: nbd.CmdFlagDF, length: 512, want: nbd.EINVAL},
		{name: "structured read error", structured: true, typ: nbd.CmdRead, off: testSize, length: 1, want: nbd.EINVAL},
		{name: "write past end", typ: nbd.CmdWrite, off: testSize - 1, length: 2, payload: []byte{1, 2}, want: nbd.ENOSPC},
		{name: "write bad flags", typ: nbd.CmdWrite, flags: nbd.CmdFlagDF, length: 2, payload: []byte{1, 2}, want: nbd.EINVAL},
		{name: "write read-only", readOnly: true, typ: nbd.CmdWrite, length: 2, payload: []byte{1, 2}, want: nbd.EPERM},
		{name: "trim read-only", readOnly: true, typ: nbd.CmdTrim, length: 4096, want: nbd.EPERM},
		{name: "zero read-only", readOnly: true, typ: nbd.CmdWriteZeroes, length: 4096, want: nbd.EPERM},
		{name: "trim past end", typ: nbd.CmdTrim, off: testSize, length: 1, want: nbd.ENOSPC},
		{name: "cache past end", typ: nbd.CmdCache, off: testSize, length: 1, want: nbd.EINVAL},
		{name: "block status without context", structured: false, typ: nbd.CmdBlockStatus, length: 4096, want: nbd.EINVAL},
		{name: "unknown command", typ: 42, length: 0, want: nbd.EINVAL},
		{name: "flush with REQ_ONE", typ: nbd.CmdFlush, flags: nbd.CmdFlagReqOne, want: nbd.EINVAL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, oneExport(t, func(e *Export) { e.ReadOnly = tt.readOnly }))
			c := connectTest(t, s.addr, "root", tt.structured)
			rp := c.do(tt.typ, tt.flags, tt.off, tt.length, tt.payload)
			if rp.Errno != tt.want {
				t.Fatalf("got %v, want %v", nbd.Errno(rp.Errno), nbd.Errno(tt.want))
			}
			if len(rp.Data) != 0 {
				t.Errorf("error reply carried %d bytes of data", len(rp.Data))
			}
			// The connection stays usable after an error.
			if got := c.pread(0, 16); !bytes.Equal(got, pattern(0, 16)) {
				t.Error("read after error returned wrong data")
			}
			c.disconnect()
		})
	}
}

// Bad input in the transmission phase closes the connection, never crashes the server.
func TestHostileRequests(t *testing.T) {
	tests := []struct {
		name string
		req  []byte
	}{
		{"bad request magic", append([]byte{0xde, 0xad, 0xbe, 0xef}, make([]byte, 24)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, oneExport(t))
			c := connectTest(t, s.addr, "root", false)
			c.write(tt.req)
			expectClosed(t, c)
			c2 := connectTest(t, s.addr, "root", false) // the server is fine
			c2.pread(0, 1)
			c2.disconnect()
		})
	}
}

func TestTrimZeroBlockStatus(t *testing.T) {
	cfg := oneExport(t)
	s := startServer(t, cfg)
	c := connectTest(t, s.addr, "root", true)

	const mb = 1 << 20
	if rp := c.do(nbd.CmdTrim, 0, 0, mb, nil); rp.Errno != 0 {
		t.Fatalf("TRIM: %v", nbd.Errno(rp.Errno))
	}
	if rp := c.do(nbd.CmdWriteZeroes, 0, 2*mb, mb, nil); rp.Errno != 0 {
		t.Fatalf("WRITE_ZEROES: %v", nbd.Errno(rp.Errno))
	}
	if rp := c.do(nbd.CmdWriteZeroes, nbd.CmdFlagNoHole|nbd.CmdFlagFUA, 3*mb, 4096, nil); rp.Errno != 0 {
		t.Fatalf("WRITE_ZEROES NO_HOLE: %v", nbd.Errno(rp.Errno))
	}
	// Unaligned zeroing keeps the bytes around it.
	if rp := c.do(nbd.CmdWriteZeroes, 0, 3*mb+8192+100, 50, nil); rp.Errno != 0 {
		t.Fatalf("unaligned WRITE_ZEROES: %v", nbd.Errno(rp.Errno))
	}
	if rp := c.do(nbd.CmdCache, 0, 0, mb, nil); rp.Errno != 0 {
		t.Fatalf("CACHE: %v", nbd.Errno(rp.Errno))
	}
	if got := c.pread(2*mb, mb); !bytes.Equal(got, make([]byte, mb)) {
		t.Error("zeroed range does not read as zeroes")
	}
	if got := c.pread(3*mb, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("NO_HOLE zeroed range does not read as zeroes")
	}
	got := c.pread(3*mb+8192, 200)
	want := pattern(3*mb+8192, 200)
	clear(want[100:150])
	if !bytes.Equal(got, want) {
		t.Error("unaligned zeroing damaged its neighbours")
	}

	rp := c.do(nbd.CmdBlockStatus, 0, 0, testSize, nil)
	if rp.Errno != 0 {
		t.Fatalf("BLOCK_STATUS: %v %s", nbd.Errno(rp.Errno), rp.Msg)
	}
	hz := nbd.StateHole | nbd.StateZero
	wantExt := []nbd.Extent{{Length: mb, Flags: hz}, {Length: mb}, {Length: mb, Flags: hz}, {Length: mb}}
	if diff := cmp.Diff(wantExt, rp.Extents); diff != "" {
		t.Errorf("block status (-want +got):\n%s", diff)
	}
	rp = c.do(nbd.CmdBlockStatus, nbd.CmdFlagReqOne, mb/2, testSize-mb/2, nil)
	if diff := cmp.Diff([]nbd.Extent{{Length: mb / 2, Flags: hz}}, rp.Extents); diff != "" {
		t.Errorf("block status REQ_ONE (-want +got):\n%s", diff)
	}
	if rp := c.do(nbd.CmdBlockStatus, 0, testSize, 1, nil); rp.Errno != nbd.EINVAL {
		t.Errorf("block status past the end: %v", nbd.Errno(rp.Errno))
	}

	// A structured read across holes sends hole chunks; with DF it sends one data chunk.
	rp = c.do(nbd.CmdRead, 0, mb/2, 2*mb, nil)
	wantData := append(make([]byte, mb/2), pattern(mb, mb)...)
	wantData = append(wantData, make([]byte, mb/2)...)
	if rp.Errno != 0 || !bytes.Equal(rp.Data, wantData) {
		t.Fatalf("sparse read: errno %d, data ok %v", rp.Errno, bytes.Equal(rp.Data, wantData))
	}
	if rp.Holes != 2 || rp.Chunks != 3 {
		t.Errorf("sparse read: %d chunks with %d holes, want 3 with 2", rp.Chunks, rp.Holes)
	}
	rp = c.do(nbd.CmdRead, nbd.CmdFlagDF, mb/2, 2*mb, nil)
	if rp.Errno != 0 || !bytes.Equal(rp.Data, wantData) || rp.Chunks != 1 {
		t.Errorf("DF read: errno %d, %d chunks", rp.Errno, rp.Chunks)
	}
	c.disconnect()
}

// Many requests in flight at once, answered out of order, each correctly.
func TestPipelined(t *testing.T) {
	for _, structured := range []bool{false, true} {
		s := startServer(t, oneExport(t))
		c := connectTest(t, s.addr, "root", structured)
		rng := rand.New(rand.NewPCG(1, 2))
		model := pattern(0, testSize)
		type want struct {
			data []byte
		}
		expect := map[uint64]want{}
		var wire []byte
		// Writes go to disjoint ranges of the first half (overlapping writes in flight may
		// land in any order), reads to the second half.
		wpos := 0
		for i := 0; i < 400; i++ {
			n := 1 + rng.IntN(200<<10)
			if rng.IntN(2) == 0 && wpos+n <= testSize/2 {
				off := wpos
				wpos += n
				p := make([]byte, n)
				for j := range p {
					p[j] = byte(rng.Uint32())
				}
				flags := uint16(0)
				if i%7 == 0 {
					flags = nbd.CmdFlagFUA
				}
				copy(model[off:], p)
				h, b := c.queue(nbd.CmdWrite, flags, uint64(off), uint32(n), p)
				wire = append(wire, b...)
				expect[h] = want{}
			} else {
				n = 1 + rng.IntN(200<<10)
				off := testSize/2 + rng.IntN(testSize/2-n)
				h, b := c.queue(nbd.CmdRead, 0, uint64(off), uint32(n), nil)
				wire = append(wire, b...)
				expect[h] = want{data: model[off : off+n]}
			}
			if i%50 == 0 {
				h, b := c.queue(nbd.CmdFlush, 0, 0, 0, nil)
				wire = append(wire, b...)
				expect[h] = want{}
			}
		}
		go c.rw.Write(wire)
		for len(expect) > 0 {
			rp, err := c.recv()
			if err != nil {
				t.Fatal(err)
			}
			w, ok := expect[rp.Handle]
			if !ok {
				t.Fatalf("unexpected handle %#x", rp.Handle)
			}
			delete(expect, rp.Handle)
			if rp.Errno != 0 {
				t.Fatalf("handle %#x: %v", rp.Handle, nbd.Errno(rp.Errno))
			}
			if w.data != nil && !bytes.Equal(rp.Data, w.data) {
				t.Fatalf("handle %#x: wrong data", rp.Handle)
			}
		}
		if got := c.pread(0, testSize/2); !bytes.Equal(got, model[:testSize/2]) {
			t.Error("final contents differ from the model")
		}
		c.disconnect()
	}
}

// Shutdown answers what was received, refuses what comes later with ESHUTDOWN, and every
// write acknowledged as successful is in the image afterwards.
func TestShutdownDrain(t *testing.T) {
	cfg := oneExport(t)
	cfg.DrainTimeout = 5 * time.Second
	path := cfg.Exports[0].Path
	s := startServer(t, cfg)
	c := connectTest(t, s.addr, "root", false)
	type w struct {
		off int
		p   []byte
	}
	writes := map[uint64]w{}
	for i := 0; i < 64; i++ {
		p := fill(8192, byte(i+1))
		writes[c.send(nbd.CmdWrite, 0, uint64(i*8192), 8192, p)] = w{i * 8192, p}
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	waitFor(t, "drain", func() bool { return s.draining.Load() })
	late := c.send(nbd.CmdRead, 0, 0, 512, nil)
	acked := map[uint64]bool{}
	for len(c.pending) > 0 {
		rp, err := c.recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case rp.Handle == late:
			if rp.Errno != nbd.ESHUTDOWN {
				t.Errorf("request after shutdown: %v, want ESHUTDOWN", nbd.Errno(rp.Errno))
			}
		case rp.Errno == 0:
			acked[rp.Handle] = true
		case rp.Errno != nbd.ESHUTDOWN:
			t.Errorf("write: %v", nbd.Errno(rp.Errno))
		}
	}
	c.disconnect()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	file, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for h := range acked {
		if x := writes[h]; !bytes.Equal(file[x.off:x.off+8192], x.p) {
			t.Errorf("acknowledged write at %d is not in the image", x.off)
		}
	}
	if !strings.Contains(s.logs.String(), "export \"root\"") {
		t.Errorf("log: %s", s.logs)
	}
}

// With a negative drain timeout, idle connections close as soon as shutdown starts.
func TestShutdownNoDrain(t *testing.T) {
	cfg := oneExport(t)
	cfg.DrainTimeout = -1
	s := startServer(t, cfg)
	c := connectTest(t, s.addr, "root", false)
	c.pwrite(0, []byte("x"), 0)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	expectClosed(t, c)
	if err := s.Shutdown(ctx); !errors.Is(err, ErrServerClosed) {
		t.Errorf("second Shutdown: %v", err)
	}
}

func TestConcurrentConnections(t *testing.T) {
	s := startServer(t, oneExport(t))
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := connectTest(t, s.addr, "root", i%2 == 0)
			region := uint64(i) << 20
			for j := 0; j < 50; j++ {
				p := fill(1000+j, byte(i*50+j))
				c.pwrite(region+uint64(j*1000), p, 0)
				if got := c.pread(region+uint64(j*1000), uint32(len(p))); !bytes.Equal(got, p) {
					t.Errorf("conn %d: read back %d", i, j)
					return
				}
			}
			c.disconnect()
		}()
	}
	wg.Wait()
}

// An export's idle timeout closes connections that send nothing.
func TestIdleTimeout(t *testing.T) {
	s := startServer(t, oneExport(t, func(e *Export) { e.IdleTimeout = 100 * time.Millisecond }))
	c := connectTest(t, s.addr, "root", false)
	c.pread(0, 1)
	expectClosed(t, c)
	waitFor(t, "the idle log line", func() bool { return strings.Contains(s.logs.String(), "idle for 100ms") })
}

func TestServerFlushAndClose(t *testing.T) {
	cfg := oneExport(t)
	s := startServer(t, cfg)
	c := connectTest(t, s.addr, "root", false)
	c.pwrite(0, []byte("flushed"), 0)
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, c)
	if file, _ := os.ReadFile(cfg.Exports[0].Path); !bytes.HasPrefix(file, []byte("flushed")) {
		t.Error("write lost")
	}
	if err := s.Close(); !errors.Is(err, ErrServerClosed) {
		t.Errorf("second Close: %v", err)
	}
}

// A large write whose payload trickles in: part of it sits in the read buffer, the rest is
// read straight from the connection. Both parts must land in order.
func TestWriteArrivesInPieces(t *testing.T) {
	s := startServer(t, oneExport(t))
	c := connectTest(t, s.addr, "root", false)
	p := bytes.Repeat([]byte("0123456789"), 100000) // 1,000,000 bytes
	h, wire := c.queue(nbd.CmdWrite, 0, 4097, uint32(len(p)), p)
	for len(wire) > 0 {
		k := min(len(wire), 70001)
		c.write(wire[:k])
		wire = wire[k:]
		time.Sleep(2 * time.Millisecond)
	}
	rp, err := c.recv()
	if err != nil || rp.Handle != h || rp.Errno != 0 {
		t.Fatalf("reply %+v, %v", rp, err)
	}
	if got := c.pread(4097, uint32(len(p))); !bytes.Equal(got, p) {
		t.Fatal("trickled write read back wrong")
	}
	c.disconnect()
}
