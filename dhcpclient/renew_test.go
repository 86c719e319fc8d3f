package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
)

// fakeClock is virtual time since boot: it moves only when the Renewer sleeps or a request
// waits for its answer, so hours of lease run in microseconds. It ends the run (Sleep fails)
// once end has passed.
type fakeClock struct {
	now, end time.Duration
}

func (c *fakeClock) Now() time.Duration { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d < 0 {
		panic(fmt.Sprintf("negative sleep %s", d))
	}
	c.now += d
	if c.now > c.end {
		return context.Canceled
	}
	return nil
}

// request is one request the fake server saw.
type request struct {
	at        time.Duration
	broadcast bool
	ciaddr    string
	server    bool // carries a server identifier
	requested bool // carries a requested address
}

// fakeServer answers requests according to answer; no answer costs the request's full wait.
type fakeServer struct {
	clock *fakeClock
	wait  time.Duration
	// answer decides the reply to a request: "ack", "nak", "other" (an ACK for another
	// address) or "" (silence).
	answer func(r request) string
	lease  uint32 // seconds, option 51
	t1, t2 uint32 // options 58 and 59 when not zero

	mu       sync.Mutex
	requests []request
}

func (s *fakeServer) Exchange(ctx context.Context, msg *dhcpv4.DHCPv4, dst net.IP) (*dhcpv4.DHCPv4, error) {
	r := request{at: s.clock.now, broadcast: dst.Equal(net.IPv4bcast), ciaddr: msg.ClientIPAddr.String(),
		server: msg.Options.Has(dhcpv4.OptionServerIdentifier), requested: msg.Options.Has(dhcpv4.OptionRequestedIPAddress)}
	s.mu.Lock()
	s.requests = append(s.requests, r)
	s.mu.Unlock()
	if msg.MessageType() != dhcpv4.MessageTypeRequest {
		return nil, fmt.Errorf("not a request: %s", msg.MessageType())
	}
	reply := func(t dhcpv4.MessageType, yi net.IP) *dhcpv4.DHCPv4 {
		mods := []dhcpv4.Modifier{dhcpv4.WithMessageType(t), dhcpv4.WithYourIP(yi),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1))), dhcpv4.WithLeaseTime(s.lease)}
		if s.t1 != 0 {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionRenewTimeValue, be32(s.t1)),
				dhcpv4.WithGeneric(dhcpv4.OptionRebindingTimeValue, be32(s.t2)))
		}
		m, err := dhcpv4.NewReplyFromRequest(msg, mods...)
		if err != nil {
			panic(err)
		}
		return m
	}
	s.clock.now += 10 * time.Millisecond
	switch s.answer(r) {
	case "ack":
		return reply(dhcpv4.MessageTypeAck, msg.ClientIPAddr), nil
	case "nak":
		return reply(dhcpv4.MessageTypeNak, net.IPv4zero), nil
	case "other":
		return reply(dhcpv4.MessageTypeAck, net.IPv4(10, 77, 0, 199)), nil
	}
	// Silence costs the request's whole wait, in virtual time.
	wait := s.wait
	if d, ok := ctx.Deadline(); ok {
		wait = time.Until(d).Round(10 * time.Millisecond)
	}
	s.clock.now += wait - 10*time.Millisecond
	return nil, errors.New("no answer within 4s")
}

func be32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

// logLines collects the Renewer's messages as "SEV message".
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) log(sev int, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf("%d %s", sev, fmt.Sprintf(format, args...)))
}

func (l *logLines) count(substr string) int {
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, substr) {
			n++
		}
	}
	return n
}

func (l *logLines) String() string { return strings.Join(l.lines, "\n") }

// spec30 is a 30-second lease obtained at 2 s after boot.
func spec30() Spec {
	return Spec{Interface: "eth0", MAC: "52:54:00:00:00:10", Address: "10.77.0.100/24", Server: "10.77.0.1",
		Lease: 30 * time.Second, Requested: 2 * time.Second, VendorClass: "nbdroot", Root: "/dev/nbd0"}
}

