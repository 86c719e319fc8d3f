//go:build linux

package netlab

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/net/dns/dnsmessage"
)

var (
	macA = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x01}
	macB = net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x02}
)

func discover(t *testing.T, mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDHCPReply(t *testing.T) {
	server := net.IPv4(10, 77, 0, 1).To4()
	s := NewDHCPServer(DHCPConfig{
		Router: server, DNS: []net.IP{server}, Domain: "lab.test", MTU: 1400,
		RootPath: "nbd:10.77.0.1:10809", BootFile: "pxelinux.0",
		Hostnames: map[string]string{macA.String(): "thin-a"},
		Fixed:     map[string]net.IP{macB.String(): net.IPv4(10, 77, 0, 42)},
	}, server)

	offer, err := s.Reply(discover(t, macA, dhcpv4.WithOption(dhcpv4.OptHostName("asked")),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("nbdroot"))))
	if err != nil || offer == nil {
		t.Fatalf("DISCOVER: %v, %v", offer, err)
	}
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 77, 0, 100)) {
		t.Fatalf("DISCOVER answered %s", offer.Summary())
	}
	got := map[string]string{
		"mask": net.IP(offer.SubnetMask()).String(), "router": offer.Router()[0].String(), "dns": offer.DNS()[0].String(),
		"domain": offer.DomainName(), "host": offer.HostName(), "rootpath": offer.RootPath(),
		"siaddr": offer.ServerIPAddr.String(), "server-id": offer.ServerIdentifier().String(),
		"file": offer.BootFileName, "lease": offer.IPAddressLeaseTime(0).String(),
	}
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, offer.Options); err == nil {
		got["mtu"] = time.Duration(mtu).String()
	}
	want := map[string]string{"mask": "255.255.255.0", "router": "10.77.0.1", "dns": "10.77.0.1", "domain": "lab.test",
		"host": "thin-a", "rootpath": "nbd:10.77.0.1:10809", "siaddr": "10.77.0.1", "server-id": "10.77.0.1",
		"file": "pxelinux.0", "lease": "1h0m0s", "mtu": time.Duration(1400).String()}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("OFFER (-want +got):\n%s", diff)
	}

	req, err := dhcpv4.NewRequestFromOffer(offer)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := s.Reply(req)
	if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		t.Fatalf("REQUEST for the offer answered %v (%v)", ack, err)
	}

	// A second client gets its fixed address; a third one the next of the pool.
	if o, _ := s.Reply(discover(t, macB)); o == nil || !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 42)) {
		t.Errorf("fixed client offered %v", o)
	}
	macC := net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, 0x00, 0x03}
	if o, _ := s.Reply(discover(t, macC)); o == nil || !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 101)) || o.HostName() != "" {
		t.Errorf("third client offered %v", o)
	}

	// A REQUEST for another address is refused; one for another server is not ours.
	wrong, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 77, 0, 7))))
	if nak, _ := s.Reply(wrong); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for another address answered %v, want a NAK", nak)
	}
	other, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 254))))
	if r, _ := s.Reply(other); r != nil {
		t.Errorf("REQUEST for another server answered %s", r.Summary())
	}

	if diff := cmp.Diff(map[string]net.IP{macA.String(): net.IPv4(10, 77, 0, 100).To4(),
		macB.String(): net.IPv4(10, 77, 0, 42).To4(), macC.String(): net.IPv4(10, 77, 0, 101).To4()}, s.Leases()); diff != "" {
		t.Errorf("leases (-want +got):\n%s", diff)
	}
	first := s.Requests()[0]
	first.At = time.Time{}
	if diff := cmp.Diff(DHCPRequest{Type: dhcpv4.MessageTypeDiscover, MAC: macA.String(), Hostname: "asked", Class: "nbdroot"}, first); diff != "" {
		t.Errorf("first request recorded (-want +got):\n%s", diff)
	}
}

func query(t testing.TB, name string, typ dnsmessage.Type) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 0x1234, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET})
	msg, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

