package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Level is a syslog severity, as /dev/kmsg takes it ("<3>message").
type Level int

// The severities the keeper logs with.
const (
	LevelErr     Level = 3
	LevelWarning Level = 4
	LevelInfo    Level = 6
)

// KeeperTarget is what a keeper keeps connected. It is plain data, so the init can hand it
// to the keeper process as JSON: resolved addresses only, because the keeper runs after
// switch_root with no files of the initramfs left (no resolv.conf, no hosts file).
type KeeperTarget struct {
	// Index is the N of /dev/nbdN.
	Index int `json:"index"`
	// Servers are host:port addresses in failover order; Servers[0] is the one attached.
	Servers []string `json:"servers"`
	Export  string   `json:"export"`
	// Size and Flags are the export's size and transmission flags at attach time: a
	// reconnect must find the same size, and a writable device must stay writable.
	Size  uint64 `json:"size"`
	Flags uint16 `json:"flags"`
	// BlockSize is the device's logical block size: a reconnect's server must accept it.
	// 0 checks only the server's own limits.
	BlockSize uint32 `json:"block_size,omitempty"`
	// Connections is the number of sockets the device was attached with.
	Connections int `json:"connections"`
	// DeadConnTimeout is how long the kernel holds I/O on a dead device (for the logs).
	DeadConnTimeout time.Duration `json:"dead_conn_timeout"`
	// BackendID is the identifier the device was connected with; NBD_CMD_RECONFIGURE must
	// repeat it.
	BackendID string `json:"backend_id,omitempty"`
	// Identity is the client identity the device was attached with ("" for none), sent
	// again on every reconnect. Overlay is the copy-on-write overlay the server served the
	// attach (zero: none): every reconnect resumes it, and a server that does not serve it
	// is refused (CONTRACTS.md).
	Identity string        `json:"identity,omitempty"`
	Overlay  nbd.OverlayID `json:"overlay,omitzero"`
	// TLS is how the connections are secured, nil for plain TCP: every reconnect
	// negotiates TLS again with these settings.
	TLS *TLSSettings `json:"tls,omitempty"`
}

// LinkSource tells the keeper about dead links: *LinkEvents (the kernel's netlink
// multicast) or *LegacySession (NBD_DO_IT returning). Next returns device indexes,
// ErrEventsLost when notices may have been dropped, ErrNotConfigured when the device was
// disconnected on request, and another error once closed.
type LinkSource interface {
	Next() ([]int, error)
	Close() error
}

// DeviceKernel is the kernel side the keeper needs: *Kernel or *LegacySession.
type DeviceKernel interface {
	Reconfigure(dev Device, socks []*os.File) error
	Status(index int) ([]DeviceStatus, error)
	// Disconnect fails the device for good: pending and future I/O end with EIO.
	Disconnect(index int) error
}

var (
	_ LinkSource   = (*LinkEvents)(nil)
	_ LinkSource   = (*LegacySession)(nil)
	_ DeviceKernel = (*Kernel)(nil)
	_ DeviceKernel = (*LegacySession)(nil)
)

// Keeper defaults.
const (
	// DefaultMinBackoff and DefaultMaxBackoff bound the wait between rounds over the servers,
	// of an attach (within its budget) and of the keeper's reconnect alike: the
	// first retry comes quickly (a restarting server is back within seconds), later ones
	// at most every 4 s, with ±20% jitter so that a room of clients does not hammer a
	// server that just came back in lockstep.
	DefaultMinBackoff = 250 * time.Millisecond
	DefaultMaxBackoff = 4 * time.Second
	// DefaultStatusInterval is how often the keeper asks the kernel whether its device
	// still exists, to exit after someone else disconnected it.
	DefaultStatusInterval = 30 * time.Second
	// DefaultDialTimeout bounds one connection attempt, handshake included.
	DefaultDialTimeout = 10 * time.Second
	// DefaultProbeTimeout is how long the start-up read may take before the keeper
	// assumes a dead connection: a live NBD server answers one block in milliseconds.
	DefaultProbeTimeout = 3 * time.Second
)

