package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

// fakeLinks is a LinkSource fed by the test.
type fakeLinks struct {
	ch     chan linkNotice
	closed chan struct{}
	once   sync.Once
}

type linkNotice struct {
	idx []int
	err error
}

func newFakeLinks() *fakeLinks {
	return &fakeLinks{ch: make(chan linkNotice, 8), closed: make(chan struct{})}
}

func (f *fakeLinks) Next() ([]int, error) {
	select {
	case n := <-f.ch:
		return n.idx, n.err
	case <-f.closed:
		return nil, errors.New("closed")
	}
}

func (f *fakeLinks) Close() error {
	f.once.Do(func() { close(f.closed) })
	return nil
}

// fakeKernel records what the keeper hands over.
type fakeKernel struct {
	mu        sync.Mutex
	calls     chan reconfigCall
	refuse    error // returned by Reconfigure when set
	connected bool
	// disconnects records the devices failed with Disconnect.
	disconnects chan int
}

type reconfigCall struct {
	Dev   Device
	Socks int
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{calls: make(chan reconfigCall, 16), connected: true, disconnects: make(chan int, 4)}
}

func (k *fakeKernel) Reconfigure(dev Device, socks []*os.File) error {
	k.mu.Lock()
	refuse := k.refuse
	k.mu.Unlock()
	for _, f := range socks {
		// The kernel takes a socket of its own; a closed descriptor would fail here.
		if _, err := f.Stat(); err != nil {
			return err
		}
	}
	if refuse != nil {
		return refuse
	}
	k.calls <- reconfigCall{Dev: dev, Socks: len(socks)}
	return nil
}

func (k *fakeKernel) Disconnect(index int) error {
	k.disconnects <- index
	return nil
}

func (k *fakeKernel) Status(index int) ([]DeviceStatus, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return []DeviceStatus{{Index: index, Connected: k.connected}}, nil
}

// fakeServers hands out real loopback TCP connections (the keeper calls File on them) with
// the export description the test sets per address; an address without one is down.
type fakeServers struct {
	t  *testing.T
	ln net.Listener
	mu sync.Mutex
	up map[string]nbd.ExportInfo
	// dials counts the dial attempts per address; sent records what each dial asked.
	dials map[string]int
	sent  []sentDial
	// cow makes an address an nbdroot server that knows client identities: it says which
	// overlay a client gets (or returns the error its GO gets). Other servers answer the
	// identity with NBD_REP_ERR_UNSUP and report no overlay.
	cow map[string]func(c nbd.ClientOption) (nbd.OverlayID, error)
}

// sentDial is one dial: the address and what it negotiated.
type sentDial struct {
	Addr string
	Opts DialOptions
}

func newFakeServers(t *testing.T) *fakeServers {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServers{t: t, ln: ln, up: map[string]nbd.ExportInfo{}, dials: map[string]int{},
		cow: map[string]func(nbd.ClientOption) (nbd.OverlayID, error){}}
	var held []net.Conn
	var hmu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			hmu.Lock()
			held = append(held, c)
			hmu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		hmu.Lock()
		for _, c := range held {
			c.Close()
		}
		hmu.Unlock()
	})
	return f
}

func (f *fakeServers) set(addr string, info *nbd.ExportInfo) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if info == nil {
		delete(f.up, addr)
		return
	}
	f.up[addr] = *info
}

func (f *fakeServers) dialCount(addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.dials[addr]
}

// setCow makes addr an nbdroot server with overlays (see fakeServers.cow).
func (f *fakeServers) setCow(addr string, serve func(c nbd.ClientOption) (nbd.OverlayID, error)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cow[addr] = serve
}

// sentTo returns what the dials to addr asked, in order.
func (f *fakeServers) sentTo(addr string) []DialOptions {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []DialOptions
	for _, s := range f.sent {
		if s.Addr == addr {
			out = append(out, s.Opts)
		}
	}
	return out
}

