// Package storm simulates boot storms: many NBD clients booting from one server at once,
// each replaying the reads (with Config.Writes, the writes too) of a recorded boot (a
// Trace, in the format of nbdkit's log filter) over a connection of its own, and measures
// what they see — how long the storm takes and the latency of every request.
//
// A replayed client behaves like a client booted by our initramfs: the handshake of
// nbdclient.Handshake (the code the init uses: its identity, then NBD_OPT_GO; servers that
// do not know identities ignore it), then the kernel's nbd driver: simple replies only,
// one TCP connection with TCP_NODELAY, requests pipelined. It keeps the boot's structure:
// reads the trace shows in flight together (a Burst) are sent together, and the next burst
// waits for every reply of the previous one, since a boot's next read usually depends on
// what the last one returned. What it changes is time: Config.Scale stretches or removes
// the think time between bursts, and Config.Stagger spreads the clients' starts.
//
// The package never measures the server itself; ProcUsage reads a server process's CPU
// time and memory from /proc for callers that started one.
package storm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// Config describes one storm.
type Config struct {
	// Addr is the server's host:port; Export the export every client asks for.
	Addr   string
	Export string
	// Clients is the number of simulated clients, each with one connection.
	Clients int
	// Trace is what each client replays: its reads; writes and other requests are left
	// out, since the image is shared and read-only, unless Writes is set.
	Trace *Trace
	// Writes replays the trace's writes too, with pseudo-random data, in the bursts where
	// the trace sent them (Trace.BurstsWithWrites), and ends each client's replay with a
	// FLUSH, as the boot of a writable root does. The export must give each client a disk
	// of its own (a cow export: an overlay per client). Checking (Check) cannot be combined
	// with it: a client's own writes change what it reads back.
	Writes bool
	// Scale multiplies the think time between bursts: 1 replays the boot's own pace, 0
	// sends each burst as soon as the previous one is answered — the server-bound storm,
	// where the server alone decides how long it lasts.
	Scale float64
	// Stagger spreads the clients' starts evenly over this window: client i starts at
	// i·Stagger/Clients. Machines switched on together still reach their first read at
	// different times (firmware, PXE, kernel load); zero starts every client at once.
	Stagger time.Duration
	// BurstGap groups reads into bursts (0: DefaultBurstGap); see Trace.Bursts.
	BurstGap time.Duration
	// Check, when set, is the image: the first CheckClients clients compare every byte
	// they read with it (slow; tests use it, benchmarks check one client).
	Check        io.ReaderAt
	CheckClients int
	// Dial opens a client's connection (default: TCP(Addr)).
	Dial Dialer
	// NoIdentity leaves out the client identity (as nbd-client does); by default client i
	// presents Identity(i).
	NoIdentity bool
	// Ready, when set, is called once every client has finished its handshake or failed,
	// before any client sends its first read. Benchmarks use it to sample the server.
	Ready func()
}