// Keeper keeps one NBD device connected: when the kernel reports a dead link it negotiates
// new connections (to the same server first, then to the next of Target.Servers) and hands
// them to the kernel before DEAD_CONN_TIMEOUT expires, retrying with backoff for as long as
// it takes. It never disconnects the device, but to fail it (below).
//
// A device attached with a client identity is reconnected to its copy-on-write overlay
// only (Target.Overlay, resumed by ID): a server that answers NBD_REP_ERR_NBDROOT_OVERLAY_GONE
// or serves another overlay is refused, at KERN_ERR, since the file system would see another
// view of its disk. Once every server of the target refused, the keeper fails the device
// (NBD_CMD_DISCONNECT: the kernel fails waiting and future I/O with EIO at once, instead of
// after the dead-connection timeout) and stops repairing it: overlay IDs are random and never
// reused, so a vanished overlay does not come back, and the file system has by then seen
// I/O errors that only a reboot recovers from. Servers that could not be reached may still
// have the overlay: while one remains, the keeper goes on trying.
//
// The kernel sends NBD_CMD_LINK_DEAD once per socket it marks dead, and none when a device
// is disconnected on request. The keeper answers every notice (and a lost-notice report)
// with as many sockets as the device has connections: the kernel puts them in the place of
// dead ones and drops the rest, so it needs no knowledge of which sockets died.
type Keeper struct {
	Target KeeperTarget
	Dial   DialFunc
	Kernel DeviceKernel
	Links  LinkSource
	// Logf receives every message; the keeper process writes them to /dev/kmsg.
	Logf func(level Level, format string, args ...any)
	// Zero values mean the defaults above.
	MinBackoff, MaxBackoff time.Duration
	StatusInterval         time.Duration
	DialTimeout            time.Duration
	// Interface is reported in the state: "netlink" or "ioctl".
	Interface string
	// Probe, when set, reads from the device once at the start; if the read has not
	// completed after ProbeTimeout (default DefaultProbeTimeout) the keeper reconnects: a
	// connection that died before the keeper ran sent its LINK_DEAD to nobody. The read may
	// outlive Run while the kernel holds it for a reconnect.
	Probe        func() error
	ProbeTimeout time.Duration
	// Relays runs the relays of connections whose TLS the kernel cannot take; a reconnect
	// that negotiates such connections starts new ones there. RelayEnded, when set,
	// receives a value when a relay ends: the keeper then asks the kernel at once whether
	// the device is still connected (a disconnect ends every relay).
	Relays     *Relays
	RelayEnded <-chan struct{}

	mu    sync.Mutex
	state KeeperState
	cur   int // index into Target.Servers of the server in use
	// failed is set once the keeper failed the device (no server serves its overlay):
	// it repairs nothing after that (owned by Run's goroutine).
	failed bool
	// covered: dead-link notices received before this instant were answered by the last
	// successful reconnect (owned by Run's goroutine).
	covered time.Time
}

// noticeBox holds at most one pending repair: the reason and time of the latest notice.
type noticeBox struct {
	mu  sync.Mutex
	why string
	at  time.Time
	ch  chan struct{}
}

func (b *noticeBox) signal() <-chan struct{} { return b.channel() }

func (b *noticeBox) channel() chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{}, 1)
	}
	return b.ch
}

func (b *noticeBox) post(why string) {
	ch := b.channel()
	b.mu.Lock()
	b.why, b.at = why, time.Now()
	b.mu.Unlock()
	select {
	case ch <- struct{}{}:
	default:
	}
}

func (b *noticeBox) take() (string, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.why, b.at
}

// KeeperState is what a keeper reports about itself (nbdroot status).
type KeeperState struct {
	Device string `json:"device"`
	Server string `json:"server"`
	Export string `json:"export"`
	State  string `json:"state"` // "watching", "reconnecting", or "failed" (see Keeper)
	// Interface is "netlink", or "ioctl" when the keeper holds the device itself (then
	// stopping the keeper would disconnect it).
	Interface  string    `json:"interface,omitempty"`
	Since      time.Time `json:"since"`
	Reconnects int       `json:"reconnects"`
	LastError  string    `json:"last_error,omitempty"`
	Pid        int       `json:"pid,omitempty"`
	// TLS says how the connections are secured; Relays counts the TLS relays the keeper
	// runs for them (then it is on the data path, and stopping it would stop the device).
	TLS    string `json:"tls,omitempty"`
	Relays int    `json:"relays,omitempty"`
}

