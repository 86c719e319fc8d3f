package nbdserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// goFrom runs a handshake from src and returns the export info or the refusal.
func goFrom(t *testing.T, addr, src, name string) (*testClient, nbd.ExportInfo, error) {
	t.Helper()
	c := dialFrom(t, addr, src)
	c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
	info, err := c.infoGo(nbd.OptGo, name)
	return c, info, err
}

func wantRefusal(t *testing.T, err error, typ uint32, msgPart string) {
	t.Helper()
	var oe *nbd.OptionError
	if !errors.As(err, &oe) || oe.Type != typ || !strings.Contains(oe.Message, msgPart) {
		t.Fatalf("got %v, want %s mentioning %q", err, nbd.RepName(typ), msgPart)
	}
}

func TestExclusiveWriter(t *testing.T) {
	s := startServer(t, oneExport(t))
	a1 := connectFrom(t, s.addr, "127.0.0.1", "root", false)
	// The same client may open more connections (multi-conn) and write on them.
	a2 := connectFrom(t, s.addr, "127.0.0.1", "root", true)
	a2.pwrite(0, []byte("a2"), 0)

	_, _, err := goFrom(t, s.addr, "127.0.0.2", "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write by 127.0.0.1")
	b := dialFrom(t, s.addr, "127.0.0.2")
	b.hello(nbd.ClientFlagFixedNewstyle)
	_, err = b.infoGo(nbd.OptInfo, "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "127.0.0.1")
	b.option(nbd.OptExportName, []byte("root"))
	expectClosed(t, b)
	if !strings.Contains(s.logs.String(), `refused NBD_OPT_GO "root": export "root" is in use read-write by 127.0.0.1`) {
		t.Errorf("refusal not logged:\n%s", s.logs)
	}

	// Once every connection of the holder is gone, another client may write.
	a1.disconnect()
	_, _, err = goFrom(t, s.addr, "127.0.0.2", "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "127.0.0.1")
	a2.disconnect()
	var c *testClient
	waitFor(t, "the writer lock to be released", func() bool {
		c, _, err = goFrom(t, s.addr, "127.0.0.2", "root")
		return err == nil
	})
	c.pending = map[uint64]nbd.Request{}
	c.pwrite(0, []byte("b"), 0)
}

func TestReadOnlyFallbackAndShared(t *testing.T) {
	t.Run("rofallback", func(t *testing.T) {
		s := startServer(t, oneExport(t, func(e *Export) { e.ReadOnlyFallback = true }))
		a := connectFrom(t, s.addr, "127.0.0.1", "root", false)
		a.pwrite(0, []byte("from a"), 0)
		b, info, err := goFrom(t, s.addr, "127.0.0.2", "root")
		if err != nil {
			t.Fatal(err)
		}
		if info.Flags&nbd.TransReadOnly == 0 {
			t.Fatalf("fallback view is not read-only: %v", nbd.FlagNames(info.Flags))
		}
		if rp := b.do(nbd.CmdWrite, 0, 0, 1, []byte{1}); rp.Errno != nbd.EPERM {
			t.Errorf("write through the read-only view: %v", nbd.Errno(rp.Errno))
		}
		if got := b.pread(0, 6); string(got) != "from a" {
			t.Errorf("read-only view reads %q", got)
		}
	})
	t.Run("shared", func(t *testing.T) {
		s := startServer(t, oneExport(t, func(e *Export) { e.Shared = true }))
		if !strings.Contains(s.logs.String(), "WARNING: shared") {
			t.Errorf("shared export not announced loudly:\n%s", s.logs)
		}
		a := connectFrom(t, s.addr, "127.0.0.1", "root", false)
		b := connectFrom(t, s.addr, "127.0.0.2", "root", false)
		a.pwrite(0, []byte("a"), 0)
		b.pwrite(1, []byte("b"), 0)
		if got := a.pread(0, 2); string(got) != "ab" {
			t.Errorf("got %q", got)
		}
	})
}

func TestImageSharedByExports(t *testing.T) {
	img := makeImage(t, testSize)
	tests := []struct {
		name    string
		exports []Export
		wantErr string
	}{
		{"two read-only", []Export{{Name: "a", Path: img, ReadOnly: true}, {Name: "b", Path: img, ReadOnly: true}}, ""},
		{"read-only and cow", []Export{{Name: "a", Path: img, ReadOnly: true}, {Name: "b", Path: img, Cow: true}}, ""},
		{"writable and read-only", []Export{{Name: "a", Path: img}, {Name: "b", Path: img, ReadOnly: true}}, "also exported"},
		{"writable twice", []Export{{Name: "a", Path: img}, {Name: "b", Path: img}}, "also exported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Config{Exports: tt.exports, StateDir: t.TempDir()})
			if err == nil {
				s.Close()
			}
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("New: %v, want error %q", err, tt.wantErr)
			}
		})
	}
}

