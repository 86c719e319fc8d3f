//go:build linux

package netlab

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/server6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// The lab's IPv6: the servers' address on the bridge, a router advertiser (SLAAC, the
// routes, the M and O flags) and a DHCPv6 server, for IPv6-only boots.

// ServerIP6 is the servers' IPv6 address on the bridge, in Subnet6.
const ServerIP6 = "2001:db8::1"

// Subnet6 is the lab's IPv6 network: documentation space (RFC 3849), never routed.
var Subnet6 = netip.MustParsePrefix("2001:db8::/64")

// AddIPv6 puts ServerIP6/64 on the bridge, without duplicate address detection (nothing
// else has it), so servers can listen on it at once.
func (l *Lab) AddIPv6(t testing.TB) {
	t.Helper()
	if err := ip("-n", l.Name, "addr", "add", ServerIP6+"/64", "dev", Bridge, "nodad"); err != nil {
		t.Fatal(err)
	}
}

// RAConfig is what the lab's router advertises (RFC 4861 section 4.2). The zero value
// advertises nothing a host configures from; Prefix makes it a router of Subnet6-like
// networks.
type RAConfig struct {
	// Prefix is advertised on-link; with Autonomous, hosts make their address from it
	// (SLAAC).
	Prefix     netip.Prefix
	Autonomous bool
	// Managed and Other are the M and O flags: addresses, or other configuration, by DHCPv6.
	Managed, Other bool
	// RouterLifetime makes the router a default router; zero is none.
	RouterLifetime time.Duration
	// DNS and Search are the RDNSS and DNSSL options (RFC 8106).
	DNS    []netip.Addr
	Search []string
	// Interval is how often the advertisement is repeated unsolicited (default 2 s).
	Interval time.Duration
}

// StartRA runs a router advertiser on the bridge: it answers router solicitations and
// repeats its advertisement every Interval. The test's cleanup stops it.
func (l *Lab) StartRA(t testing.TB, cfg RAConfig) {
	t.Helper()
	if cfg.Interval == 0 {
		cfg.Interval = 2 * time.Second
	}
	var c *ndp.Conn
	err := l.Do(func() error {
		ifi, err := net.InterfaceByName(Bridge)
		if err != nil {
			return err
		}
		// From the unspecified address: the bridge's link-local one only comes with its
		// first port's carrier; the kernel picks it when each advertisement is sent.
		c, _, err = ndp.Listen(ifi, ndp.Unspecified)
		return err
	})
	if err != nil {
		t.Fatalf("router advertiser in %s: %v", l.Name, err)
	}
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeRouterSolicitation)
	c.SetICMPFilter(&f)
	ra := &ndp.RouterAdvertisement{CurrentHopLimit: 64, ManagedConfiguration: cfg.Managed, OtherConfiguration: cfg.Other,
		RouterLifetime: cfg.RouterLifetime}
	if cfg.Prefix.IsValid() {
		ra.Options = append(ra.Options, &ndp.PrefixInformation{PrefixLength: uint8(cfg.Prefix.Bits()), OnLink: true,
			AutonomousAddressConfiguration: cfg.Autonomous, ValidLifetime: time.Hour, PreferredLifetime: 30 * time.Minute,
			Prefix: cfg.Prefix.Addr()})
	}
	if len(cfg.DNS) > 0 {
		ra.Options = append(ra.Options, &ndp.RecursiveDNSServer{Lifetime: time.Hour, Servers: cfg.DNS})
	}
	if len(cfg.Search) > 0 {
		ra.Options = append(ra.Options, &ndp.DNSSearchList{Lifetime: time.Hour, DomainNames: cfg.Search})
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			msg, _, from, err := c.ReadFrom()
			if err != nil {
				return // closed
			}
			if _, ok := msg.(*ndp.RouterSolicitation); !ok {
				continue
			}
			dst := netip.IPv6LinkLocalAllNodes()
			if from.IsLinkLocalUnicast() {
				dst = from
			}
			c.WriteTo(ra, nil, dst)
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(cfg.Interval)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				c.WriteTo(ra, nil, netip.IPv6LinkLocalAllNodes())
			}
		}
	}()
	t.Cleanup(func() {
		close(done)
		c.Close()
		wg.Wait()
	})
}

// DHCP6Config is what the lab's DHCPv6 server hands out.
type DHCP6Config struct {
	// PoolStart is the first address given (default 2001:db8::100); each new client (by
	// DUID) gets the next.
	PoolStart netip.Addr
	// DNS (option 23), Search (24) and BootFileURL (59, the NBD root) are left out when
	// empty.
	DNS         []net.IP
	Search      []string
	BootFileURL string
	// ValidLifetime of the addresses (default 1 h).
	ValidLifetime time.Duration
}

// DHCP6Request is one message the DHCPv6 server saw.
type DHCP6Request struct {
	Type dhcpv6.MessageType
	// Client is the client identifier (DUID) as text.
	Client string
}

