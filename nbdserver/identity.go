package nbdserver

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// client is who is asking, as far as policy is concerned.
type client struct {
	// key is what the exclusive-writer lock and cow overlays are keyed by: the identity the
	// client sent (NBD_OPT_NBDROOT_CLIENT), or else its address (IP, or "unix:uid=N").
	key  ovstore.Client
	from string     // where it connects from: the IP address, or "unix:uid=N"
	addr netip.Addr // invalid for Unix-socket clients
	tls  bool
	// cert is the verified certificate the client presented (tls.go), nil for none.
	cert *certificate

	// identified says the client sent NBD_OPT_NBDROOT_CLIENT: its GO/INFO replies carry
	// the overlay ID. resume is the overlay it asked for (zero: a fresh boot).
	identified bool
	resume     nbd.OverlayID
}

// String names the client in logs and refusals: the address, or "IDENTITY (ADDRESS)".
func (c client) String() string {
	if c.identified {
		return fmt.Sprintf("%s (%s)", c.key.ID, c.from)
	}
	return c.from
}

// identify keys a new connection by its source address — the IP, not the port, so a
// client's reconnects and extra connections are one client — until it sends an identity.
func identify(nc net.Conn) client {
	var c client
	switch a := nc.RemoteAddr().(type) {
	case *net.TCPAddr:
		c.addr = a.AddrPort().Addr().Unmap()
		c.from = c.addr.String()
	case *net.UnixAddr:
		c.from = unixPeerID(nc)
	default:
		c.from = nc.RemoteAddr().String()
	}
	c.key = ovstore.Client{ID: c.from, ByAddress: true}
	return c
}

// clientOption handles NBD_OPT_NBDROOT_CLIENT: from now on the connection is keyed by the
// identity it names. Identity is not authentication: anyone may claim any identity.
func (c *conn) clientOption(data []byte) error {
	o, err := nbd.ParseClientOption(data)
	if err != nil {
		c.logf("refused %s %q: %v", nbd.OptName(nbd.OptNbdrootClient), truncate(string(data), 80), err)
		return c.reply(nbd.OptNbdrootClient, nbd.RepErrInvalid, []byte(err.Error()))
	}
	id := c.claim(o.ID)
	// An identity holds no more connections than an address may (slots.go).
	if r := c.claimIdentity(id); r != nil {
		return c.refuse(nbd.OptNbdrootClient, id, r)
	}
	c.client.key = ovstore.Client{ID: id}
	c.client.identified, c.client.resume = true, o.Overlay
	return c.reply(nbd.OptNbdrootClient, nbd.RepAck, nil)
}