// Result is what the clients of one storm saw.
type Result struct {
	Clients int
	// Failed counts clients that did not complete their replay; Errors holds the first
	// few reasons.
	Failed int
	Errors []error
	// Wall is the time from the first client's first read to the last client's last reply.
	Wall time.Duration
	// Latencies holds every read's time from request to the last byte of its reply, sorted.
	Latencies []time.Duration
	// WriteLatencies and FlushLatencies hold the times from request to reply of the writes
	// and final FLUSHes of a replay with Config.Writes, sorted.
	WriteLatencies, FlushLatencies []time.Duration
	// Boots holds each completed client's replay time (first read to last reply), sorted.
	Boots []time.Duration
	// Reads and Bytes count the reads answered and the data received; Writes the writes.
	Reads  int
	Bytes  int64
	Writes int
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted durations, nearest rank.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// P returns the p-th percentile of the read latencies.
func (r *Result) P(p float64) time.Duration { return Percentile(r.Latencies, p) }

// Max returns the largest read latency.
func (r *Result) Max() time.Duration {
	if len(r.Latencies) == 0 {
		return 0
	}
	return r.Latencies[len(r.Latencies)-1]
}

// maxErrors bounds Result.Errors.
const maxErrors = 8

// Run runs one storm and returns when every client has finished or failed, or ctx ends.
// A client that fails (refused, cut off, an error reply, wrong data) counts in Failed; the
// others go on. Run returns an error only for a configuration it cannot run.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if cfg.Clients <= 0 {
		return nil, errors.New("storm: Clients must be positive")
	}
	if cfg.Trace == nil {
		return nil, errors.New("storm: no trace")
	}
	if cfg.Writes && cfg.Check != nil && cfg.CheckClients > 0 {
		return nil, errors.New("storm: Check with Writes: a client's own writes change what it reads")
	}
	bursts := cfg.Trace.Bursts(cfg.BurstGap)
	if cfg.Writes {
		bursts = cfg.Trace.BurstsWithWrites(cfg.BurstGap)
	}
	if len(bursts) == 0 {
		return nil, fmt.Errorf("storm: %s: %w", cfg.Trace.Name, ErrNoReads)
	}
	dial := cfg.Dial
	if dial == nil {
		dial = TCP(cfg.Addr)
	}
	maxBurst, maxWrite := 0, 0
	for _, b := range bursts {
		maxBurst = max(maxBurst, len(b.Reads)+len(b.Writes))
		for _, w := range b.Writes {
			maxWrite = max(maxWrite, int(w.Length))
		}
	}
	// What every write sends: the clients only read it.
	payload := make([]byte, (maxWrite+7)&^7)
	fillBlock(payload, 1)

	var (
		mu  sync.Mutex
		res = &Result{Clients: cfg.Clients}
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		res.Failed++
		if len(res.Errors) < maxErrors {
			res.Errors = append(res.Errors, err)
		}
	}

	// Every client connects and negotiates first; the storm proper starts when all are
	// ready, so handshakes (which some servers serve by forking) are not part of it.
	conns := make([]net.Conn, cfg.Clients)
	var hs sync.WaitGroup
	sem := make(chan struct{}, maxDialing)
	for i := range conns {
		hs.Add(1)
		sem <- struct{}{}
		go func() {
			defer hs.Done()
			defer func() { <-sem }()
			c, err := connect(ctx, dial, i, cfg.Export, !cfg.NoIdentity)
			if err != nil {
				fail(fmt.Errorf("client %d: %w", i, err))
				return
			}
			conns[i] = c
		}()
	}
	hs.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	if cfg.Ready != nil {
		cfg.Ready()
	}
	stop := context.AfterFunc(ctx, func() {
		for _, c := range conns {
			if c != nil {
				c.SetDeadline(time.Unix(1, 0))
			}
		}
	})
	defer stop()

	start := time.Now()
	var (
		wg      sync.WaitGroup
		lastEnd time.Time
	)
	for i, c := range conns {
		if c == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			var delay time.Duration
			if cfg.Clients > 1 {
				delay = time.Duration(int64(cfg.Stagger) * int64(i) / int64(cfg.Clients))
			}
			if !sleepUntil(ctx, start.Add(delay)) {
				fail(fmt.Errorf("client %d: %w", i, ctx.Err()))
				return
			}
			cl := &client{conn: c, bursts: bursts, scale: cfg.Scale, maxBurst: maxBurst, payload: payload, flush: cfg.Writes}
			if i < cfg.CheckClients {
				cl.check = cfg.Check
			}
			began := time.Now()
			err := cl.replay(ctx)
			end := time.Now()
			if err != nil {
				fail(fmt.Errorf("client %d: %w", i, err))
				return
			}
			disconnect(c)
			mu.Lock()
			res.Latencies = append(res.Latencies, cl.lat...)
			res.WriteLatencies = append(res.WriteLatencies, cl.wlat...)
			res.FlushLatencies = append(res.FlushLatencies, cl.flat...)
			res.Writes += len(cl.wlat)
			res.Boots = append(res.Boots, end.Sub(began))
			res.Reads += len(cl.lat)
			res.Bytes += cl.bytes
			if end.After(lastEnd) {
				lastEnd = end
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if !lastEnd.IsZero() {
		res.Wall = lastEnd.Sub(start)
	}
	slices.Sort(res.Latencies)
	slices.Sort(res.WriteLatencies)
	slices.Sort(res.FlushLatencies)
	slices.Sort(res.Boots)
	return res, nil
}

// Identity is the client identity simulated client i presents: a MAC address, as a client
// booted by our initramfs presents its boot NIC's (locally administered, 52:54:…).
func Identity(i int) string {
	return fmt.Sprintf("52:54:%02x:%02x:%02x:%02x", byte(i>>24), byte(i>>16), byte(i>>8), byte(i))
}

// Dialer opens the connection of client number i.
type Dialer func(ctx context.Context, i int) (net.Conn, error)

// TCP dials addr as the kernel client's sockets are set up (TCP_NODELAY on). When addr is
// an IPv4 loopback address, client i connects from a loopback address of its own
// (127.1.0.0 + i + 1; Linux routes all of 127.0.0.0/8 to lo), as machines in a fleet do —
// servers that limit connections per address see one client each.
func TCP(addr string) Dialer {
	return func(ctx context.Context, i int) (net.Conn, error) {
		var d net.Dialer
		if ap, err := netip.ParseAddrPort(addr); err == nil && ap.Addr().Is4() && ap.Addr().IsLoopback() && i >= 0 {
			v := uint32(127)<<24 | 1<<16 + uint32(i) + 1
			d.LocalAddr = &net.TCPAddr{IP: net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v))}
		}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		c.(*net.TCPConn).SetNoDelay(true)
		return c, nil
	}
}

