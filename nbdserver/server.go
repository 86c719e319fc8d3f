package nbdserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Server serves exports over NBD. It is safe for concurrent use: Serve may run on several
// listeners at once, and Reload and Shutdown may be called from any goroutine.
type Server struct {
	log *log.Logger

	mu        sync.Mutex
	cfg       Config // global settings of the current configuration
	exports   map[string]*export
	def       *export // the default export, or nil
	images    map[fileKey]*image
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	closed    bool
	slots     map[string]int         // connections per client address and identity (slots.go)
	evicting  int                    // connections closed to make room, not gone yet
	refused   map[string]*refusedLog // refusal log lines held back, per kind

	draining atomic.Bool
	drainAt  time.Time  // guarded by mu; when draining connections stop waiting for requests
	replyMem replyMem   // reply memory of all connections (replymem.go)
	active   activity   // when a connection that is not a bulk transfer was last served (fairness.go)
	bulk     bulkSender // sends of bulk transfers, at a lower CPU priority
	// bulkBytes is what a connection reads within bulkWindow to count as a bulk transfer
	// (fairness.go); set by New, lowered by tests.
	bulkBytes int64
	connWG    sync.WaitGroup
	nextID    atomic.Uint64

	// Clients: their sessions and, per export, where each client is attached from
	// (guarded by mu); overlays open for them (with a lock of their own); their counters.
	sessions map[*session]struct{}
	attached map[exportClient]*attachment
	ovs      overlaySet
	fleet    *fleetStats

	stateDir         string // Config.StateDir as New saw it
	storeCfg         StoreConfig
	objOnce          sync.Once
	obj              atomic.Pointer[objState] // the object store, once an object export needs it
	started          time.Time                // temporary overlays found on disk get their grace period from here
	stopHousekeeping func()
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("nbdserver: server closed")

// New checks cfg, opens every export and returns a server ready to Serve.
func New(cfg Config) (*Server, error) {
	s := &Server{
		images:    map[fileKey]*image{},
		conns:     map[*conn]struct{}{},
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*session]struct{}{},
		attached:  map[exportClient]*attachment{},
		fleet:     newFleetStats(),
		stateDir:  cfg.StateDir,
		storeCfg:  cfg.Store,
		started:   time.Now(),
		slots:     map[string]int{},
		refused:   map[string]*refusedLog{},
		bulkBytes: bulkBytes,
	}
	if s.stateDir == "" {
		s.stateDir = DefaultStateDir
	}
	s.ovs.init()
	s.log = cfg.Logger
	if s.log == nil {
		s.log = log.New(io.Discard, "", 0)
	}
	if err := s.Reload(cfg); err != nil {
		return nil, err
	}
	s.stopHousekeeping = s.startHousekeeping()
	return s, nil
}

func withDefaults(cfg Config) Config {
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.MaxClientConnections == 0 {
		cfg.MaxClientConnections = DefaultMaxClientConnections
	}
	if cfg.UnusedTimeout == 0 {
		cfg.UnusedTimeout = DefaultUnusedTimeout
	}
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.OverlayGrace == 0 {
		cfg.OverlayGrace = DefaultOverlayGrace
	}
	if cfg.ReplyMemory == 0 {
		cfg.ReplyMemory = DefaultReplyMemory
	}
	return cfg
}

// Reload replaces the exports and settings with those of cfg without touching live
// connections: they keep the export they negotiated until they disconnect. An export whose
// image did not change keeps its open file and its writer lock, so a reload never lets a
// second writer in. On error nothing changes.
func (s *Server) Reload(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg = withDefaults(cfg)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrServerClosed
	}
	if err := s.prepareStateLocked(cfg.Exports); err != nil {
		return err
	}
	exports, def, err := s.buildExportsLocked(cfg.Exports)
	if err != nil {
		return err
	}
	old := s.exports
	s.exports, s.def = exports, def
	logger := s.log
	cfg.Logger = logger
	s.cfg = cfg
	s.replyMem.limit.Store(cfg.ReplyMemory)
	for _, e := range old {
		s.retireExportLocked(e)
	}
	for _, e := range exports {
		logger.Printf("export %q: %s", e.cfg.Name, e.describe())
		if e.cfg.Shared && !e.cfg.ReadOnly && !e.cfg.Cow {
			logger.Printf("export %q: WARNING: shared: several clients may write at once; an ordinary filesystem on it WILL be corrupted unless it is a cluster filesystem", e.cfg.Name)
		}
	}
	return nil
}