// DHCP6Server is the lab's DHCPv6 server: SOLICIT gets an ADVERTISE, REQUEST, RENEW and
// REBIND a REPLY with the client's address, INFORMATION-REQUEST a REPLY without one (RFC
// 8415 section 18.3).
type DHCP6Server struct {
	cfg DHCP6Config
	id  dhcpv6.DUID

	mu       sync.Mutex
	leases   map[string]netip.Addr
	next     netip.Addr
	requests []DHCP6Request

	srv *server6.Server
}

// StartDHCP6 runs a DHCPv6 server on the bridge (port 547, its multicast groups). The test's
// cleanup stops it.
func (l *Lab) StartDHCP6(t testing.TB, cfg DHCP6Config) *DHCP6Server {
	t.Helper()
	if !cfg.PoolStart.IsValid() {
		cfg.PoolStart = netip.MustParseAddr("2001:db8::100")
	}
	if cfg.ValidLifetime == 0 {
		cfg.ValidLifetime = time.Hour
	}
	s := &DHCP6Server{cfg: cfg, leases: map[string]netip.Addr{}, next: cfg.PoolStart}
	err := l.Do(func() error {
		ifi, err := net.InterfaceByName(Bridge)
		if err != nil {
			return err
		}
		s.id = &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: ifi.HardwareAddr}
		s.srv, err = server6.NewServer(Bridge, nil, s.handle)
		return err
	})
	if err != nil {
		t.Fatalf("DHCPv6 server in %s: %v", l.Name, err)
	}
	go s.srv.Serve()
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// Leases returns the addresses handed out, by client DUID.
func (s *DHCP6Server) Leases() map[string]netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]netip.Addr{}
	for k, v := range s.leases {
		out[k] = v
	}
	return out
}

// Requests returns the messages seen, in order.
func (s *DHCP6Server) Requests() []DHCP6Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]DHCP6Request(nil), s.requests...)
}

func (s *DHCP6Server) handle(conn net.PacketConn, peer net.Addr, d dhcpv6.DHCPv6) {
	msg, ok := d.(*dhcpv6.Message)
	if !ok {
		return
	}
	resp, err := s.Reply(msg)
	if err != nil || resp == nil {
		return
	}
	conn.WriteTo(resp.ToBytes(), peer)
}

// Reply answers one client message, nil for what the server does not answer.
func (s *DHCP6Server) Reply(msg *dhcpv6.Message) (*dhcpv6.Message, error) {
	cid := msg.Options.ClientID()
	if cid == nil {
		return nil, fmt.Errorf("%s without a client identifier", msg.MessageType)
	}
	client := cid.String()
	s.mu.Lock()
	s.requests = append(s.requests, DHCP6Request{Type: msg.MessageType, Client: client})
	s.mu.Unlock()
	mods := []dhcpv6.Modifier{dhcpv6.WithServerID(s.id)}
	if len(s.cfg.DNS) > 0 {
		mods = append(mods, dhcpv6.WithDNS(s.cfg.DNS...))
	}
	if len(s.cfg.Search) > 0 {
		mods = append(mods, dhcpv6.WithDomainSearchList(s.cfg.Search...))
	}
	if s.cfg.BootFileURL != "" {
		mods = append(mods, func(d dhcpv6.DHCPv6) { d.AddOption(dhcpv6.OptBootFileURL(s.cfg.BootFileURL)) })
	}
	withAddress := func() {
		ia := msg.Options.OneIANA()
		if ia == nil {
			return
		}
		a := s.address(client)
		mods = append(mods, func(d dhcpv6.DHCPv6) {
			d.AddOption(&dhcpv6.OptIANA{IaId: ia.IaId, T1: s.cfg.ValidLifetime / 2, T2: s.cfg.ValidLifetime * 4 / 5,
				Options: dhcpv6.IdentityOptions{Options: []dhcpv6.Option{&dhcpv6.OptIAAddress{IPv6Addr: net.IP(a.AsSlice()),
					PreferredLifetime: s.cfg.ValidLifetime / 2, ValidLifetime: s.cfg.ValidLifetime}}}})
		})
	}
	switch msg.MessageType {
	case dhcpv6.MessageTypeSolicit:
		withAddress()
		return dhcpv6.NewAdvertiseFromSolicit(msg, mods...)
	case dhcpv6.MessageTypeRequest, dhcpv6.MessageTypeRenew, dhcpv6.MessageTypeRebind:
		withAddress()
		return dhcpv6.NewReplyFromMessage(msg, mods...)
	case dhcpv6.MessageTypeInformationRequest:
		return dhcpv6.NewReplyFromMessage(msg, mods...)
	}
	return nil, nil
}

// address is the client's address: already leased, or the next of the pool.
func (s *DHCP6Server) address(client string) netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.leases[client]; ok {
		return a
	}
	a := s.next
	s.leases[client] = a
	s.next = a.Next()
	return a
}
