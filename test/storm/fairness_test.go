package storm

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// pacedTrace is a small boot: bursts of a few reads spread over an image of size bytes,
// with think time between them.
func pacedTrace(bursts int, think time.Duration, size uint64) *Trace {
	tr := &Trace{Name: "paced"}
	var at time.Duration
	for i := 0; i < bursts; i++ {
		for j := 0; j < 3; j++ {
			off := (uint64(i)*7919 + uint64(j)*104729) * 4096 % (size - 64<<10)
			tr.Ops = append(tr.Ops, Op{At: at + time.Duration(j)*10*time.Microsecond, Type: "Read", Offset: off, Length: 4096 << (j * 2)})
		}
		at += think
	}
	tr.Ops = append(tr.Ops, Op{At: at, Type: "Read", Offset: size - 4096, Length: 4096})
	return tr
}

// TestFairness boots a few paced clients alone and while one more client reads the image
// sequentially as fast as it can: the boots' p99 read latency must stay within a bound of
// its unloaded value. The criterion (2×, with the recorded boot and 50 clients) is
// measured by `make bench`, over several rounds and against nbdkit and nbd-server on the
// same machine. This short version runs once, on CI machines shared with other work, where
// a single run's p99 swings several-fold; it allows 5× plus 20 ms, which catches a server
// that lets one connection monopolise it (boots then wait for seconds), not small changes.
func TestFairness(t *testing.T) {
	if testing.Short() {
		t.Skip("timing test")
	}
	const size = 256 << 20
	tr := pacedTrace(150, 2*time.Millisecond, size)
	img := filepath.Join(t.TempDir(), "img")
	if err := WriteImage(img, &Trace{Ops: []Op{{Type: "Read", Offset: 0, Length: 32 << 20}, {Type: "Read", Offset: size - 32<<20, Length: 32 << 20}}}); err != nil {
		t.Fatal(err)
	}
	addr := startProcServer(t, img)
	run := func(bulk bool) (time.Duration, int64) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var copied int64
		done := make(chan error, 1)
		res, err := Run(ctx, Config{Addr: addr, Export: "root", Clients: 8, Trace: tr, Scale: 1, Stagger: 50 * time.Millisecond,
			Ready: func() {
				if !bulk {
					close(done)
					return
				}
				go func() {
					n, err := Bulk{Dial: TCP(addr), Client: 100, Export: "root", Size: size, Request: 256 << 10, Depth: 8}.Run(ctx)
					copied = n
					done <- err
				}()
			}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("bulk reader: %v", err)
		}
		if res.Failed > 0 {
			t.Fatalf("%d clients failed: %v", res.Failed, res.Errors)
		}
		return res.P(99), copied
	}
	alone, _ := run(false)
	loaded, copied := run(true)
	t.Logf("p99 alone %v, with a copy %v (%.1f×; the copy read %d MiB)", alone, loaded, float64(loaded)/float64(alone), copied>>20)
	if copied < 64<<20 {
		t.Errorf("the copy read only %d MiB: it was not a load", copied>>20)
	}
	if limit := 5*alone + 20*time.Millisecond; loaded > limit {
		t.Errorf("p99 with a copy running %v, want at most %v (5 × %v + 20ms)", loaded, limit, alone)
	}
}

// TestThousandClients: a storm of 1,000 clients, each with a connection of its own and an
// address of its own, replaying the start of the recorded boot: every one is served.
// (`make bench` runs the whole boot, against nbdkit and nbd-server too.)
func TestThousandClients(t *testing.T) {
	if testing.Short() {
		t.Skip("a thousand connections")
	}
	tr, img := loadBoot(t)
	short := &Trace{Name: tr.Name}
	for _, op := range tr.Reads()[:60] {
		short.Ops = append(short.Ops, op)
	}
	addr := startProcServer(t, img)
	res, err := Run(context.Background(), Config{Addr: addr, Export: "root", Clients: 1000, Trace: short, Stagger: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed > 0 {
		t.Fatalf("%d of 1000 clients failed, first: %v", res.Failed, res.Errors[0])
	}
	if len(res.Boots) != 1000 || res.Reads != 1000*len(short.Ops) {
		t.Fatalf("%d boots, %d reads; want 1000 and %d", len(res.Boots), res.Reads, 1000*len(short.Ops))
	}
	t.Logf("1000 clients: wall %v, read p50 %v p99 %v", res.Wall, res.P(50), res.P(99))
}
