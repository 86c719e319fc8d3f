package nbdserver

import (
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

func TestHistogram(t *testing.T) {
	var h histogram
	h.observe(10*time.Microsecond, 3)  // first bucket (≤ 50 µs)
	h.observe(50*time.Microsecond, 1)  // bounds are inclusive
	h.observe(700*time.Microsecond, 2) // ≤ 1 ms
	h.observe(time.Minute, 1)          // +Inf
	cum, n, sum := h.snapshot()
	if n != 7 {
		t.Fatalf("count %d, want 7", n)
	}
	if want := 3*10*time.Microsecond + 50*time.Microsecond + 2*700*time.Microsecond + time.Minute; sum != want {
		t.Errorf("sum %v, want %v", sum, want)
	}
	want := map[time.Duration]uint64{50 * time.Microsecond: 4, 500 * time.Microsecond: 4, time.Millisecond: 6, 10 * time.Second: 6}
	for i, b := range latencyBuckets {
		if w, ok := want[b]; ok && cum[i] != w {
			t.Errorf("≤ %v: %d, want %d", b, cum[i], w)
		}
	}
}

func TestFleetReconnects(t *testing.T) {
	f := newFleetStats()
	id := exportClient{"root", ovstore.Client{ID: "pc1"}}
	addr := exportClient{"root", ovstore.Client{ID: "10.0.0.1", ByAddress: true}}
	u := nbd.OverlayID{1}
	tests := []struct {
		name  string
		k     exportClient
		c     client
		first bool
		want  uint64
	}{
		{"first boot", id, client{identified: true}, true, 0},
		{"second connection", id, client{identified: true, resume: u}, false, 0},
		{"reconnect resuming", id, client{identified: true, resume: u}, true, 1},
		{"reboot", id, client{identified: true}, true, 1},
		{"address client, first", addr, client{}, true, 0},
		{"address client back", addr, client{}, true, 1},
	}
	for _, tt := range tests {
		cs := f.open(tt.k, tt.c, tt.first)
		if got := cs.reconnects.Load(); got != tt.want {
			t.Errorf("%s: %d reconnects, want %d", tt.name, got, tt.want)
		}
		cs.close()
	}
	// Clients without connections are forgotten after the retention time, others are kept.
	live := f.open(id, client{identified: true}, true)
	f.evict(time.Now().Add(2*statsRetention), statsRetention)
	if all := f.all(); len(all) != 1 || all[0] != live {
		t.Errorf("after evict: %d clients", len(all))
	}
}

func TestTxMetricsBatches(t *testing.T) {
	cs := newFleetStats().open(exportClient{"root", ovstore.Client{ID: "pc1"}}, client{identified: true}, true)
	m := txMetrics{cs: cs}
	var st txStats
	for i := 0; i < 3; i++ {
		m.begin()
		st.bytesRead += 4096
		m.end(nbd.CmdRead, &st)
	}
	m.begin()
	m.dispatched = true // a worker times this one
	m.end(nbd.CmdFlush, &st)
	if _, n, _ := cs.lat[opRead].snapshot(); n != 0 || cs.readBytes.Load() != 0 {
		t.Fatal("published before the batch ended")
	}
	m.flush(&st) // the first batch is a timed one
	if _, n, _ := cs.lat[opRead].snapshot(); n != 3 {
		t.Errorf("%d reads counted, want 3", n)
	}
	if _, n, _ := cs.lat[opFlush].snapshot(); n != 0 {
		t.Errorf("a dispatched request was counted by the reader")
	}
	if cs.readBytes.Load() != 3*4096 || cs.lastActive.Load() == 0 {
		t.Errorf("read bytes %d, last active %d", cs.readBytes.Load(), cs.lastActive.Load())
	}
	// A reader that never waits ends a batch every txBatchMax requests and publishes it;
	// untimed batches count with the latency of the last timed one.
	for i := 0; i < txSampleEvery*txBatchMax; i++ {
		m.begin()
		st.bytesWritten += 512
		m.end(nbd.CmdWrite, &st)
		if m.batchN != 0 {
			continue
		}
		if want := uint64(i+1) * 512; cs.writtenBytes.Load() != want {
			t.Fatalf("after %d writes %d bytes published, want %d", i+1, cs.writtenBytes.Load(), want)
		}
		if _, n, _ := cs.lat[opWrite].snapshot(); n != uint64(i+1) {
			t.Fatalf("after %d writes %d counted", i+1, n)
		}
	}
	if m.batches != 1+txSampleEvery {
		t.Errorf("%d batches", m.batches)
	}
}

// BenchmarkTxMetrics is what the counters cost a request the reader serves itself, in
// batches of 8 (what a client at queue depth 32 typically delivers per read).
func BenchmarkTxMetrics(b *testing.B) {
	m := txMetrics{cs: newFleetStats().open(exportClient{"root", ovstore.Client{ID: "pc1"}}, client{}, true)}
	var st txStats
	for i := 0; i < b.N; i++ {
		m.begin()
		st.bytesRead += 4096
		m.end(nbd.CmdRead, &st)
		if i%8 == 7 {
			m.flush(&st)
		}
	}
}