func TestImageLockedByAnotherServer(t *testing.T) {
	img := makeImage(t, testSize)
	s1, err := New(Config{Exports: []Export{{Name: "a", Path: img}}})
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close()
	// Another server (here: another open of the image) cannot export it too.
	_, err = openFile(img, true, false)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
}

func TestAllowList(t *testing.T) {
	allow := func(nets ...string) func(*Export) {
		return func(e *Export) {
			for _, n := range nets {
				e.Allow = append(e.Allow, netip.MustParsePrefix(n))
			}
		}
	}
	tests := []struct {
		name string
		opt  func(*Export)
		src  string
		ok   bool
	}{
		{"everyone by default", func(*Export) {}, "127.0.0.3", true},
		{"in the list", allow("127.0.0.2/32"), "127.0.0.2", true},
		{"in a listed network", allow("10.0.0.0/8", "127.0.0.0/24"), "127.0.0.9", true},
		{"not in the list", allow("127.0.0.2/32"), "127.0.0.1", false},
		{"nobody (empty authfile)", func(e *Export) { e.AllowNone = true }, "127.0.0.1", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, oneExport(t, tt.opt))
			_, _, err := goFrom(t, s.addr, tt.src, "root")
			if tt.ok && err != nil {
				t.Fatalf("refused: %v", err)
			}
			if !tt.ok {
				// Answered as a missing export (TestHiddenExport); the log says why.
				wantRefusal(t, err, nbd.RepErrUnknown, `no export named "root"`)
				if !strings.Contains(s.logs.String(), "not allowed") {
					t.Errorf("the log does not say the client was not allowed:\n%s", s.logs)
				}
			}
		})
	}
}

func TestUnixSocketClient(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Allow = []netip.Prefix{netip.MustParsePrefix("10.9.9.9/32")} })
	s := startServer(t, cfg)
	sock := filepath.Join(t.TempDir(), "nbd.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(context.Background(), ln)
	nc, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	c := &testClient{t: t, nc: nc, rw: nc, br: bufio.NewReader(nc), pending: map[uint64]nbd.Request{}}
	c.hello(nbd.ClientFlagFixedNewstyle)
	// Unix-socket clients are local: the TCP allow-list does not apply to them.
	if _, err := c.infoGo(nbd.OptGo, "root"); err != nil {
		t.Fatal(err)
	}
	if got := c.pread(0, 8); !bytes.Equal(got, pattern(0, 8)) {
		t.Error("wrong data over the Unix socket")
	}
	if !strings.Contains(s.logs.String(), "unix") && !strings.Contains(s.logs.String(), "@") {
		t.Logf("log:\n%s", s.logs)
	}
	c.disconnect()
}

func TestReload(t *testing.T) {
	img1, img2 := makeImage(t, testSize), makeImage(t, 2*testSize)
	s := startServer(t, Config{Exports: []Export{{Name: "a", Path: img1}}})
	a := connectFrom(t, s.addr, "127.0.0.1", "a", false)
	a.pwrite(0, []byte("before"), 0)

	// Add an export and change a description: the live connection keeps working and the
	// writer lock survives.
	if err := s.Reload(Config{Exports: []Export{{Name: "a", Path: img1, Description: "new"}, {Name: "b", Path: img2}}}); err != nil {
		t.Fatal(err)
	}
	a.pwrite(6, []byte("after"), 0)
	_, _, err := goFrom(t, s.addr, "127.0.0.2", "a")
	wantRefusal(t, err, nbd.RepErrPolicy, "127.0.0.1")
	b, info, err := goFrom(t, s.addr, "127.0.0.2", "b")
	if err != nil || info.Size != 2*testSize {
		t.Fatalf("new export b: %v %+v", err, info)
	}
	b.pending = map[uint64]nbd.Request{}
	b.pwrite(0, []byte("b"), 0)

	// A bad configuration is refused and changes nothing.
	if err := s.Reload(Config{Exports: []Export{{Name: "a", Path: filepath.Join(t.TempDir(), "missing")}}}); err == nil {
		t.Fatal("reload with a missing image succeeded")
	}
	if _, _, err := goFrom(t, s.addr, "127.0.0.2", "b"); err != nil {
		t.Fatalf("b after a failed reload: %v", err)
	}

	// Removing export a keeps its live connection; new clients cannot find it.
	if err := s.Reload(Config{Exports: []Export{{Name: "b", Path: img2}}}); err != nil {
		t.Fatal(err)
	}
	if got := a.pread(0, 11); string(got) != "beforeafter" {
		t.Errorf("live connection after its export was removed reads %q", got)
	}
	_, _, err = goFrom(t, s.addr, "127.0.0.3", "a")
	wantRefusal(t, err, nbd.RepErrUnknown, "a")
	a.disconnect()
	// The image of the removed export closes with its last connection.
	waitFor(t, "image close", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.images) == 1
	})
}

