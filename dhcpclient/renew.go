package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// Spec is the lease a Renewer keeps: plain data, handed by the init to the keeper process
// as JSON (the keeper has no file of the initramfs once the root runs).
type Spec struct {
	// Interface is the interface the lease is on, as named when the init configured it.
	Interface string `json:"interface"`
	// MAC is its hardware address, the client's identity to the DHCP server (chaddr; the
	// init sends no client identifier, option 61).
	MAC string `json:"mac"`
	// Address is the leased address with its prefix (10.77.0.100/24).
	Address string `json:"address"`
	// Server is the DHCP server identifier (option 54) of the lease.
	Server string `json:"server"`
	// Lease is the lease time (option 51); Renewal and Rebinding are T1 and T2 (options 58
	// and 59), zero for the defaults of RFC 2131 section 4.4.5 (half and seven eighths of
	// the lease).
	Lease     time.Duration `json:"lease"`
	Renewal   time.Duration `json:"renewal,omitempty"`
	Rebinding time.Duration `json:"rebinding,omitempty"`
	// Requested is when the request that got the lease was sent, as time since boot
	// (CLOCK_BOOTTIME): the lease runs from then (RFC 2131 section 4.4.1).
	Requested time.Duration `json:"requested"`
	// Hostname and VendorClass are sent again with each request (options 12 and 60), as
	// the init sent them.
	Hostname    string `json:"hostname,omitempty"`
	VendorClass string `json:"vendor_class,omitempty"`
	// Root names what is behind the address, for the kernel log ("/dev/nbd0").
	Root string `json:"root,omitempty"`
}

// Infinite is the lease time of a lease that never ends (option 51 = 0xffffffff).
const Infinite = time.Duration(0xffffffff) * time.Second

// Check says what is wrong with a Spec, nil when a Renewer can keep it.
func (s Spec) Check() error {
	if _, err := net.ParseMAC(s.MAC); err != nil {
		return fmt.Errorf("lease of %s: MAC address %q: %w", s.Interface, s.MAC, err)
	}
	ip, _, err := net.ParseCIDR(s.Address)
	if err != nil || ip.To4() == nil {
		return fmt.Errorf("lease of %s: %q is not an IPv4 address with prefix", s.Interface, s.Address)
	}
	if srv := net.ParseIP(s.Server); srv == nil || srv.To4() == nil {
		return fmt.Errorf("lease of %s: server identifier %q is not an IPv4 address", s.Interface, s.Server)
	}
	if s.Lease <= 0 {
		return fmt.Errorf("lease of %s: no lease time", s.Interface)
	}
	return nil
}

// Severities of Renewer messages (syslog's, as /dev/kmsg takes them).
const (
	SevCrit    = 2
	SevErr     = 3
	SevWarning = 4
	SevInfo    = 6
)

// Transport sends one DHCP message and returns the first answer with its transaction ID,
// waiting until ctx ends. dst is the server, or the limited broadcast address.
type Transport interface {
	Exchange(ctx context.Context, msg *dhcpv4.DHCPv4, dst net.IP) (*dhcpv4.DHCPv4, error)
}

// Clock is time since boot (CLOCK_BOOTTIME: it counts a suspend, as lease times do).
type Clock interface {
	Now() time.Duration
	// Sleep waits d, or until ctx ends (then it returns ctx's error).
	Sleep(ctx context.Context, d time.Duration) error
}

// Link is what the Renewer asks about its interface.
type Link interface {
	// HasAddress reports whether the interface still carries ip.
	HasAddress(ip net.IP) (bool, error)
}

// Owner is a network manager that took the lease over: who, and the evidence.
type Owner struct {
	// Manager names it ("systemd-networkd", "NetworkManager", "dhclient (ifupdown)", …).
	Manager string
	// Evidence is what shows it: a lease file, a pid file with its process.
	Evidence string
	// Address is the address the manager's lease holds, when its lease says (nil: unknown).
	Address net.IP
}

// Detector looks for a network manager that renews the lease of the interface itself.
type Detector interface {
	Detect() (Owner, bool)
}