func TestDNSAnswer(t *testing.T) {
	s := NewDNSServer(map[string]string{"nbd.lab.test": "10.77.0.1"})
	tests := []struct {
		name     string
		query    []byte
		wantOK   bool
		wantCode dnsmessage.RCode
		wantA    []string
	}{
		{name: "A of a known name", query: query(t, "nbd.lab.test.", dnsmessage.TypeA), wantOK: true, wantA: []string{"10.77.0.1"}},
		{name: "names are case-insensitive", query: query(t, "NBD.Lab.Test.", dnsmessage.TypeA), wantOK: true, wantA: []string{"10.77.0.1"}},
		{name: "AAAA of a known name is NODATA", query: query(t, "nbd.lab.test.", dnsmessage.TypeAAAA), wantOK: true},
		{name: "unknown name", query: query(t, "other.lab.test.", dnsmessage.TypeA), wantOK: true, wantCode: dnsmessage.RCodeNameError},
		{name: "garbage", query: []byte{1, 2, 3}},
		{name: "a response is not answered", query: func() []byte {
			m := query(t, "nbd.lab.test.", dnsmessage.TypeA)
			m[2] |= 0x80
			return m
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, ok := s.Answer(tt.query)
			if ok != tt.wantOK {
				t.Fatalf("answered %v, want %v", ok, tt.wantOK)
			}
			if !ok {
				return
			}
			var m dnsmessage.Message
			if err := m.Unpack(resp); err != nil {
				t.Fatal(err)
			}
			if m.ID != 0x1234 || !m.Response || !m.Authoritative || m.RCode != tt.wantCode {
				t.Errorf("header %+v, want ID 0x1234, an authoritative response, rcode %v", m.Header, tt.wantCode)
			}
			var as []string
			for _, a := range m.Answers {
				if r, ok := a.Body.(*dnsmessage.AResource); ok {
					as = append(as, net.IP(r.A[:]).String())
				}
			}
			if diff := cmp.Diff(tt.wantA, as); diff != "" {
				t.Errorf("A records (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzDNSAnswer: whatever arrives on port 53, the answer logic neither panics nor answers
// with something unparseable.
func FuzzDNSAnswer(f *testing.F) {
	f.Add(query(f, "nbd.lab.test.", dnsmessage.TypeA))
	f.Add(query(f, "x.", dnsmessage.TypeAAAA))
	s := NewDNSServer(map[string]string{"nbd.lab.test": "10.77.0.1"})
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, ok := s.Answer(b)
		if !ok {
			return
		}
		var m dnsmessage.Message
		if err := m.Unpack(resp); err != nil {
			t.Fatalf("unparseable answer to %x: %v", b, err)
		}
	})
}

// FuzzDHCPReply: whatever arrives on port 67, the server neither panics nor answers with
// a message of the wrong kind.
func FuzzDHCPReply(f *testing.F) {
	d, _ := dhcpv4.NewDiscovery(macA)
	f.Add(d.ToBytes())
	r, _ := dhcpv4.NewRequestFromOffer(d)
	f.Add(r.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		s := NewDHCPServer(DHCPConfig{}, net.IPv4(10, 77, 0, 1))
		resp, err := s.Reply(req)
		if err != nil || resp == nil {
			return
		}
		switch resp.MessageType() {
		case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck:
			if !Subnet.Contains(resp.YourIPAddr) {
				t.Fatalf("offered %v outside the lab", resp.YourIPAddr)
			}
		case dhcpv4.MessageTypeNak:
		default:
			t.Fatalf("answered a %v", resp.MessageType())
		}
	})
}

// TestLab builds a lab and uses every server in it from a client interface inside: DHCP
// through nclient4 (what the init uses), DNS through Go's resolver, and nbdroot serve.
func TestLab(t *testing.T) {
	Need(t)
	t.Parallel()
	l := New(t)
	for _, step := range [][]string{
		{"link", "add", "c0", "type", "veth", "peer", "name", "c0p"},
		{"link", "set", "c0p", "master", Bridge, "up"},
		{"link", "set", "c0", "up"},
	} {
		if err := ip(append([]string{"-n", l.Name}, step...)...); err != nil {
			t.Fatal(err)
		}
	}
	tap := l.AddTap(t)
	server := net.ParseIP(ServerIP).To4()
	dhcp := l.StartDHCP(t, DHCPConfig{Router: server, DNS: []net.IP{server}, Domain: "lab.test", RootPath: "nbd:10.77.0.1:10809"})
	dns := l.StartDNS(t, map[string]string{"nbd.lab.test": ServerIP})

	// Nothing but the lab's own links: no way out to the host's network.
	out, err := l.Run("ip", "-o", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(line)
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		links = append(links, name)
	}
	sort.Strings(links)
	if diff := cmp.Diff([]string{Bridge, "c0", "c0p", "lo", tap}, links); diff != "" {
		t.Errorf("links in the lab (-want +got):\n%s", diff)
	}

	var client *nclient4.Client
	if err := l.Do(func() (err error) {
		client, err = nclient4.New("c0", nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lease, err := client.Request(ctx)
	if err != nil {
		t.Fatalf("DHCP from the lab: %v", err)
	}
	if ack := lease.ACK; !ack.YourIPAddr.Equal(net.IPv4(10, 77, 0, 100)) || ack.RootPath() != "nbd:10.77.0.1:10809" || ack.DomainName() != "lab.test" {
		t.Errorf("ACK: %s", ack.Summary())
	}
	if len(dhcp.Leases()) != 1 {
		t.Errorf("server leases: %v", dhcp.Leases())
	}

	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, address string) (c net.Conn, err error) {
		err = l.Do(func() error {
			c, err = (&net.Dialer{}).DialContext(ctx, "udp4", net.JoinHostPort(ServerIP, "53"))
			return err
		})
		return c, err
	}}
	addrs, err := r.LookupHost(ctx, "nbd.lab.test")
	if err != nil || len(addrs) != 1 || addrs[0] != ServerIP {
		t.Errorf("LookupHost(nbd.lab.test) = %v, %v; want [%s]", addrs, err, ServerIP)
	}
	if _, err := r.LookupHost(ctx, "missing.lab.test"); err == nil {
		t.Error("an unknown name resolved")
	}
	if len(dns.Queries()) == 0 {
		t.Error("the DNS server saw no query")
	}

	bin := buildNBDRoot(t)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := l.StartNBDServer(t, bin, "--export", "root="+img)
	if !strings.HasPrefix(srv.Addr, ServerIP+":") || srv.Port == 0 {
		t.Fatalf("server listens on %q", srv.Addr)
	}
	var conn net.Conn
	if err := l.Do(func() (err error) {
		conn, err = net.DialTimeout("tcp4", srv.Addr, 10*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to nbdroot serve in the lab: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	magic := make([]byte, 8)
	if _, err := io.ReadFull(conn, magic); err != nil || string(magic) != "NBDMAGIC" {
		t.Errorf("server greeting %q, %v; want NBDMAGIC", magic, err)
	}
}

// buildNBDRoot returns the nbdroot binary: NBDROOT_BUILD's, else one built for this test.
func buildNBDRoot(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("NBDROOT_BUILD"); b != "" {
		return filepath.Join(b, "nbdroot")
	}
	bin := filepath.Join(t.TempDir(), "nbdroot")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/nbdroot/nbdroot/cmd/nbdroot")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build nbdroot: %v\n%s", err, out)
	}
	return bin
}

func TestDHCP6Reply(t *testing.T) {
	s := &DHCP6Server{cfg: DHCP6Config{PoolStart: netip.MustParseAddr("2001:db8::100"), ValidLifetime: time.Hour,
		DNS: []net.IP{net.ParseIP(ServerIP6)}, BootFileURL: "nbd://[2001:db8::1]:10809/root"},
		id: &dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: macB}, leases: map[string]netip.Addr{}, next: netip.MustParseAddr("2001:db8::100")}
	sol, err := dhcpv6.NewSolicit(macA)
	if err != nil {
		t.Fatal(err)
	}
	adv, err := s.Reply(sol)
	if err != nil || adv.MessageType != dhcpv6.MessageTypeAdvertise {
		t.Fatalf("SOLICIT answered %v, %v", adv, err)
	}
	a := adv.Options.OneIANA().Options.OneAddress()
	if a == nil || !a.IPv6Addr.Equal(net.ParseIP("2001:db8::100")) || a.ValidLifetime != time.Hour {
		t.Errorf("advertised %v", a)
	}
	req, err := dhcpv6.NewRequestFromAdvertise(adv)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := s.Reply(req)
	if err != nil || rep.MessageType != dhcpv6.MessageTypeReply || !rep.Options.OneIANA().Options.OneAddress().IPv6Addr.Equal(a.IPv6Addr) ||
		rep.Options.BootFileURL() != "nbd://[2001:db8::1]:10809/root" || len(rep.Options.DNS()) != 1 {
		t.Errorf("REQUEST answered %v, %v", rep, err)
	}
	// Another client gets the next address; the first keeps its own.
	sol2, _ := dhcpv6.NewSolicit(macB)
	if adv2, _ := s.Reply(sol2); !adv2.Options.OneIANA().Options.OneAddress().IPv6Addr.Equal(net.ParseIP("2001:db8::101")) {
		t.Errorf("second client advertised %v", adv2)
	}
	if len(s.Leases()) != 2 || len(s.Requests()) != 3 {
		t.Errorf("leases %v, requests %v", s.Leases(), s.Requests())
	}
}