func TestCowTemporary(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Cow = true; e.CowDir = t.TempDir() })
	path := cfg.Exports[0].Path
	s := startServer(t, cfg)
	a := connectFrom(t, s.addr, "127.0.0.1", "root", true)
	b := connectFrom(t, s.addr, "127.0.0.2", "root", false)
	a.pwrite(5000, []byte("written by a"), 0)
	b.pwrite(5000, []byte("b"), nbd.CmdFlagFUA)
	if got := a.pread(5000, 12); string(got) != "written by a" {
		t.Errorf("a reads %q", got)
	}
	want := pattern(5000, 12)
	want[0] = 'b'
	if got := b.pread(5000, 12); !bytes.Equal(got, want) {
		t.Errorf("b reads %q, want its own write over the image", got)
	}
	if rp := a.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
		t.Fatal(nbd.Errno(rp.Errno))
	}
	if file, _ := os.ReadFile(path); !bytes.Equal(file, pattern(0, testSize)) {
		t.Fatal("a copy-on-write export changed its image")
	}
	// Overlays are files in the cowtmp= directory, one per client (keyed by address: these
	// clients sent no identity), so a server crash loses nothing that was flushed.
	for _, client := range []string{"addr-127.0.0.1", "addr-127.0.0.2"} {
		if ents, _ := os.ReadDir(filepath.Join(cfg.Exports[0].CowDir, "root", client)); len(ents) != 1 {
			t.Errorf("overlays of %s on disk: %v", client, ents)
		}
	}
	a.disconnect()
	waitFor(t, "overlay release", func() bool {
		s.ovs.mu.Lock()
		defer s.ovs.mu.Unlock()
		return len(s.ovs.byID) == 1
	})
	// A client without identity cannot ask to resume; it gets its overlay back as long as
	// it exists (the grace period after its last connection).
	a = connectFrom(t, s.addr, "127.0.0.1", "root", false)
	if got := a.pread(5000, 12); string(got) != "written by a" {
		t.Errorf("after reconnecting a reads %q, want its overlay", got)
	}
}