// Defaults of a Renewer.
const (
	// DefaultPoll bounds the sleep between two looks for a network manager.
	DefaultPoll = 5 * time.Second
	// DefaultAnswerWait is how long one request waits for its answer.
	DefaultAnswerWait = 4 * time.Second
)

// Renewer keeps one DHCPv4 lease: at T1 it asks the server that gave it (RENEWING), from T2
// any server (REBINDING), retransmitting after half the remaining time (RFC 2131 section
// 4.4.5). It stops when Detector finds a network manager renewing the lease itself, or when
// ctx ends.
//
// RFC 2131 says a client whose lease expires stops using the address. This one does not:
// the root file system is behind it and dropping it would stop the machine for certain,
// while keeping it only risks a conflict. So the Renewer never touches the address: at
// expiry it logs a critical line and keeps asking, and a server that answers again makes
// the lease valid again.
type Renewer struct {
	Spec      Spec
	Transport Transport
	Clock     Clock
	Link      Link
	// Detector is nil when no hand-off is looked for.
	Detector Detector
	// Log receives each message with its severity (Sev*).
	Log func(sev int, format string, args ...any)
	// Poll and AnswerWait default to DefaultPoll and DefaultAnswerWait.
	Poll, AnswerWait time.Duration

	// The lease as it stands.
	ip        net.IP
	hw        net.HardwareAddr
	server    net.IP
	lease     time.Duration
	t1, t2    time.Duration
	requested time.Duration
	// expiredSaid and nakSaid keep a lasting problem to one loud line until it changes.
	expiredSaid bool
	nakSaid     string
	// ownerSaid is the manager whose address differed from ours, said once.
	ownerSaid string
	// absentSaid is set once the address was reported missing.
	absentSaid bool
}

// phase is where in its lifetime the lease is.
type phase int

const (
	bound phase = iota
	renewing
	rebinding
	expired
)

func (p phase) String() string {
	return [...]string{"bound", "renewing", "rebinding", "expired"}[p]
}

// Run keeps the lease until a network manager takes it over (nil) or ctx ends (ctx's error).
func (r *Renewer) Run(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	if r.lease >= Infinite {
		r.Log(SevInfo, "%s: the lease of %s never ends: nothing to renew", r.Spec.Interface, r.ip)
		return nil
	}
	r.Log(SevInfo, "%s: keeping the DHCP lease of %s from %s (%s): renewal in %s", r.Spec.Interface, r.Spec.Address,
		r.server, r.lease, r.until(r.t1))
	next := r.requested + r.t1 // when the next request goes out
	for {
		if r.handedOver() {
			return nil
		}
		r.checkAddress()
		if now := r.Clock.Now(); now >= next {
			next = r.attempt(ctx, r.phase(now))
		}
		if err := r.Clock.Sleep(ctx, min(max(0, next-r.Clock.Now()), r.poll())); err != nil {
			return err
		}
	}
}

// start reads the Spec into the lease state.
func (r *Renewer) start() error {
	if err := r.Spec.Check(); err != nil {
		return err
	}
	ip, _, _ := net.ParseCIDR(r.Spec.Address)
	r.ip = ip.To4()
	r.hw, _ = net.ParseMAC(r.Spec.MAC)
	r.server = net.ParseIP(r.Spec.Server).To4()
	r.requested = r.Spec.Requested
	r.setTimes(r.Spec.Lease, r.Spec.Renewal, r.Spec.Rebinding)
	return nil
}

// setTimes sets the lease time and T1/T2, with RFC 2131's defaults for missing or
// inconsistent ones (T1 < T2 < lease).
func (r *Renewer) setTimes(lease, t1, t2 time.Duration) {
	r.lease = lease
	if t1 <= 0 || t1 >= lease {
		t1 = lease / 2
	}
	if t2 <= t1 || t2 >= lease {
		t2 = lease * 7 / 8
	}
	r.t1, r.t2 = t1, max(t2, t1)
}

func (r *Renewer) poll() time.Duration {
	if r.Poll > 0 {
		return r.Poll
	}
	return DefaultPoll
}

// answerWait is how long a request waits for its answer: AnswerWait, but no longer than
// the floor between retransmissions, so that a short lease gets each of its phases tried.
func (r *Renewer) answerWait() time.Duration {
	w := DefaultAnswerWait
	if r.AnswerWait > 0 {
		w = r.AnswerWait
	}
	return min(w, r.floor())
}