// State returns a snapshot of the keeper's state.
func (k *Keeper) State() KeeperState {
	k.mu.Lock()
	st := k.state
	k.mu.Unlock()
	if k.Relays != nil {
		st.Relays = k.Relays.Running()
	}
	return st
}

func (k *Keeper) setState(f func(s *KeeperState)) {
	k.mu.Lock()
	f(&k.state)
	k.mu.Unlock()
}

func (k *Keeper) logf(level Level, format string, args ...any) {
	if k.Logf != nil {
		k.Logf(level, format, args...)
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

func (k *Keeper) dev() string { return fmt.Sprintf("nbd%d", k.Target.Index) }

// Run keeps the device connected until ctx ends, the device is disconnected (nil), or the
// link notices fail (the error). It closes Links when it returns.
func (k *Keeper) Run(ctx context.Context) error {
	if len(k.Target.Servers) == 0 {
		return errors.New("keeper: no server to reconnect to")
	}
	k.setState(func(s *KeeperState) {
		*s = KeeperState{Device: "/dev/" + k.dev(), Server: k.Target.Servers[0], Export: k.Target.Export,
			State: "watching", Since: time.Now(), Interface: k.Interface}
		switch {
		case k.Relays != nil && k.Relays.Running() > 0:
			s.TLS = "TLS 1.3, relayed by the keeper"
		case k.Target.TLS != nil:
			s.TLS = "TLS 1.3"
		}
	})
	// Notices are folded into one pending repair, which remembers the latest notice: a
	// notice older than the start of the last successful reconnect is covered by it (the
	// kernel sends one LINK_DEAD per dead socket, and every repair hands over as many
	// sockets as the device has).
	var pending noticeBox
	readerErr := make(chan error, 1)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for {
			idx, err := k.Links.Next()
			switch {
			case errors.Is(err, ErrEventsLost):
				k.logf(LevelWarning, "%s: link notices were lost; reconnecting in case one was for this device", k.dev())
				pending.post("link notices were lost")
				continue
			case err != nil:
				readerErr <- err
				return
			}
			for _, i := range idx {
				if i == k.Target.Index {
					pending.post("the kernel reported a dead connection")
				}
			}
		}
	}()
	defer func() {
		k.Links.Close()
		<-readerDone
	}()
	if k.Probe != nil {
		probed := make(chan error, 1)
		go func() { probed <- k.Probe() }()
		go func() {
			limit := time.NewTimer(orDefault(k.ProbeTimeout, DefaultProbeTimeout))
			defer limit.Stop()
			select {
			case err := <-probed:
				if err != nil {
					k.logf(LevelWarning, "%s: the start-up read failed: %v", k.dev(), err)
				}
			case <-limit.C:
				k.logf(LevelWarning, "%s: a read did not complete within %s of the keeper's start: a connection may have died before the keeper ran", k.dev(), orDefault(k.ProbeTimeout, DefaultProbeTimeout))
				pending.post("the device did not answer")
			case <-ctx.Done():
			}
		}()
	}
	status := time.NewTicker(orDefault(k.StatusInterval, DefaultStatusInterval))
	defer status.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-pending.signal():
			why, at := pending.take()
			if at.Before(k.covered) || k.failed {
				continue
			}
			err := k.repair(ctx, why)
			var oe *OverlayError
			switch {
			case errors.As(err, &oe):
				k.fail(oe)
			case errors.Is(err, ErrNotConfigured):
				k.logf(LevelInfo, "%s was disconnected; the keeper exits", k.dev())
				return nil
			case err != nil:
				return err
			}
		case err := <-readerErr:
			if errors.Is(err, ErrNotConfigured) {
				k.logf(LevelInfo, "%s was disconnected; the keeper exits", k.dev())
				return nil
			}
			k.logf(LevelErr, "%s: cannot receive link notices any more: %v; the keeper exits", k.dev(), err)
			return err
		case <-status.C:
			if k.disconnected() {
				return nil
			}
		case <-k.RelayEnded:
			if k.disconnected() {
				return nil
			}
		}
	}
}

