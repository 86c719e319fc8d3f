//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// DHCPConfig is what the lab's DHCP server hands out. Zero fields are left out of the
// answers, except the address pool, netmask and lease time, which have defaults.
type DHCPConfig struct {
	// PoolStart is the first address given to a new client (default 10.77.0.100); each new
	// MAC address gets the next one. Fixed gives chosen clients a chosen address.
	PoolStart net.IP
	Fixed     map[string]net.IP
	// Router (option 3), DNS (option 6), Domain (option 15), MTU (option 26), RootPath
	// (option 17), BootFile (the file field) and LeaseTime (option 51, default 1 h).
	Router    net.IP
	DNS       []net.IP
	Domain    string
	MTU       int
	RootPath  string
	BootFile  string
	LeaseTime time.Duration
	// Hostnames gives clients, by MAC address, a host name (option 12).
	Hostnames map[string]string
	// NextServer is siaddr; default ServerIP.
	NextServer net.IP
	// Extra are options added to an OFFER or ACK as they are, by code, when the request's
	// parameter request list (option 55) names them — as ISC dhcpd and dnsmasq send options
	// beyond the basic ones: classless static routes (121), malformed values a client must
	// refuse.
	Extra map[uint8][]byte
}

// DHCPRequest is one request the server saw, for tests to check what clients asked.
type DHCPRequest struct {
	Type     dhcpv4.MessageType
	MAC      string
	Hostname string // option 12 sent by the client
	Class    string // option 60
	// ClientIP is ciaddr (nil when 0.0.0.0): set in a renewal; ServerID and RequestedIP are
	// options 54 and 50 (nil when absent). RFC 2131 table 5 tells the client's state by them.
	ClientIP    net.IP
	ServerID    net.IP
	RequestedIP net.IP
	// At is when the server received it.
	At time.Time
}

// DHCPServer is the lab's DHCPv4 server: RFC 2131 enough for a boot client — DISCOVER gets
// an OFFER, a REQUEST for the offered address an ACK, any other REQUEST a NAK. Answers are
// broadcast on the bridge, which every client receives (RFC 2131 section 4.1 allows it).
type DHCPServer struct {
	cfg      DHCPConfig
	serverID net.IP

	mu       sync.Mutex
	leases   map[string]net.IP
	next     net.IP
	requests []DHCPRequest

	conn net.PacketConn
	done chan struct{}
}

// NewDHCPServer returns a server for cfg that is not listening yet (Serve, or
// Lab.StartDHCP, does that); its answers come from serverID.
func NewDHCPServer(cfg DHCPConfig, serverID net.IP) *DHCPServer {
	if cfg.PoolStart == nil {
		cfg.PoolStart = net.IPv4(10, 77, 0, 100)
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = time.Hour
	}
	if cfg.NextServer == nil {
		cfg.NextServer = serverID
	}
	return &DHCPServer{cfg: cfg, serverID: serverID.To4(), leases: map[string]net.IP{},
		next: cfg.PoolStart.To4(), done: make(chan struct{})}
}

// StartDHCP starts a DHCP server on the lab's bridge (UDP port 67, inside the namespace).
// The test's cleanup stops it.
func (l *Lab) StartDHCP(t testing.TB, cfg DHCPConfig) *DHCPServer {
	t.Helper()
	s := NewDHCPServer(cfg, net.ParseIP(ServerIP))
	var conn net.PacketConn
	err := l.Do(func() error {
		c, err := server4.NewIPv4UDPConn(Bridge, &net.UDPAddr{Port: dhcpv4.ServerPort})
		conn = c
		return err
	})
	if err != nil {
		t.Fatalf("DHCP server in %s: %v", l.Name, err)
	}
	s.conn = conn
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its loop to end.
func (s *DHCPServer) Close() {
	s.conn.Close()
	<-s.done
}

func (s *DHCPServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		resp, err := s.Reply(req)
		if err != nil || resp == nil {
			continue
		}
		// RFC 2131 section 4.1: a client with an address (ciaddr, a renewal) gets its answer
		// there; one without, broadcast on the bridge.
		dst := net.IPv4bcast
		if ci := req.ClientIPAddr.To4(); ci != nil && !ci.IsUnspecified() {
			dst = ci
		}
		s.conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: dst, Port: dhcpv4.ClientPort})
	}
}

// Leases returns the addresses handed out, by MAC address.
func (s *DHCPServer) Leases() map[string]net.IP {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]net.IP{}
	for k, v := range s.leases {
		out[k] = v
	}
	return out
}