// until is how long from now until the lease's time t.
func (r *Renewer) until(t time.Duration) time.Duration {
	return max(0, r.requested+t-r.Clock.Now()).Round(time.Second)
}

func (r *Renewer) phase(now time.Duration) phase {
	switch since := now - r.requested; {
	case since < r.t1:
		return bound
	case since < r.t2:
		return renewing
	case since < r.lease:
		return rebinding
	}
	return expired
}

// floor is the shortest wait between two retransmissions: RFC 2131's 60 s, or an eighth of
// the lease when that is shorter (a 60 s floor would let a short lease expire untried).
func (r *Renewer) floor() time.Duration {
	return max(time.Second, min(60*time.Second, r.lease/8))
}

// attempt sends one request in phase p and returns when the next one goes out: at the new
// T1 after an ACK; otherwise after half the time left until T2 (RENEWING) or until the end of
// the lease (REBINDING), but at the latest when the next phase begins (RFC 2131 section
// 4.4.5), and every expiredRetry once the lease has run out.
func (r *Renewer) attempt(ctx context.Context, p phase) time.Duration {
	sent := r.Clock.Now()
	if p == expired && !r.expiredSaid {
		r.expiredSaid = true
		r.Log(SevCrit, "%s: DHCP LEASE OF %s EXPIRED: no DHCP server renewed it; the address stays, %s is behind it "+
			"(the server may give it to another machine); still asking every %s", r.Spec.Interface, r.ip, r.root(), r.expiredRetry())
	}
	dst := net.IPv4bcast
	if p == renewing {
		dst = r.server
	}
	ack, err := r.exchange(ctx, dst)
	now := r.Clock.Now()
	switch {
	case err == nil:
		r.accept(ack, sent, p)
		return r.requested + r.t1
	case ctx.Err() != nil:
		return now
	}
	var nak *nakError
	if errors.As(err, &nak) && nak.Error() != r.nakSaid {
		r.nakSaid = nak.Error()
		r.Log(SevCrit, "%s: %v; the address stays, %s is behind it (the server may give it to another machine)",
			r.Spec.Interface, err, r.root())
	}
	end := r.requested + r.lease
	switch p {
	case renewing:
		t2 := r.requested + r.t2
		next := min(t2, now+max(r.floor(), (t2-now)/2))
		if nak == nil {
			r.Log(SevWarning, "%s: no answer from %s to renew %s (%v); %s", r.Spec.Interface, r.server, r.ip, err, r.again(next, t2))
		}
		return next
	case rebinding:
		next := min(end, now+max(r.floor(), (end-now)/2))
		if nak == nil {
			r.Log(SevErr, "%s: no DHCP server renewed %s (%v); the lease ends in %s, again in %s", r.Spec.Interface, r.ip, err,
				max(0, end-now).Round(time.Second), max(0, next-now).Round(time.Second))
		}
		return next
	}
	return now + r.expiredRetry()
}

// again says when the next renewal goes out: after a wait, or at T2 to any server.
func (r *Renewer) again(next, t2 time.Duration) string {
	wait := max(0, next-r.Clock.Now()).Round(time.Second)
	if next >= t2 {
		return "from any server in " + wait.String() + " (T2)"
	}
	return "again in " + wait.String()
}

// expiredRetry is how often an expired lease is asked for again.
func (r *Renewer) expiredRetry() time.Duration {
	return max(r.floor(), min(60*time.Second, r.lease/2))
}

func (r *Renewer) root() string {
	if r.Spec.Root != "" {
		return "the root (" + r.Spec.Root + ")"
	}
	return "the root"
}

// nakError is a server's refusal.
type nakError struct {
	server net.IP
	ip     net.IP
	msg    string
}

func (e *nakError) Error() string {
	s := fmt.Sprintf("DHCP server %s REFUSED %s (DHCPNAK", e.server, e.ip)
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s + ")"
}