// connect dials and negotiates export, trying again a few times: servers that fork per
// client (nbd-server) have a short listen backlog and reset connections beyond it, which
// a booting client's retry would get past too.
func connect(ctx context.Context, dial Dialer, i int, export string, identity bool) (net.Conn, error) {
	o := nbdclient.DialOptions{Export: export}
	if identity {
		o.Client = &nbd.ClientOption{ID: Identity(i)}
	}
	var err error
	for attempt, wait := 0, 50*time.Millisecond; attempt < connectAttempts; attempt, wait = attempt+1, 2*wait {
		var c net.Conn
		if c, err = connectOnce(ctx, func(ctx context.Context) (net.Conn, error) { return dial(ctx, i) }, o); err == nil {
			return c, nil
		}
		var oe *nbd.OptionError
		if errors.As(err, &oe) || !sleepUntil(ctx, time.Now().Add(wait)) {
			break // a refusal is final
		}
	}
	return nil, err
}

// connectAttempts bounds connect's tries (the last wait before it is 1.6 s).
const connectAttempts = 6

func connectOnce(ctx context.Context, dial func(context.Context) (net.Conn, error), o nbdclient.DialOptions) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if _, err := nbdclient.Handshake(c, o); err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// disconnect sends NBD_CMD_DISC, as a client that is done should.
func disconnect(c net.Conn) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdDisc}))
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// client is one replayed boot.
type client struct {
	conn     net.Conn
	bursts   []Burst
	scale    float64
	maxBurst int
	check    io.ReaderAt
	payload  []byte // the data of writes
	flush    bool   // end with a FLUSH

	lat        []time.Duration // reads
	wlat, flat []time.Duration // writes, the FLUSH
	bytes      int64
}