func (f *fakeServers) dial(ctx context.Context, addr string, o DialOptions) (*Conn, error) {
	f.mu.Lock()
	info, ok := f.up[addr]
	f.dials[addr]++
	sent := o
	if o.Client != nil {
		c := *o.Client
		sent.Client = &c
	}
	f.sent = append(f.sent, sentDial{addr, sent})
	serve := f.cow[addr]
	f.mu.Unlock()
	if !ok {
		return nil, &DialError{Server: addr, Export: o.Export, Err: explainDial(syscall.ECONNREFUSED)}
	}
	if o.Client != nil && serve != nil {
		id, err := serve(*o.Client)
		if err != nil {
			return nil, &DialError{Server: addr, Export: o.Export, Err: err}
		}
		info.HasOverlay, info.Overlay = true, id
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", f.ln.Addr().String())
	if err != nil {
		return nil, err
	}
	return &Conn{TCPConn: c.(*net.TCPConn), Info: info}, nil
}

// logRecorder collects the keeper's messages and lets a test wait for one.
type logRecorder struct {
	mu    sync.Mutex
	lines []string
	cond  chan struct{}
}

func newLogRecorder() *logRecorder { return &logRecorder{cond: make(chan struct{}, 1)} }

func (l *logRecorder) Logf(level Level, format string, args ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf("<%d>", level)+fmt.Sprintf(format, args...))
	l.mu.Unlock()
	select {
	case l.cond <- struct{}{}:
	default:
	}
}

func (l *logRecorder) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// wait waits (boundedly) for a message containing s.
func (l *logRecorder) wait(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(l.text(), s) {
		select {
		case <-l.cond:
		case <-deadline:
			t.Fatalf("no log line with %q; log:\n%s", s, l.text())
		}
	}
}

const testExportSize = 1 << 30

var rwInfo = nbd.ExportInfo{Size: testExportSize, Flags: nbd.TransHasFlags | nbd.TransSendFlush}

type keeperRig struct {
	k       *Keeper
	links   *fakeLinks
	kernel  *fakeKernel
	servers *fakeServers
	log     *logRecorder
	done    chan error
	cancel  context.CancelFunc
}

func startKeeper(t *testing.T, target KeeperTarget, setup func(r *keeperRig)) *keeperRig {
	t.Helper()
	r := &keeperRig{links: newFakeLinks(), kernel: newFakeKernel(), servers: newFakeServers(t), log: newLogRecorder(), done: make(chan error, 1)}
	r.k = &Keeper{Target: target, Dial: r.servers.dial, Kernel: r.kernel, Links: r.links, Logf: r.log.Logf,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond}
	if setup != nil {
		setup(r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- r.k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("keeper did not stop")
		}
	})
	return r
}

func (r *keeperRig) call(t *testing.T) reconfigCall {
	t.Helper()
	select {
	case c := <-r.kernel.calls:
		return c
	case <-time.After(10 * time.Second):
		t.Fatalf("no NBD_CMD_RECONFIGURE; log:\n%s", r.log.text())
	}
	return reconfigCall{}
}

func (r *keeperRig) noCall(t *testing.T) {
	t.Helper()
	select {
	case c := <-r.kernel.calls:
		t.Fatalf("unexpected reconfigure %+v", c)
	default:
	}
}

func (r *keeperRig) exit(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("keeper did not exit; log:\n%s", r.log.text())
	}
	return nil
}

func TestKeeperReconnectsOnLinkDead(t *testing.T) {
	target := KeeperTarget{Index: 2, Servers: []string{"a:10809"}, Export: "root", Size: testExportSize,
		Flags: rwInfo.Flags, Connections: 1, DeadConnTimeout: time.Hour, BackendID: "a:10809/root"}
	r := startKeeper(t, target, func(r *keeperRig) { r.servers.set("a:10809", &rwInfo) })
	// A notice for another device is not ours.
	r.links.ch <- linkNotice{idx: []int{1}}
	r.links.ch <- linkNotice{idx: []int{2}}
	got := r.call(t)
	want := reconfigCall{Dev: Device{Index: 2, BackendID: "a:10809/root"}, Socks: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("reconfigure (-want +got):\n%s", diff)
	}
	r.log.wait(t, "nbd2: reconnected to a:10809/root")
	r.noCall(t)
	if st := r.k.State(); st.Reconnects != 1 || st.State != "watching" || st.Server != "a:10809" {
		t.Errorf("state after one reconnect: %+v", st)
	}
}