type fakeLink struct{ present func(now time.Duration) bool }

type detectorFunc func() (Owner, bool)

func (f detectorFunc) Detect() (Owner, bool) { return f() }

// runRenewer runs a Renewer of spec against srv until the clock reaches end.
func runRenewer(t *testing.T, spec Spec, end time.Duration, answer func(request) string, det Detector) (*fakeServer, *logLines, error) {
	t.Helper()
	clock := &fakeClock{now: spec.Requested, end: end}
	srv := &fakeServer{clock: clock, wait: DefaultAnswerWait, answer: answer, lease: uint32(spec.Lease / time.Second)}
	logs := &logLines{}
	r := &Renewer{Spec: spec, Transport: srv, Clock: clock, Detector: det, Log: logs.log}
	err := r.Run(context.Background())
	return srv, logs, err
}

func TestRenewerRenewsAtT1(t *testing.T) {
	srv, logs, err := runRenewer(t, spec30(), 3*time.Minute, func(request) string { return "ack" }, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want the end of the test's time", err)
	}
	// A 30 s lease is renewed at T1, every 15 s: from 17 s to 3 min, 11 renewals, each sent
	// unicast to the server, in RFC 2131's RENEWING form.
	if len(srv.requests) != 11 {
		t.Fatalf("%d requests, want 11:\n%v", len(srv.requests), srv.requests)
	}
	for i, r := range srv.requests {
		want := 2*time.Second + time.Duration(i+1)*15*time.Second
		if r.broadcast || r.server || r.requested || r.ciaddr != "10.77.0.100" || r.at != want {
			t.Errorf("request %d = %+v, want at %s unicast with ciaddr 10.77.0.100 and neither option 50 nor 54", i, r, want)
		}
	}
	if n := logs.count("6 eth0: lease of 10.77.0.100 renewed by 10.77.0.1 for 30s; next renewal in 15s"); n != 11 {
		t.Errorf("%d renewals logged, want 11:\n%s", n, logs)
	}
	if !strings.HasPrefix(logs.lines[0], "6 eth0: keeping the DHCP lease of 10.77.0.100/24 from 10.77.0.1 (30s): renewal in 15s") {
		t.Errorf("first line %q", logs.lines[0])
	}
}

func TestRenewerServerTimes(t *testing.T) {
	for _, tt := range []struct {
		name   string
		t1, t2 uint32
		want   time.Duration // second request after the first
	}{
		{"T1 of the ACK", 10, 20, 10 * time.Second},
		{"T1 beyond the lease: the default", 40, 50, 15 * time.Second},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := &fakeClock{now: 0, end: time.Minute}
			srv := &fakeServer{clock: clock, wait: DefaultAnswerWait, answer: func(request) string { return "ack" }, lease: 30, t1: tt.t1, t2: tt.t2}
			spec := spec30()
			spec.Requested = 0
			logs := &logLines{}
			(&Renewer{Spec: spec, Transport: srv, Clock: clock, Log: logs.log}).Run(context.Background())
			if len(srv.requests) < 2 {
				t.Fatalf("requests %v", srv.requests)
			}
			if d := srv.requests[1].at - srv.requests[0].at; d != tt.want {
				t.Errorf("second renewal %s after the first, want %s", d, tt.want)
			}
		})
	}
}

