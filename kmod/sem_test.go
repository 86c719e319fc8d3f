package kmod

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// waitWaiters waits until s has n waiters; the deadline only turns a hang into a failure.
func waitWaiters(t *testing.T, s *prioSem, n int) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		got := len(s.waiters)
		s.mu.Unlock()
		if got == n {
			return
		}
		select {
		case <-deadline:
			t.Fatalf("%d waiters, want %d", got, n)
		case <-time.After(time.Millisecond):
		}
	}
}

func TestPrioSemOrder(t *testing.T) {
	s := newPrioSem(1)
	ctx := context.Background()
	if err := s.acquire(ctx, 9); err != nil {
		t.Fatal(err)
	}
	granted := make(chan int, 4)
	for i, p := range []int{3, 1, 2, 1} {
		go func() {
			if err := s.acquire(ctx, p); err != nil {
				t.Error(err)
				return
			}
			granted <- p*10 + i // priority, then arrival (index) to check FIFO among equals
			s.release()
		}()
		waitWaiters(t, s, i+1) // enqueue one at a time so arrival order is known
	}
	s.release()
	var got []int
	for range 4 {
		got = append(got, <-granted)
	}
	if want := []int{11, 13, 22, 30}; !slices.Equal(got, want) {
		t.Errorf("grant order %v, want %v (priority, then arrival)", got, want)
	}
}

func TestPrioSemCancel(t *testing.T) {
	s := newPrioSem(1)
	if err := s.acquire(context.Background(), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.acquire(ctx, 0) }()
	waitWaiters(t, s, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	waitWaiters(t, s, 0)
	s.release()
	// The slot is free again: a new acquire does not block.
	if err := s.acquire(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
}

func TestBootLoadsCriticalPathFirst(t *testing.T) {
	ix := validIndex(t)
	fl := newFakeLoader(ix)
	fl.gate = make(chan struct{})
	b := NewBoot(ix, "/m", fl, BootOptions{Parallel: 1})
	done := make(chan error, 1)
	// ext4's closure has three modules ready at once (crc32c_generic, crc32c_intel,
	// mbcache); e1000, a NIC driver, is ready too and must get the next slot.
	go func() { done <- b.Load(context.Background(), "ext4", "e1000") }()
	fl.waitInFlight(t, 1)
	waitWaiters(t, b.sem, 3)
	close(fl.gate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	i := slices.Index(fl.started, "e1000")
	if i > 1 {
		t.Errorf("load order %v: e1000 (network, priority 0) started after %d others", fl.started, i)
	}
	if got := b.prio["e1000"]; got != 0 {
		t.Errorf("priority of e1000 = %d, want 0", got)
	}
	if b.prio["virtio_ring"] != 0 || b.prio["nbd"] != 2 || b.prio["ext4"] != 4 {
		t.Errorf("priorities %v: want NIC closure 0, nbd hook 2, filesystems 4", b.prio)
	}
}