// disconnected asks the kernel whether the device is still connected, and says so when
// it is not (the keeper then exits).
func (k *Keeper) disconnected() bool {
	st, err := k.Kernel.Status(k.Target.Index)
	if err == nil && !connected(st, k.Target.Index) {
		k.logf(LevelInfo, "%s is no longer connected (disconnected by another program); the keeper exits", k.dev())
		return true
	}
	return false
}

func connected(st []DeviceStatus, index int) bool {
	for _, s := range st {
		if s.Index == index {
			return s.Connected
		}
	}
	return false
}

// repair reconnects until it succeeds, the device turns out disconnected, or ctx ends: the
// servers in failover order from the one in use, through the loop and the negotiation every
// attach shares (failover, negotiate), handing the sockets over with NBD_CMD_RECONFIGURE.
func (k *Keeper) repair(ctx context.Context, why string) error {
	start := time.Now()
	t := k.Target
	k.mu.Lock()
	cur := k.cur
	k.mu.Unlock()
	k.setState(func(s *KeeperState) { s.State, s.Since = "reconnecting", start })
	wait := "I/O fails at once"
	if t.DeadConnTimeout > 0 {
		wait = fmt.Sprintf("I/O waits up to %s", t.DeadConnTimeout)
	}
	k.logf(LevelWarning, "%s: %s; reconnecting to %s (%s)", k.dev(), why, BackendID(t.Servers[cur], t.Export), wait)
	// The kernel fails requests once they waited DEAD_CONN_TIMEOUT: say so when it happens,
	// in the kernel log next to the kernel's own I/O errors. Without a timeout, I/O fails
	// at once: say so when the first attempt failed.
	var expired atomic.Bool
	expire := func() {
		if expired.Swap(true) {
			return
		}
		if t.DeadConnTimeout <= 0 {
			k.logf(LevelErr, "%s: the device has no dead-connection timeout: I/O on /dev/%s fails with EIO until the keeper reconnects", k.dev(), k.dev())
			return
		}
		k.logf(LevelErr, "%s: no server for %s, the dead-connection timeout (%s, nbdroot.deadconn=): the kernel now fails I/O on /dev/%s with EIO; still trying to reconnect",
			k.dev(), time.Since(start).Round(time.Second), t.DeadConnTimeout, k.dev())
	}
	if t.DeadConnTimeout > 0 {
		expiry := time.AfterFunc(t.DeadConnTimeout, expire)
		defer expiry.Stop()
	}
	lastMsg, repeats := "", 0
	var began time.Time
	var socks int
	// refused holds the servers that answered without the device's overlay: once all have,
	// no server is left that could have it.
	refused := map[string]bool{}
	distinct := map[string]bool{}
	for _, s := range t.Servers {
		distinct[s] = true
	}
	s, attempt, err := failover(ctx, retry{minBackoff: k.MinBackoff, maxBackoff: k.MaxBackoff,
		final: func(err error) bool {
			return errors.Is(err, ErrNotConfigured) || len(refused) == len(distinct)
		},
		failed: func(attempt int, addr string, err error) {
			if errors.Is(err, ErrNotConfigured) {
				return
			}
			msg := err.Error()
			k.setState(func(st *KeeperState) { st.LastError = msg })
			var oe *OverlayError
			if errors.As(err, &oe) {
				if !refused[addr] {
					k.logf(LevelErr, "%s: refusing to attach another view of the disk: %v", k.dev(), oe)
				}
				refused[addr] = true
				return
			}
			// The first failure of a kind is logged, then one in ten: a long outage must not
			// flood the kernel log.
			if msg != lastMsg || repeats%10 == 9 {
				k.logf(LevelWarning, "%s: reconnect attempt %d: %v", k.dev(), attempt, err)
				lastMsg, repeats = msg, 0
			} else {
				repeats++
			}
			if t.DeadConnTimeout <= 0 {
				expire()
			}
		},
	}, t.Servers, cur, func(addr string) error {
		began = time.Now()
		var err error
		socks, err = k.reconnect(ctx, addr)
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return err
	}
	k.covered = began
	k.mu.Lock()
	k.cur = s
	k.mu.Unlock()
	k.setState(func(st *KeeperState) {
		st.State, st.Since, st.Server, st.LastError = "watching", time.Now(), t.Servers[s], ""
		st.Reconnects++
	})
	k.logf(LevelInfo, "%s: reconnected to %s after %s (%d attempt(s), %d socket(s) handed to the kernel)",
		k.dev(), BackendID(t.Servers[s], t.Export), time.Since(start).Round(time.Millisecond), attempt, socks)
	if expired.Load() && t.DeadConnTimeout > 0 {
		k.logf(LevelWarning, "%s: requests made while the dead-connection timeout had expired failed with EIO; check the filesystem", k.dev())
	}
	return nil
}

// fail gives the device up after every server refused its overlay: the kernel fails its
// I/O at once (NBD_CMD_DISCONNECT wakes the requests waiting for a reconnect and fails
// those in flight; new ones fail too), rather than after the dead-connection timeout, and
// never with another view of the disk. The keeper then stays, reporting the state, until
// the device is gone.
func (k *Keeper) fail(oe *OverlayError) {
	t := k.Target
	k.failed = true
	// The state first: whoever reads the log line finds the state saying it too.
	k.setState(func(st *KeeperState) { st.State, st.Since, st.LastError = "failed", time.Now(), oe.Error() })
	k.logf(LevelErr, "%s: no server serves client %s the disk this device was attached with (%s) any more (last: %s): failing I/O on /dev/%s with EIO rather than attaching another view; what was written to it since it was attached is lost to this machine: reboot it",
		k.dev(), clientName(t.Identity), overlayPhrase(t.Overlay), BackendID(oe.Server, t.Export), k.dev())
	if err := k.Kernel.Disconnect(t.Index); err != nil && !errors.Is(err, ErrNotConfigured) {
		k.logf(LevelErr, "%s: %v: I/O fails only once the dead-connection timeout (%s) expires", k.dev(), err, t.DeadConnTimeout)
	}
}

// reconnect negotiates fresh connections with addr, as an attach does, and hands them to
// the kernel in the place of the dead ones; it returns how many it handed over. It sends
// the device's identity and resumes its overlay: the server must serve that one.
func (k *Keeper) reconnect(ctx context.Context, addr string) (int, error) {
	t := k.Target
	spec := linkSpec{dial: k.Dial, export: t.Export, connections: t.Connections, dialTimeout: k.DialTimeout,
		device: &t, expect: &t.Overlay, tls: t.TLS, note: func(s string) { k.logf(LevelInfo, "%s: %s", k.dev(), s) }}
	if t.Identity != "" {
		spec.client = &nbd.ClientOption{ID: t.Identity, Overlay: t.Overlay}
	}
	l, err := negotiate(ctx, spec, addr)
	if err != nil {
		return 0, err
	}
	defer l.close()
	files := l.files
	if l.relays != nil {
		// TLS the kernel cannot take: the kernel gets socket pairs, with relays behind.
		if k.Relays == nil {
			return 0, &AttachError{Step: StepSockets, Server: addr, Err: errors.New("the connections need TLS relays, and this keeper runs none")}
		}
		if files, err = k.Relays.Start(l.files, l.relays); err != nil {
			return 0, &AttachError{Step: StepSockets, Server: addr, Err: err}
		}
		defer CloseFiles(files)
	}
	if l.tls != "" {
		k.setState(func(st *KeeperState) { st.TLS = l.tls })
	}
	if err := k.Kernel.Reconfigure(Device{Index: t.Index, BackendID: t.BackendID}, files); err != nil {
		// The kernel's refusals are not specific (EINVAL for a device disconnected meanwhile
		// as for a bad request): ask whether the device is still there.
		if st, serr := k.Kernel.Status(t.Index); serr == nil && !connected(st, t.Index) {
			return 0, fmt.Errorf("%w: %v", ErrNotConfigured, err)
		}
		return 0, &AttachError{Step: StepKernel, Server: addr, Err: err}
	}
	return len(l.files), nil
}
