//go:build linux

package netlab

import (
	"net"
	"testing"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// ICMPv6 types of router discovery (RFC 4861 section 4).
const (
	routerSolicitation  = 133
	routerAdvertisement = 134
)

// StartRouterAdvertiser answers IPv6 router solicitations on the lab's bridge with a
// router advertisement that offers nothing: router lifetime 0, no prefix, no DHCPv6
// (RFC 4861 section 4.2). Boot firmware configures IPv6 beside IPv4 and waits for an
// answer before it goes on (QEMU's iPXE: 16 s of solicitations); this answer ends the wait.
// The test's cleanup stops it.
func (l *Lab) StartRouterAdvertiser(t testing.TB) {
	t.Helper()
	var conn *icmp.PacketConn
	err := l.Do(func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		conn = c
		return err
	})
	if err != nil {
		t.Fatalf("router advertiser in %s: %v", l.Name, err)
	}
	p := conn.IPv6PacketConn()
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(routerSolicitation)
	p.SetICMPFilter(&f)
	// RFC 4861 6.1.2: a router advertisement is sent with hop limit 255.
	p.SetHopLimit(255)
	p.SetMulticastHopLimit(255)
	p.SetControlMessage(ipv6.FlagInterface, true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		ra := []byte{routerAdvertisement, 0, 0, 0, // type, code, checksum (the kernel fills it in)
			0, 0, 0, 0, // current hop limit, flags (no M, no O), router lifetime 0
			0, 0, 0, 0, 0, 0, 0, 0} // reachable time, retransmission timer
		for {
			n, cm, from, err := p.ReadFrom(buf)
			if err != nil {
				return // closed
			}
			if n < 1 || buf[0] != routerSolicitation {
				continue
			}
			var wcm *ipv6.ControlMessage
			if cm != nil {
				wcm = &ipv6.ControlMessage{IfIndex: cm.IfIndex, HopLimit: 255}
			}
			dst := &net.IPAddr{IP: net.IPv6linklocalallnodes}
			if a, ok := from.(*net.IPAddr); ok && !a.IP.IsUnspecified() {
				dst = a
			}
			p.WriteTo(ra, wcm, dst)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
}
