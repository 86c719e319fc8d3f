package nbdserver

import (
	"bytes"
	"runtime"
	"testing"
	"time"
)

func TestBulkMeter(t *testing.T) {
	t0 := time.Now()
	ms := time.Millisecond
	tests := []struct {
		name  string
		reads []struct {
			at time.Duration
			n  int64
		}
		want bool
	}{
		{"a boot's pace", []struct {
			at time.Duration
			n  int64
		}{{0, 128 << 10}, {10 * ms, 128 << 10}, {300 * ms, 1 << 20}, {600 * ms, 1 << 20}}, false},
		{"a copy", []struct {
			at time.Duration
			n  int64
		}{{0, 16 << 20}, {100 * ms, 16 << 20}}, true},
		{"a copy, still streaming in the next window", []struct {
			at time.Duration
			n  int64
		}{{0, 32 << 20}, {300 * ms, 256 << 10}}, true},
		{"a copy that stopped", []struct {
			at time.Duration
			n  int64
		}{{0, 32 << 20}, {2 * time.Second, 256 << 10}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := bulkMeter{limit: bulkBytes}
			var got bool
			for _, r := range tt.reads {
				got = m.add(r.n, t0.Add(r.at))
			}
			if got != tt.want {
				t.Errorf("bulk = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestActivity(t *testing.T) {
	var a activity
	now := time.Now()
	if a.recent(now) {
		t.Error("recent activity before any")
	}
	a.note(now)
	if !a.recent(now.Add(othersRecent/2)) || a.recent(now.Add(2*othersRecent)) {
		t.Error("activity not recent for othersRecent")
	}
}

// TestBulkSender: jobs run on threads of lower priority, and the caller's thread keeps its.
func TestBulkSender(t *testing.T) {
	before, err := threadNice()
	if err != nil {
		t.Skip("thread priorities:", err)
	}
	var b bulkSender
	for i := 0; i < 4; i++ {
		var nice int
		if err := b.run(func() error {
			var err error
			nice, err = threadNice()
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if nice != bulkNice {
			t.Errorf("job %d ran at nice %d, want %d", i, nice, bulkNice)
		}
	}
	runtime.LockOSThread()
	after, _ := threadNice()
	runtime.UnlockOSThread()
	if after != before {
		t.Errorf("a goroutine's thread has nice %d after the jobs, %d before", after, before)
	}
	b.stop()
	var never bulkSender
	never.stop() // a sender never used stops at once
}

// TestBulkTransferYields: a connection streaming large reads while another is served has
// them sent by the bulk sender, and its data is right.
func TestBulkTransferYields(t *testing.T) {
	img := makeImage(t, 48<<20)
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: img, ReadOnly: true}}})
	s.bulkBytes = 4 << 20 // 16 MiB/s: a copy under the race detector, too
	copier := connectFrom(t, s.addr, "127.0.0.1", "root", false)
	boot := connectFrom(t, s.addr, "127.0.0.2", "root", false)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 200; i++ {
			boot.pread(uint64(i)*4096, 4096)
			time.Sleep(time.Millisecond)
		}
	}()
	for pass := 0; pass < 2; pass++ {
		for off := uint64(0); off < 48<<20; off += 1 << 20 {
			if got := copier.pread(off, 1<<20); !bytes.Equal(got, pattern(int(off), 1<<20)) {
				t.Fatalf("copy read at %d: wrong data", off)
			}
		}
	}
	<-done
	s.bulk.once.Do(func() {})
	if s.bulk.jobs == nil {
		t.Error("the copy's reads never went through the bulk sender")
	}
}
