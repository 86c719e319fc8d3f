package nbdserver

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// prepareStateLocked makes the state directory and the overlay directories of the cow
// exports in cfgs, and records the latter in the state directory for `nbdroot overlays`.
// Writable exports of objects need the state directory too: their overlays are staged
// there, and `nbdroot overlays` reaches their overlays in the store through the control
// socket in it.
func (s *Server) prepareStateLocked(cfgs []Export) error {
	var roots []string
	need := false
	for i := range cfgs {
		if objstore.IsURL(cfgs[i].Path) && !cfgs[i].ReadOnly {
			need = true
		}
		if cfgs[i].Cow {
			need = true
			root := s.overlayRoot(&cfgs[i])
			if objstore.IsURL(root) {
				continue // in the store: nothing to make here
			}
			if err := os.MkdirAll(root, 0o700); err != nil {
				return &ConfigError{fmt.Sprintf("export %q", cfgs[i].Name), fmt.Errorf("overlay directory: %w", err)}
			}
			roots = append(roots, root)
		}
	}
	if !need {
		return nil
	}
	if err := os.MkdirAll(s.stateDir, 0o700); err != nil {
		return &ConfigError{"state directory", fmt.Errorf("%w (copy-on-write exports need one; choose it with --state-dir)", err)}
	}
	if len(roots) == 0 {
		return nil
	}
	if err := ovstore.RecordRoots(s.stateDir, roots); err != nil {
		return &ConfigError{"state directory", err}
	}
	return nil
}

// startHousekeeping starts the server's housekeeping goroutine: it moves the coarse clock
// of the fleet counters on, removes temporary overlays unused for the grace period and
// forgets the counters of clients long gone. stop ends it.
func (s *Server) startHousekeeping() (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(coarseTick)
		defer tick.Stop()
		var lastReap time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				s.fleet.now.Store(now.UnixNano())
				s.mu.Lock()
				grace := s.cfg.OverlayGrace
				s.mu.Unlock()
				if now.Sub(lastReap) >= min(max(grace/4, coarseTick), time.Minute) {
					lastReap = now
					s.reap(now)
					s.fleet.evict(now, statsRetention)
				}
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// reap removes the temporary overlays nobody holds that were unused for the grace period,
// in the state directory and the overlay stores of the current cow exports.
func (s *Server) reap(now time.Time) {
	s.mu.Lock()
	grace := s.cfg.OverlayGrace
	stores := s.overlayStoresLocked()
	s.mu.Unlock()
	for _, st := range stores {
		removed, err := st.Reap(now, s.started, grace)
		for _, m := range removed {
			s.log.Printf("export %q: removed temporary overlay %s of client %s: unused for %v", m.Export, m.ID, m.Client, grace)
		}
		if err != nil {
			s.log.Printf("removing unused overlays in %s: %v", st.Location(), err)
		}
	}
}

// overlayStoresLocked returns the state directory's overlays and the stores of the
// current exports, each once.
func (s *Server) overlayStoresLocked() []ovstore.Store {
	out := []ovstore.Store{ovstore.Local{Root: ovstore.StateRoot(s.stateDir)}}
	seen := map[string]bool{out[0].Location(): true}
	for _, e := range s.exports {
		if e.store != nil && !seen[e.store.Location()] {
			seen[e.store.Location()] = true
			out = append(out, e.store)
		}
	}
	return out
}