func (cl *client) replay(ctx context.Context) error {
	br := bufio.NewReaderSize(cl.conn, 256<<10)
	req := make([]byte, 0, cl.maxBurst*nbd.RequestSize)
	sent := make([]time.Time, cl.maxBurst)
	done := make([]bool, cl.maxBurst)
	var data, want []byte
	var hdr [nbd.SimpleReplySize]byte
	for bi, b := range cl.bursts {
		// Handles: reads 0…len(Reads)-1, then the writes.
		req = req[:0]
		for i, op := range b.Reads {
			req = nbd.AppendRequest(req, nbd.Request{Type: nbd.CmdRead, Handle: uint64(i), Offset: op.Offset, Length: op.Length})
			done[i] = false
		}
		for i, op := range b.Writes {
			h := len(b.Reads) + i
			req = nbd.AppendRequest(req, nbd.Request{Type: nbd.CmdWrite, Handle: uint64(h), Offset: op.Offset, Length: op.Length})
			req = append(req, cl.payload[:op.Length]...)
			done[h] = false
		}
		inFlight := len(b.Reads) + len(b.Writes)
		now := time.Now()
		if _, err := cl.conn.Write(req); err != nil {
			return fmt.Errorf("burst %d: send: %w", bi, err)
		}
		for i := range inFlight {
			sent[i] = now
		}
		for range inFlight {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				return fmt.Errorf("burst %d: reply: %w", bi, err)
			}
			r, err := nbd.ParseSimpleReply(hdr[:])
			if err != nil {
				return fmt.Errorf("burst %d: %w", bi, err)
			}
			i := int(r.Handle)
			if r.Handle >= uint64(inFlight) || done[i] {
				return fmt.Errorf("burst %d: reply with unexpected handle %d", bi, r.Handle)
			}
			done[i] = true
			if i >= len(b.Reads) {
				op := b.Writes[i-len(b.Reads)]
				if r.Error != 0 {
					return fmt.Errorf("WRITE %#x+%#x: %w", op.Offset, op.Length, nbd.Errno(r.Error))
				}
				cl.wlat = append(cl.wlat, time.Since(sent[i]))
				continue
			}
			op := b.Reads[i]
			if r.Error != 0 {
				return fmt.Errorf("READ %#x+%#x: %w", op.Offset, op.Length, nbd.Errno(r.Error))
			}
			n := int(op.Length)
			if cl.check == nil {
				// Taken and dropped without a copy: the clients share the machine with the
				// server, and what they spend it cannot use.
				if _, err := br.Discard(n); err != nil {
					return fmt.Errorf("READ %#x+%#x: data: %w", op.Offset, op.Length, err)
				}
				cl.lat = append(cl.lat, time.Since(sent[i]))
				cl.bytes += int64(n)
				continue
			}
			if cap(data) < n {
				data = make([]byte, n)
			}
			if _, err := io.ReadFull(br, data[:n]); err != nil {
				return fmt.Errorf("READ %#x+%#x: data: %w", op.Offset, op.Length, err)
			}
			cl.lat = append(cl.lat, time.Since(sent[i]))
			cl.bytes += int64(n)
			if cap(want) < n {
				want = make([]byte, n)
			}
			if _, err := cl.check.ReadAt(want[:n], int64(op.Offset)); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("check READ %#x+%#x: %w", op.Offset, op.Length, err)
			}
			if !bytes.Equal(data[:n], want[:n]) {
				return fmt.Errorf("READ %#x+%#x: wrong data", op.Offset, op.Length)
			}
		}
		if think := time.Duration(float64(b.Think) * cl.scale); think > 0 {
			if !sleepUntil(ctx, time.Now().Add(think)) {
				return ctx.Err()
			}
		}
	}
	if cl.flush {
		t0 := time.Now()
		if _, err := cl.conn.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdFlush})); err != nil {
			return fmt.Errorf("FLUSH: send: %w", err)
		}
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return fmt.Errorf("FLUSH: reply: %w", err)
		}
		r, err := nbd.ParseSimpleReply(hdr[:])
		if err != nil {
			return fmt.Errorf("FLUSH: %w", err)
		}
		if r.Error != 0 {
			return fmt.Errorf("FLUSH: %w", nbd.Errno(r.Error))
		}
		cl.flat = append(cl.flat, time.Since(t0))
	}
	return nil
}

// Connect opens n connections and negotiates export on each, as n idle clients would; on
// error the ones opened are closed again.
func Connect(ctx context.Context, dial Dialer, export string, n int) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxDialing)
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			conns[i], errs[i] = connect(ctx, dial, i, export, true)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	return conns, nil
}

// maxDialing bounds simultaneous connects: a listen backlog is finite, and a storm's
// handshakes are not what it measures.
const maxDialing = 16

// ReadOnce sends one READ on a negotiated connection and reads its reply: what a client
// that has booted and gone quiet last did.
func ReadOnce(c net.Conn, off uint64, n uint32) error {
	if _, err := c.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Handle: 1, Offset: off, Length: n})); err != nil {
		return err
	}
	b := make([]byte, nbd.SimpleReplySize+int(n))
	if _, err := io.ReadFull(c, b); err != nil {
		return err
	}
	r, err := nbd.ParseSimpleReply(b)
	if err != nil {
		return err
	}
	if r.Error != 0 {
		return nbd.Errno(r.Error)
	}
	return nil
}
