package nbdserver

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// TestCrashSIGKILLResume is issue 13's data-loss scenario: a client with an identity writes
// to a temporary ("cow") and a persistent ("cowdir=") export, flushes now and then, and the
// server is killed with SIGKILL at a random moment while writes and flushes are in flight.
// After a restart on the same state directory the client resumes its overlays by ID (as
// its keeper does) and every write acknowledged before an answered FLUSH must read back,
// in every trial. Finally an overlay deleted while the server was down must be refused with
// NBD_REP_ERR_NBDROOT_OVERLAY_GONE, never replaced by a fresh view.
func TestCrashSIGKILLResume(t *testing.T) {
	const trials, region = 12, 1 << 20
	dir := t.TempDir()
	base := filepath.Join(dir, "base.img")
	if err := os.WriteFile(base, pattern(0, trials*region), 0o600); err != nil {
		t.Fatal(err)
	}
	cowdir := filepath.Join(dir, "keep")
	o := Options{
		Listen:   []string{"127.0.0.1:0"},
		StateDir: filepath.Join(dir, "state"),
		Exports:  []string{"tmp=" + base + ",cow", "keep=" + base + ",cowdir=" + cowdir},
	}
	exports := []string{"tmp", "keep"}
	type write struct {
		export string
		off    int
		data   []byte
	}
	var durable []write
	ids := map[string]nbd.OverlayID{}
	rng := rand.New(rand.NewPCG(13, 13))
	for trial := 0; trial < trials; trial++ {
		p := startProc(t, o)
		conns := map[string]*testClient{}
		for _, ex := range exports {
			c, u := mustGoAs(t, p.addr, "127.0.0.1", ex, "52:54:00:12:34:56", ids[ex])
			if !ids[ex].IsZero() && u != ids[ex] {
				t.Fatalf("trial %d: %s resumed overlay %s, want %s", trial, ex, u, ids[ex])
			}
			ids[ex] = u
			c.nc.SetDeadline(time.Now().Add(60 * time.Second))
			conns[ex] = c
		}
		inflight := map[string]map[uint64]write{"tmp": {}, "keep": {}}
		var acked []write
		pos := trial * region
		killAt := 40 + rng.IntN(160)
		for i := 0; ; i++ {
			if i == killAt {
				p.cmd.Process.Signal(syscall.SIGKILL)
				break
			}
			ex := exports[i%2]
			c := conns[ex]
			n := 512 + rng.IntN(8192)
			if pos+n > (trial+1)*region {
				p.cmd.Process.Signal(syscall.SIGKILL)
				break
			}
			w := write{ex, pos, make([]byte, n)}
			for j := range w.data {
				w.data[j] = byte(rng.Uint32() | 1)
			}
			pos += n
			inflight[ex][c.send(nbd.CmdWrite, 0, uint64(w.off), uint32(n), w.data)] = w
			if i%10 == 4 {
				// A flush in flight when the kill may come; it proves nothing by itself.
				inflight[ex][c.send(nbd.CmdFlush, 0, 0, 0, nil)] = write{}
			}
			if i%10 != 9 {
				continue
			}
			// Collect the replies so far, then flush both exports: what was acknowledged
			// before a FLUSH that is answered is durable.
			for _, ex := range exports {
				c := conns[ex]
				for len(inflight[ex]) > 0 {
					rp, err := c.recv()
					if err != nil {
						t.Fatal(err)
					}
					if rp.Errno != 0 {
						t.Fatalf("write: %v", nbd.Errno(rp.Errno))
					}
					if w := inflight[ex][rp.Handle]; w.data != nil {
						acked = append(acked, w)
					}
					delete(inflight[ex], rp.Handle)
				}
			}
			covered := len(acked)
			for _, ex := range exports {
				if rp := conns[ex].do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
					t.Fatalf("flush: %v", nbd.Errno(rp.Errno))
				}
			}
			durable = append(durable, acked[:covered]...)
			acked = acked[covered:]
		}
		p.wait(t)

		// Restart: resume both overlays and read back everything made durable so far.
		p = startProc(t, o)
		readers := map[string]*testClient{}
		for _, ex := range exports {
			c, u := mustGoAs(t, p.addr, "127.0.0.2", ex, "52:54:00:12:34:56", ids[ex])
			if u != ids[ex] {
				t.Fatalf("trial %d: after the restart %s resumed %s, want %s", trial, ex, u, ids[ex])
			}
			c.nc.SetDeadline(time.Now().Add(60 * time.Second))
			readers[ex] = c
		}
		want := map[*testClient]map[uint64]write{}
		wires := map[*testClient][]byte{}
		for _, w := range durable {
			c := readers[w.export]
			h, b := c.queue(nbd.CmdRead, 0, uint64(w.off), uint32(len(w.data)), nil)
			if want[c] == nil {
				want[c] = map[uint64]write{}
			}
			want[c][h] = w
			wires[c] = append(wires[c], b...)
		}
		for c, wire := range wires {
			go c.rw.Write(wire)
			for len(c.pending) > 0 {
				rp, err := c.recv()
				if err != nil {
					t.Fatal(err)
				}
				if w := want[c][rp.Handle]; rp.Errno != 0 || !bytes.Equal(rp.Data, w.data) {
					t.Fatalf("trial %d: %s write at %d (%d bytes), acknowledged before an answered FLUSH, lost across SIGKILL", trial, w.export, w.off, len(w.data))
				}
			}
		}
		for _, c := range readers {
			c.disconnect()
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t)
	}
	t.Logf("%d trials, %d flushed writes checked after SIGKILL and resume, none lost", trials, len(durable))

	// Fresh boots after a restart: the persistent export gives the same overlay, the
	// temporary one a new, empty one.
	p := startProc(t, o)
	if _, u := mustGoAs(t, p.addr, "127.0.0.1", "keep", "52:54:00:12:34:56", nbd.OverlayID{}); u != ids["keep"] {
		t.Errorf("fresh boot on the persistent export got %s, want %s", u, ids["keep"])
	}
	fresh, u := mustGoAs(t, p.addr, "127.0.0.3", "tmp", "pc-other", nbd.OverlayID{})
	if u == ids["tmp"] {
		t.Error("a fresh boot on the temporary export got an existing overlay")
	}
	if got := fresh.pread(0, 4096); !bytes.Equal(got, pattern(0, 4096)) {
		t.Error("fresh temporary overlay does not read as the image")
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.wait(t)

	// State lost while the server was down: the overlay's directory is gone.
	tmpDir := ovstore.Local{Root: ovstore.StateRoot(o.StateDir)}.Dir("tmp", ovstore.Client{ID: "52:54:00:12:34:56"}, ids["tmp"])
	if err := os.RemoveAll(tmpDir); err != nil {
		t.Fatal(err)
	}
	p = startProc(t, o)
	_, _, err := goAs(t, p.addr, "127.0.0.1", "tmp", "52:54:00:12:34:56", ids["tmp"])
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, "overlay "+ids["tmp"].String()+" of client 52:54:00:12:34:56 on export \"tmp\" no longer exists")
	// The persistent one is untouched.
	if _, u := mustGoAs(t, p.addr, "127.0.0.1", "keep", "52:54:00:12:34:56", ids["keep"]); u != ids["keep"] {
		t.Errorf("persistent overlay after the other was lost: %s", u)
	}
}