func TestKeeperRetriesAndFailsOver(t *testing.T) {
	target := KeeperTarget{Index: 0, Servers: []string{"a:1", "b:1"}, Size: testExportSize, Flags: rwInfo.Flags,
		Connections: 1, DeadConnTimeout: time.Hour}
	r := startKeeper(t, target, nil)
	r.links.ch <- linkNotice{idx: []int{0}}
	// Both down: the keeper keeps trying, logging the first failure of each kind.
	r.log.wait(t, "reconnect attempt 1: NBD server a:1")
	r.log.wait(t, "reconnect attempt 1: NBD server b:1")
	r.noCall(t)
	r.servers.set("b:1", &rwInfo)
	r.call(t)
	r.log.wait(t, "nbd0: reconnected to b:1")
	if st := r.k.State(); st.Server != "b:1" {
		t.Errorf("server after failover = %q, want b:1", st.Server)
	}
	// The next repair starts with the server in use.
	before := r.servers.dialCount("a:1")
	r.links.ch <- linkNotice{idx: []int{0}}
	r.call(t)
	if after := r.servers.dialCount("a:1"); after != before {
		t.Errorf("a:1 dialled %d more time(s) although b:1 is in use and up", after-before)
	}
}

func TestKeeperRefusesAnotherExport(t *testing.T) {
	tests := []struct {
		name string
		info nbd.ExportInfo
		want string
	}{
		{"other size", nbd.ExportInfo{Size: testExportSize / 2, Flags: rwInfo.Flags}, "the export is now 536870912 bytes, the device has 1073741824"},
		{"now read-only", nbd.ExportInfo{Size: testExportSize, Flags: rwInfo.Flags | nbd.TransReadOnly}, "now read-only but the device was attached writable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := KeeperTarget{Index: 0, Servers: []string{"a:1", "b:1"}, Size: testExportSize, Flags: rwInfo.Flags,
				Connections: 1, DeadConnTimeout: time.Hour}
			r := startKeeper(t, target, func(r *keeperRig) {
				r.servers.set("a:1", &tt.info)
				r.servers.set("b:1", &rwInfo)
			})
			r.links.ch <- linkNotice{idx: []int{0}}
			r.call(t)
			r.log.wait(t, tt.want)
			r.log.wait(t, "reconnected to b:1")
		})
	}
}

