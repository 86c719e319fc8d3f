package kmod

import (
	"context"
	"sort"
	"sync"
)

// prioSem is a counting semaphore that grants free slots to the waiter with the lowest
// priority number first (arrival order among equals). Boot uses it so that modules on the
// boot's critical path — network drivers, then each hook's in boot order — are inserted
// before those needed later, when more modules are ready than may load at once.
type prioSem struct {
	mu      sync.Mutex
	free    int
	seq     uint64
	waiters []*semWaiter // sorted by (prio, seq)
}

type semWaiter struct {
	prio int
	seq  uint64
	ch   chan struct{} // closed when the slot is granted
}

func newPrioSem(n int) *prioSem { return &prioSem{free: n} }

// acquire takes a slot, waiting behind waiters of lower priority number.
func (s *prioSem) acquire(ctx context.Context, prio int) error {
	s.mu.Lock()
	if s.free > 0 && len(s.waiters) == 0 {
		s.free--
		s.mu.Unlock()
		return nil
	}
	s.seq++
	w := &semWaiter{prio: prio, seq: s.seq, ch: make(chan struct{})}
	i := sort.Search(len(s.waiters), func(i int) bool {
		o := s.waiters[i]
		return o.prio > prio || (o.prio == prio && o.seq > w.seq)
	})
	s.waiters = append(s.waiters, nil)
	copy(s.waiters[i+1:], s.waiters[i:])
	s.waiters[i] = w
	s.mu.Unlock()

	select {
	case <-w.ch:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		for j, o := range s.waiters {
			if o == w {
				s.waiters = append(s.waiters[:j], s.waiters[j+1:]...)
				return ctx.Err()
			}
		}
		// Granted while we were giving up: hand the slot on.
		s.releaseLocked()
		return ctx.Err()
	}
}

// release returns a slot, granting it to the first waiter if there is one.
func (s *prioSem) release() {
	s.mu.Lock()
	s.releaseLocked()
	s.mu.Unlock()
}

func (s *prioSem) releaseLocked() {
	if len(s.waiters) > 0 {
		w := s.waiters[0]
		s.waiters = s.waiters[1:]
		close(w.ch)
		return
	}
	s.free++
}