// Requests returns the requests seen so far, in order.
func (s *DHCPServer) Requests() []DHCPRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]DHCPRequest(nil), s.requests...)
}

// Reply answers one client message: an OFFER for a DISCOVER, an ACK or a NAK for a REQUEST,
// nothing (nil) for what a boot client does not send or a REQUEST meant for another server.
func (s *DHCPServer) Reply(req *dhcpv4.DHCPv4) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil, nil
	}
	if len(req.ClientHWAddr) != 6 {
		return nil, fmt.Errorf("hardware address %v is not Ethernet", req.ClientHWAddr)
	}
	mac := req.ClientHWAddr.String()
	t := req.MessageType()
	s.mu.Lock()
	s.requests = append(s.requests, DHCPRequest{Type: t, MAC: mac, Hostname: req.HostName(), Class: req.ClassIdentifier(),
		ClientIP: given(req.ClientIPAddr), ServerID: given(req.ServerIdentifier()), RequestedIP: given(req.RequestedIPAddress()),
		At: time.Now()})
	s.mu.Unlock()
	switch t {
	case dhcpv4.MessageTypeDiscover:
		ip, err := s.address(mac)
		if err != nil {
			return nil, err
		}
		return s.answer(req, dhcpv4.MessageTypeOffer, ip)
	case dhcpv4.MessageTypeRequest:
		// RFC 2131 section 4.3.2: a REQUEST naming another server's identifier is that
		// server's business; one for our offer, or a renewal (ciaddr), gets our verdict.
		if id := req.ServerIdentifier(); id != nil && !id.Equal(s.serverID) {
			return nil, nil
		}
		want := req.RequestedIPAddress()
		if want == nil || want.IsUnspecified() {
			want = req.ClientIPAddr
		}
		ip, err := s.address(mac)
		if err != nil {
			return nil, err
		}
		if !ip.Equal(want) {
			return s.answer(req, dhcpv4.MessageTypeNak, nil)
		}
		return s.answer(req, dhcpv4.MessageTypeAck, ip)
	}
	return nil, nil
}

// given is ip, or nil for 0.0.0.0 or none.
func given(ip net.IP) net.IP {
	if ip = ip.To4(); ip == nil || ip.IsUnspecified() {
		return nil
	}
	return ip
}

// address is the client's address: fixed, already leased, or the next of the pool.
func (s *DHCPServer) address(mac string) (net.IP, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ip, ok := s.cfg.Fixed[mac]; ok {
		s.leases[mac] = ip.To4()
		return ip.To4(), nil
	}
	if ip, ok := s.leases[mac]; ok {
		return ip, nil
	}
	ip := s.next
	if !Subnet.Contains(ip) || ip[3] == 255 {
		return nil, errors.New("address pool exhausted")
	}
	s.leases[mac] = ip
	s.next = net.IPv4(ip[0], ip[1], ip[2], ip[3]+1).To4()
	return ip, nil
}

func (s *DHCPServer) answer(req *dhcpv4.DHCPv4, t dhcpv4.MessageType, ip net.IP) (*dhcpv4.DHCPv4, error) {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverID)),
	}
	if t == dhcpv4.MessageTypeNak {
		return dhcpv4.NewReplyFromRequest(req, mods...)
	}
	c := s.cfg
	mods = append(mods,
		dhcpv4.WithYourIP(ip),
		dhcpv4.WithServerIP(c.NextServer),
		dhcpv4.WithNetmask(Subnet.Mask),
		dhcpv4.WithLeaseTime(uint32(c.LeaseTime/time.Second)),
	)
	if c.Router != nil {
		mods = append(mods, dhcpv4.WithRouter(c.Router))
	}
	if len(c.DNS) > 0 {
		mods = append(mods, dhcpv4.WithDNS(c.DNS...))
	}
	if c.Domain != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(c.Domain)))
	}
	if h := c.Hostnames[req.ClientHWAddr.String()]; h != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(h)))
	}
	if c.MTU != 0 {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{byte(c.MTU >> 8), byte(c.MTU)}))
	}
	if c.RootPath != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRootPath(c.RootPath)))
	}
	asked := map[uint8]bool{}
	// By number: OptionCodeList.Has compares the codes' types too (a GenericOptionCode is
	// not the named constant of the same number).
	for _, o := range req.ParameterRequestList() {
		asked[o.Code()] = true
	}
	for code, v := range c.Extra {
		if asked[code] {
			mods = append(mods, dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(code), v))
		}
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, err
	}
	resp.BootFileName = c.BootFile
	return resp, nil
}