func TestCowPersistent(t *testing.T) {
	img := makeImage(t, testSize+1000) // a size that is not a multiple of the block size
	dir := filepath.Join(t.TempDir(), "cow")
	cfg := Config{Exports: []Export{{Name: "thin/root", Path: img, Cow: true, CowDir: dir, CowPersistent: true}}}
	s := startServer(t, cfg)
	a := connectFrom(t, s.addr, "127.0.0.1", "thin/root", true)
	a.pwrite(testSize+990, []byte("0123456789"), 0) // the short last block, to the very end
	a.pwrite(4090, []byte("straddles a block"), 0)
	if rp := a.do(nbd.CmdWriteZeroes, 0, 8192, 8192, nil); rp.Errno != 0 {
		t.Fatal(nbd.Errno(rp.Errno))
	}
	a.disconnect()

	check := func(s *testServer) {
		t.Helper()
		c := connectFrom(t, s.addr, "127.0.0.1", "thin/root", true)
		if got := c.pread(testSize+990, 10); string(got) != "0123456789" {
			t.Errorf("end of image reads %q", got)
		}
		if got := c.pread(4090, 17); string(got) != "straddles a block" {
			t.Errorf("reads %q", got)
		}
		if got := c.pread(8192, 8192); !bytes.Equal(got, make([]byte, 8192)) {
			t.Error("zeroed range lost")
		}
		if got := c.pread(0, 4090); !bytes.Equal(got, pattern(0, 4090)) {
			t.Error("image data around the overlay changed")
		}
		rp := c.do(nbd.CmdBlockStatus, 0, 8192, 8192, nil)
		if len(rp.Extents) != 1 || rp.Extents[0].Flags&nbd.StateZero == 0 {
			t.Errorf("block status of the zeroed overlay range: %+v", rp.Extents)
		}
		c.disconnect()
		other := connectFrom(t, s.addr, "127.0.0.2", "thin/root", false)
		if got := other.pread(4090, 17); !bytes.Equal(got, pattern(4090, 17)) {
			t.Error("another client sees the first client's overlay")
		}
		other.disconnect()
	}
	check(s)
	// A new server (a restart) finds the overlay again.
	waitFor(t, "overlay close", func() bool {
		s.ovs.mu.Lock()
		defer s.ovs.mu.Unlock()
		return len(s.ovs.byID) == 0
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.Shutdown(ctx)
	check(startServer(t, cfg))
	if file, _ := os.ReadFile(img); !bytes.Equal(file, pattern(0, testSize+1000)) {
		t.Fatal("a copy-on-write export changed its image")
	}
}

// Several connections of one client write concurrently to a cow export with unaligned
// ranges whose blocks neighbour each other, so copy-ups race with writes on other
// connections (the class of bug behind nbd-server's cow corruption, nbd#43).
func TestCowConcurrent(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Cow = true })
	s := startServer(t, cfg)
	const conns, region, rounds = 4, 5000, 300
	nregions := testSize / region
	model := pattern(0, testSize)
	var mu sync.Mutex
	var wg sync.WaitGroup
	// This connection keeps the (temporary) overlay alive until the final check.
	holder := connectFrom(t, s.addr, "127.0.0.1", "root", true)
	defer holder.disconnect()
	for k := 0; k < conns; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := connectFrom(t, s.addr, "127.0.0.1", "root", k%2 == 0)
			rng := rand.New(rand.NewPCG(uint64(k), 99))
			for i := 0; i < rounds; i++ {
				// Region r belongs to connection r%conns; regions straddle 4 KiB blocks.
				r := k + conns*rng.IntN(nregions/conns)
				off := r*region + rng.IntN(region/2)
				n := 1 + rng.IntN(region-(off-r*region))
				switch rng.IntN(8) {
				case 0:
					if rp := c.do(nbd.CmdWriteZeroes, 0, uint64(off), uint32(n), nil); rp.Errno != 0 {
						t.Errorf("zero: %v", nbd.Errno(rp.Errno))
						return
					}
					mu.Lock()
					clear(model[off : off+n])
					mu.Unlock()
				case 1:
					if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
						t.Errorf("flush: %v", nbd.Errno(rp.Errno))
						return
					}
				default:
					p := make([]byte, n)
					for j := range p {
						p[j] = byte(rng.Uint32())
					}
					c.pwrite(uint64(off), p, 0)
					mu.Lock()
					copy(model[off:], p)
					mu.Unlock()
				}
				// Read back a whole region of our own: nobody else writes there.
				got := c.pread(uint64(r*region), region)
				mu.Lock()
				ok := bytes.Equal(got, model[r*region:(r+1)*region])
				mu.Unlock()
				if !ok {
					t.Errorf("conn %d round %d: region %d differs from the model", k, i, r)
					return
				}
			}
			c.disconnect()
		}()
	}
	wg.Wait()
	if got := holder.pread(0, testSize); !bytes.Equal(got, model) {
		t.Fatal("final overlay contents differ from the model")
	}
}

// Four connections of one client each write their own quarter of every 4 KiB block, in the
// same block order and pipelined, so first writes to each block (which copy the block up
// from the image) race each other on every block. No quarter may be lost.
func TestCowCopyUpRace(t *testing.T) {
	// Each round starts from a fresh overlay; races are probabilistic, so try a few times.
	for round := 0; round < 4; round++ {
		cowCopyUpRace(t)
	}
}

func cowCopyUpRace(t *testing.T) {
	cfg := oneExport(t, func(e *Export) { e.Cow = true })
	s := startServer(t, cfg)
	holder := connectFrom(t, s.addr, "127.0.0.1", "root", false)
	defer holder.disconnect()
	const conns, quarter = 4, cowBlock / 4
	model := pattern(0, testSize)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for k := 0; k < conns; k++ {
		c := connectFrom(t, s.addr, "127.0.0.1", "root", false)
		var wire []byte
		for b := 0; b < testSize/cowBlock; b++ {
			off := b*cowBlock + k*quarter
			p := fill(quarter, byte(1+k+b))
			copy(model[off:], p)
			_, w := c.queue(nbd.CmdWrite, 0, uint64(off), quarter, p)
			wire = append(wire, w...)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			go c.rw.Write(wire)
			for len(c.pending) > 0 {
				rp, err := c.recv()
				if err != nil || rp.Errno != 0 {
					t.Errorf("conn %d: %v %v", k, err, nbd.Errno(rp.Errno))
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	got := holder.pread(0, testSize)
	for b := 0; b < testSize/cowBlock; b++ {
		if !bytes.Equal(got[b*cowBlock:(b+1)*cowBlock], model[b*cowBlock:(b+1)*cowBlock]) {
			t.Fatalf("block %d lost a concurrent write", b)
		}
	}
}