// config returns the current global settings.
func (s *Server) config() Config {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cfg
}

// Serve accepts connections on ln until ctx is cancelled, Shutdown or Close is called, or
// accepting fails; it closes ln before returning. Connections outlive Serve: Shutdown ends
// them gracefully, Close at once.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	s.mu.Lock()
	if s.closed || s.draining.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var tempDelay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.draining.Load() || s.isClosed() {
				return ErrServerClosed
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || isTemporary(err) {
				// EMFILE and friends: back off instead of spinning (as net/http does).
				tempDelay = min(max(2*tempDelay, 5*time.Millisecond), time.Second)
				s.log.Printf("accept on %s: %v; retrying in %v", ln.Addr(), err, tempDelay)
				time.Sleep(tempDelay)
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		tempDelay = 0
		s.startConn(nc)
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) startConn(nc net.Conn) {
	if c := s.register(nc); c != nil {
		go s.run(c)
	}
}

// ServeConn serves one already-accepted connection and returns when it ends. It is what
// Serve runs for each connection; tests and inetd-style callers may use it directly.
func (s *Server) ServeConn(nc net.Conn) {
	if c := s.register(nc); c != nil {
		s.run(c)
	}
}

// register admits a connection within the limits, or closes it with a log line.
func (s *Server) register(nc net.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.draining.Load() {
		nc.Close()
		return nil
	}
	c := newConn(s, nc, s.cfg)
	key := slotKeyOf(c)
	if err := s.takeSlotLocked(c, key); err != nil {
		s.logRefusalLocked(key, nc, err.Error())
		nc.Close()
		return nil
	}
	if n := len(s.conns) - s.evicting; n >= s.cfg.MaxConnections && !s.evictUnusedLocked(c.accepted) {
		s.releaseSlotsLocked(c)
		s.logRefusalLocked("server full", nc, fmt.Sprintf("%d connections already (limit %d, --max-connections), all of them in use", n, s.cfg.MaxConnections))
		nc.Close()
		return nil
	}
	s.conns[c] = struct{}{}
	s.connWG.Add(1)
	return c
}

func (s *Server) run(c *conn) {
	defer s.connWG.Done()
	c.serve()
	s.mu.Lock()
	delete(s.conns, c)
	s.releaseSlotsLocked(c)
	if c.evicted {
		s.evicting--
	}
	s.mu.Unlock()
}

// Shutdown stops accepting, answers requests already received, answers later ones with
// ESHUTDOWN (proto.md "Terminating the transmission phase"), waits up to the drain timeout
// for clients to disconnect, flushes every image and closes. If ctx ends first, remaining
// connections are cut; the images are still flushed. It returns ctx's error in that case.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.draining.Store(true)
	now := time.Now()
	s.drainAt = now.Add(max(s.cfg.DrainTimeout, 0))
	// Replies get until the end of the drain; without a drain, the default drain time to
	// answer what is in flight.
	cut := s.drainAt
	if s.cfg.DrainTimeout <= 0 {
		cut = now.Add(DefaultDrainTimeout)
	}
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.beginDrain(s.drainAt, cut)
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() { s.connWG.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
	}
	if ferr := s.closeImages(); err == nil {
		err = ferr
	}
	return err
}

// Close cuts every connection at once and closes the images after flushing them.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.draining.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.connWG.Wait()
	return s.closeImages()
}

// closeImages flushes and closes every image once no connection uses them.
func (s *Server) closeImages() error {
	if s.stopHousekeeping != nil {
		s.stopHousekeeping()
	}
	s.bulk.stop() // every connection has ended
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, e := range s.exports {
		s.retireExportLocked(e)
	}
	s.exports, s.def = nil, nil
	for _, img := range s.images {
		// Images still referenced (a connection cut mid-request) are closed here anyway.
		if err := img.close(); err != nil {
			errs = append(errs, err)
		}
		delete(s.images, img.key)
	}
	return errors.Join(errs...)
}

// Flush makes every image durable (fdatasync), as a FLUSH from a client would; in-process
// users call it before looking at an image behind the server's back.
func (s *Server) Flush() error {
	s.mu.Lock()
	imgs := make([]*image, 0, len(s.images))
	for _, img := range s.images {
		imgs = append(imgs, img)
	}
	s.mu.Unlock()
	var errs []error
	for _, img := range imgs {
		if err := img.flush(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
