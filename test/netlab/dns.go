//go:build linux

package netlab

import (
	"net"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer answers A queries for a fixed set of names, over UDP, authoritatively: what a
// boot client's resolver needs to find its NBD server by name.
type DNSServer struct {
	records map[string]net.IP // lower-case FQDN with the final dot → IPv4

	mu      sync.Mutex
	queries []string

	conn net.PacketConn
	done chan struct{}
}

// NewDNSServer returns a server for records (name → IPv4 address; names with or without the
// final dot) that is not listening yet.
func NewDNSServer(records map[string]string) *DNSServer {
	s := &DNSServer{records: map[string]net.IP{}, done: make(chan struct{})}
	for name, ip := range records {
		s.records[canonical(name)] = net.ParseIP(ip).To4()
	}
	return s
}

func canonical(name string) string {
	return strings.ToLower(strings.TrimSuffix(name, ".")) + "."
}

// StartDNS starts a DNS server on ServerIP:53 inside the lab. The test's cleanup stops it.
func (l *Lab) StartDNS(t testing.TB, records map[string]string) *DNSServer {
	t.Helper()
	s := NewDNSServer(records)
	err := l.Do(func() error {
		c, err := net.ListenPacket("udp4", net.JoinHostPort(ServerIP, "53"))
		s.conn = c
		return err
	})
	if err != nil {
		t.Fatalf("DNS server in %s: %v", l.Name, err)
	}
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and waits for its loop to end.
func (s *DNSServer) Close() {
	s.conn.Close()
	<-s.done
}

func (s *DNSServer) serve() {
	defer close(s.done)
	buf := make([]byte, 1500)
	for {
		n, peer, err := s.conn.ReadFrom(buf)
		if err != nil {
			return // closed
		}
		if resp, ok := s.Answer(buf[:n]); ok {
			s.conn.WriteTo(resp, peer)
		}
	}
}

// Queries returns the questions seen so far, as "NAME TYPE" (e.g. "nbd.lab.test. TypeA").
func (s *DNSServer) Queries() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.queries...)
}

// Answer builds the response to one query message; ok is false for what deserves no answer
// (not a query, unparseable). A known name gets its A record, or no record for other types
// (NODATA); an unknown name NXDOMAIN (RFC 1035 section 4.1.1). The answer is authoritative
// and says recursion is available, so that resolvers take it as final.
func (s *DNSServer) Answer(query []byte) (resp []byte, ok bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response || h.OpCode != 0 {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	name := strings.ToLower(q.Name.String())
	s.mu.Lock()
	s.queries = append(s.queries, name+" "+q.Type.String())
	s.mu.Unlock()

	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true,
		RecursionDesired: h.RecursionDesired, RecursionAvailable: true}
	ip, known := s.records[name]
	if !known || q.Class != dnsmessage.ClassINET {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, false
	}
	if err := b.Question(q); err != nil {
		return nil, false
	}
	if err := b.StartAnswers(); err != nil {
		return nil, false
	}
	if known && q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		var a dnsmessage.AResource
		copy(a.A[:], ip)
		err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, a)
		if err != nil {
			return nil, false
		}
	}
	out, err := b.Finish()
	if err != nil {
		return nil, false
	}
	return out, true
}