func TestKeeperMultiConn(t *testing.T) {
	multi := rwInfo
	multi.Flags |= nbd.TransCanMultiConn
	tests := []struct {
		name string
		info nbd.ExportInfo
		want int
	}{
		{"server allows multi-conn", multi, 4},
		{"server no longer allows it", rwInfo, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: multi.Flags,
				Connections: 4, DeadConnTimeout: time.Hour}
			r := startKeeper(t, target, func(r *keeperRig) { r.servers.set("a:1", &tt.info) })
			r.links.ch <- linkNotice{idx: []int{0, 0}}
			if got := r.call(t).Socks; got != tt.want {
				t.Errorf("sockets handed over = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestKeeperLostEvents(t *testing.T) {
	target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: rwInfo.Flags, Connections: 1}
	r := startKeeper(t, target, func(r *keeperRig) { r.servers.set("a:1", &rwInfo) })
	r.links.ch <- linkNotice{err: ErrEventsLost}
	r.call(t)
	r.log.wait(t, "link notices were lost")
}

func TestKeeperDeadConnExpiry(t *testing.T) {
	target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: rwInfo.Flags,
		Connections: 1, DeadConnTimeout: 20 * time.Millisecond}
	r := startKeeper(t, target, nil)
	r.links.ch <- linkNotice{idx: []int{0}}
	r.log.wait(t, "the dead-connection timeout (20ms, nbdroot.deadconn=): the kernel now fails I/O on /dev/nbd0 with EIO; still trying")
	r.servers.set("a:1", &rwInfo)
	r.call(t)
	r.log.wait(t, "requests made while the dead-connection timeout had expired failed with EIO")
	if !strings.Contains(r.log.text(), "<3>nbd0: no server for") {
		t.Errorf("the expiry is not logged as an error:\n%s", r.log.text())
	}
}

func TestKeeperExits(t *testing.T) {
	target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: rwInfo.Flags, Connections: 1}
	t.Run("disconnected on request", func(t *testing.T) {
		r := startKeeper(t, target, nil)
		r.links.ch <- linkNotice{err: ErrNotConfigured}
		if err := r.exit(t); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		r.log.wait(t, "nbd0 was disconnected; the keeper exits")
	})
	t.Run("disconnected while reconnecting", func(t *testing.T) {
		r := startKeeper(t, target, func(r *keeperRig) {
			r.servers.set("a:1", &rwInfo)
			r.kernel.refuse = syscall.EINVAL
			r.kernel.connected = false
		})
		r.links.ch <- linkNotice{idx: []int{0}}
		if err := r.exit(t); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
	t.Run("disconnected by another program", func(t *testing.T) {
		r := startKeeper(t, target, func(r *keeperRig) {
			r.kernel.connected = false
			r.k.StatusInterval = time.Millisecond
		})
		if err := r.exit(t); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
		r.log.wait(t, "no longer connected (disconnected by another program)")
	})
	t.Run("link notices fail", func(t *testing.T) {
		r := startKeeper(t, target, nil)
		r.links.ch <- linkNotice{err: errors.New("netlink receive: boom")}
		if err := r.exit(t); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Errorf("Run = %v, want the notice error", err)
		}
	})
	t.Run("no servers", func(t *testing.T) {
		k := &Keeper{Target: KeeperTarget{}, Links: newFakeLinks(), Kernel: newFakeKernel()}
		if err := k.Run(context.Background()); err == nil {
			t.Error("a keeper without servers ran")
		}
	})
}

func TestKeeperRefusalIsRetried(t *testing.T) {
	target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: rwInfo.Flags, Connections: 1}
	r := startKeeper(t, target, func(r *keeperRig) {
		r.servers.set("a:1", &rwInfo)
		r.kernel.refuse = errors.New("NBD_CMD_RECONFIGURE nbd0: busy")
	})
	r.links.ch <- linkNotice{idx: []int{0}}
	r.log.wait(t, "reconnect attempt 1: NBD_CMD_RECONFIGURE nbd0: busy")
	r.kernel.mu.Lock()
	r.kernel.refuse = nil
	r.kernel.mu.Unlock()
	r.call(t)
	r.log.wait(t, "nbd0: reconnected to a:1")
	if st := r.k.State(); st.LastError != "" {
		t.Errorf("last error kept after the reconnect: %q", st.LastError)
	}
}

func TestNoticeBox(t *testing.T) {
	var b noticeBox
	b.post("first")
	first := time.Now()
	b.post("second")
	select {
	case <-b.signal():
	default:
		t.Fatal("no signal after a notice")
	}
	select {
	case <-b.signal():
		t.Fatal("two signals for one pending repair")
	default:
	}
	why, at := b.take()
	if why != "second" || at.Before(first) {
		t.Errorf("take = %q at %v; want the latest notice", why, at)
	}
}

func TestKeeperProbe(t *testing.T) {
	target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: rwInfo.Flags, Connections: 1}
	t.Run("a read that hangs means a dead link", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		r := startKeeper(t, target, func(r *keeperRig) {
			r.servers.set("a:1", &rwInfo)
			r.k.Probe = func() error { <-release; return nil }
			r.k.ProbeTimeout = time.Millisecond
		})
		r.call(t)
		r.log.wait(t, "a read did not complete within 1ms of the keeper's start")
		r.log.wait(t, "nbd0: the device did not answer; reconnecting")
	})
	t.Run("a read that completes", func(t *testing.T) {
		done := make(chan struct{})
		r := startKeeper(t, target, func(r *keeperRig) {
			r.servers.set("a:1", &rwInfo)
			r.k.Probe = func() error { close(done); return nil }
			r.k.ProbeTimeout = time.Hour
		})
		<-done
		r.noCall(t)
	})
}