// exchange sends a DHCPREQUEST for the lease's address to dst and returns the ACK. The
// message is RFC 2131 table 5's RENEWING/REBINDING request: ciaddr set, neither requested
// address nor server identifier.
func (r *Renewer) exchange(ctx context.Context, dst net.IP) (*dhcpv4.DHCPv4, error) {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithHwAddr(r.hw),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(r.ip),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue),
	}
	if r.Spec.VendorClass != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(r.Spec.VendorClass)))
	}
	if r.Spec.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(r.Spec.Hostname)))
	}
	msg := NewMessage(TransactionID(r.hw), mods...)
	actx, cancel := context.WithTimeout(ctx, r.answerWait())
	defer cancel()
	ans, err := r.Transport.Exchange(actx, msg, dst)
	if err != nil {
		return nil, err
	}
	server := ans.ServerIdentifier()
	switch ans.MessageType() {
	case dhcpv4.MessageTypeNak:
		return nil, &nakError{server: server, ip: r.ip, msg: ans.Message()}
	case dhcpv4.MessageTypeAck:
	default:
		return nil, fmt.Errorf("answer is a %s, not an ACK", ans.MessageType())
	}
	if yi := ans.YourIPAddr.To4(); !yi.Equal(r.ip) {
		return nil, &nakError{server: server, ip: r.ip, msg: "it offers " + yi.String() + " instead"}
	}
	if server.To4() == nil {
		return nil, errors.New("the ACK has no server identifier (option 54)")
	}
	if ans.IPAddressLeaseTime(0) <= 0 {
		return nil, errors.New("the ACK has no lease time (option 51)")
	}
	return ans, nil
}

// accept takes the ACK to a request sent at sent in phase p as the new lease.
func (r *Renewer) accept(ack *dhcpv4.DHCPv4, sent time.Duration, p phase) {
	r.server = ack.ServerIdentifier().To4()
	r.requested = sent
	r.setTimes(ack.IPAddressLeaseTime(0), ack.IPAddressRenewalTime(0), ack.IPAddressRebindingTime(0))
	how := "renewed"
	switch p {
	case rebinding:
		how = "rebound"
	case expired:
		how = "regained after it expired"
	}
	sev := SevInfo
	if p == expired || r.nakSaid != "" {
		sev = SevWarning
	}
	r.expiredSaid, r.nakSaid = false, ""
	r.Log(sev, "%s: lease of %s %s by %s for %s; next renewal in %s", r.Spec.Interface, r.ip, how, r.server,
		r.lease, r.until(r.t1))
}

// handedOver looks for a network manager that renews the lease itself: one holding our
// address ends the Renewer; one holding another address is reported once, and the Renewer
// goes on (the root stays on our address, whose lease nobody else renews).
func (r *Renewer) handedOver() bool {
	if r.Detector == nil {
		return false
	}
	o, ok := r.Detector.Detect()
	if !ok {
		return false
	}
	if o.Address != nil && !o.Address.Equal(r.ip) {
		if r.ownerSaid != o.Manager+o.Address.String() {
			r.ownerSaid = o.Manager + o.Address.String()
			r.Log(SevCrit, "%s: %s holds a lease for %s, not for %s that %s uses (%s): nbdroot keeps renewing %s; "+
				"make the manager identify the client by its MAC address (docs/network.md)", r.Spec.Interface, o.Manager,
				o.Address, r.ip, r.root(), o.Evidence, r.ip)
		}
		return false
	}
	r.Log(SevInfo, "%s: lease of %s handed over to %s (%s): nbdroot no longer renews it", r.Spec.Interface, r.ip,
		o.Manager, o.Evidence)
	return true
}

// checkAddress reports, once, an address that vanished from the interface: someone removed
// it (a network manager told to flush foreign addresses); the root's connection dies with it.
func (r *Renewer) checkAddress() {
	if r.Link == nil {
		return
	}
	ok, err := r.Link.HasAddress(r.ip)
	if err != nil || ok {
		r.absentSaid = false
		return
	}
	if !r.absentSaid {
		r.absentSaid = true
		r.Log(SevCrit, "%s: THE ADDRESS %s WAS REMOVED from the interface: %s cannot be reached without it "+
			"(a network manager flushing foreign addresses? docs/network.md, After switch_root)", r.Spec.Interface, r.ip, r.root())
	}
}