func TestRenewerRebindsFromT2(t *testing.T) {
	// The lease's server is gone; another one answers broadcasts.
	srv, logs, err := runRenewer(t, spec30(), 40*time.Second, func(r request) string {
		if r.broadcast {
			return "ack"
		}
		return ""
	}, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	var kinds []string
	for _, r := range srv.requests {
		k := "unicast"
		if r.broadcast {
			k = "broadcast"
		}
		kinds = append(kinds, fmt.Sprintf("%s@%.2f", k, r.at.Seconds()))
	}
	// T1 = 17 s: unicast, unanswered after 3.75 s (an eighth of the lease); again after half
	// of the 7.5 s left to T2: 24.5 s; unanswered at T2 (28.25 s): broadcast.
	want := []string{"unicast@17.00", "unicast@24.50", "broadcast@28.25"}
	if diff := cmp.Diff(want, kinds); diff != "" {
		t.Errorf("requests (-want +got):\n%s\n%s", diff, logs)
	}
	if logs.count("4 eth0: no answer from 10.77.0.1 to renew 10.77.0.100 (no answer within 4s); again in 4s") != 1 ||
		logs.count("from any server in 0s (T2)") != 1 || logs.count("rebound by 10.77.0.1") != 1 {
		t.Errorf("log:\n%s", logs)
	}
}

func TestRenewerExpiredKeepsAddressAndAsks(t *testing.T) {
	up := false
	srv, logs, _ := runRenewer(t, spec30(), 3*time.Minute, func(r request) string {
		if up {
			return "ack"
		}
		return ""
	}, nil)
	_ = srv
	if n := logs.count("2 eth0: DHCP LEASE OF 10.77.0.100 EXPIRED"); n != 1 {
		t.Fatalf("%d expiry lines, want one (loud, once):\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "the address stays, the root (/dev/nbd0) is behind it") {
		t.Errorf("the expiry line does not say the address stays:\n%s", logs)
	}
	// After expiry the Renewer asks every 15 s (half the lease, at most 60 s), by broadcast.
	var after []time.Duration
	for _, r := range srv.requests {
		if r.at >= 32*time.Second {
			if !r.broadcast {
				t.Errorf("request at %s after expiry is not broadcast", r.at)
			}
			after = append(after, r.at)
		}
	}
	for i := 1; i < len(after); i++ {
		if d := after[i] - after[i-1]; d < 15*time.Second || d > 15*time.Second+DefaultAnswerWait {
			t.Errorf("requests after expiry %s apart, want 15 s (+ the answer wait)", d)
		}
	}
	if len(after) < 8 {
		t.Errorf("%d requests in the 2.5 minutes after expiry", len(after))
	}

	// A server that comes back makes the lease valid again.
	calls := 0
	_, logs, _ = runRenewer(t, spec30(), 3*time.Minute, func(r request) string {
		calls++
		if calls > 6 {
			return "ack"
		}
		return ""
	}, nil)
	if logs.count("EXPIRED") != 1 || logs.count("4 eth0: lease of 10.77.0.100 regained after it expired by 10.77.0.1") != 1 {
		t.Errorf("log:\n%s", logs)
	}
	if n := logs.count("renewed by"); n < 5 {
		t.Errorf("%d renewals after the server came back:\n%s", n, logs)
	}
}

func TestRenewerRefusals(t *testing.T) {
	for _, tt := range []struct {
		answer, want string
	}{
		{"nak", "2 eth0: DHCP server 10.77.0.1 REFUSED 10.77.0.100 (DHCPNAK); the address stays"},
		{"other", "2 eth0: DHCP server 10.77.0.1 REFUSED 10.77.0.100 (DHCPNAK: it offers 10.77.0.199 instead); the address stays"},
	} {
		t.Run(tt.answer, func(t *testing.T) {
			srv, logs, _ := runRenewer(t, spec30(), 3*time.Minute, func(request) string { return tt.answer }, nil)
			if n := logs.count(tt.want); n != 1 {
				t.Errorf("%d lines %q, want one:\n%s", n, tt.want, logs)
			}
			if len(srv.requests) < 10 {
				t.Errorf("only %d requests: the Renewer must keep asking", len(srv.requests))
			}
		})
	}
}

func TestRenewerHandoff(t *testing.T) {
	// The detector is asked on every wake: by the fake time the manager appears.
	clock := &fakeClock{now: 2 * time.Second, end: 3 * time.Minute}
	srv := &fakeServer{clock: clock, wait: DefaultAnswerWait, answer: func(request) string { return "ack" }, lease: 30}
	logs := &logLines{}
	det := detectorFunc(func() (Owner, bool) {
		if clock.now < 40*time.Second {
			return Owner{}, false
		}
		return Owner{Manager: "systemd-networkd", Evidence: "/run/systemd/netif/leases/2", Address: net.IPv4(10, 77, 0, 100)}, true
	})
	err := (&Renewer{Spec: spec30(), Transport: srv, Clock: clock, Detector: det, Log: logs.log}).Run(context.Background())
	if err != nil {
		t.Fatalf("Run = %v, want nil after the hand-off", err)
	}
	if clock.now > 40*time.Second+DefaultPoll || len(srv.requests) != 2 {
		t.Errorf("stopped at %s after %d requests, want within a poll of 40 s after 2", clock.now, len(srv.requests))
	}
	if logs.count("6 eth0: lease of 10.77.0.100 handed over to systemd-networkd (/run/systemd/netif/leases/2): nbdroot no longer renews it") != 1 {
		t.Errorf("log:\n%s", logs)
	}

	// A manager leasing another address does not take the root's lease over.
	clock = &fakeClock{now: 2 * time.Second, end: 2 * time.Minute}
	srv = &fakeServer{clock: clock, wait: DefaultAnswerWait, answer: func(request) string { return "ack" }, lease: 30}
	logs = &logLines{}
	det = detectorFunc(func() (Owner, bool) {
		return Owner{Manager: "NetworkManager", Evidence: "/run/NetworkManager/internal-x-eth0.lease", Address: net.IPv4(10, 77, 0, 105)}, true
	})
	err = (&Renewer{Spec: spec30(), Transport: srv, Clock: clock, Detector: det, Log: logs.log}).Run(context.Background())
	if !errors.Is(err, context.Canceled) || len(srv.requests) < 7 {
		t.Errorf("Run = %v after %d requests: the Renewer must go on", err, len(srv.requests))
	}
	if logs.count("2 eth0: NetworkManager holds a lease for 10.77.0.105, not for 10.77.0.100 that the root (/dev/nbd0) uses") != 1 {
		t.Errorf("log:\n%s", logs)
	}
}

func TestRenewerAddressRemoved(t *testing.T) {
	clock := &fakeClock{now: 2 * time.Second, end: time.Minute}
	srv := &fakeServer{clock: clock, wait: DefaultAnswerWait, answer: func(request) string { return "ack" }, lease: 30}
	logs := &logLines{}
	link := linkFunc(func(ip net.IP) (bool, error) { return clock.now < 20*time.Second, nil })
	(&Renewer{Spec: spec30(), Transport: srv, Clock: clock, Link: link, Log: logs.log}).Run(context.Background())
	if logs.count("2 eth0: THE ADDRESS 10.77.0.100 WAS REMOVED") != 1 {
		t.Errorf("log:\n%s", logs)
	}
}

type linkFunc func(net.IP) (bool, error)

func (f linkFunc) HasAddress(ip net.IP) (bool, error) { return f(ip) }

func TestRenewerSpec(t *testing.T) {
	logs := &logLines{}
	spec := spec30()
	spec.Lease = Infinite
	if err := (&Renewer{Spec: spec, Clock: &fakeClock{}, Log: logs.log}).Run(context.Background()); err != nil || logs.count("never ends") != 1 {
		t.Errorf("infinite lease: %v\n%s", err, logs)
	}
	for _, bad := range []func(*Spec){
		func(s *Spec) { s.MAC = "x" },
		func(s *Spec) { s.Address = "10.77.0.100" },
		func(s *Spec) { s.Address = "fd00::1/64" },
		func(s *Spec) { s.Server = "" },
		func(s *Spec) { s.Lease = 0 },
	} {
		s := spec30()
		bad(&s)
		if err := s.Check(); err == nil {
			t.Errorf("Check(%+v) = nil", s)
		}
	}
}
