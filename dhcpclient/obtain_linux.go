package dhcpclient

import (
	"context"
	"fmt"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
)

// Obtain runs DISCOVER/OFFER/REQUEST/ACK like nclient4's Client.Request, but with a
// transaction ID that never waits for the kernel's entropy pool (TransactionID).
//
// dhcpv4.New draws every transaction ID from getrandom or /dev/urandom, and in an initramfs
// both wait until the kernel's CRNG is initialised: since Linux 5.18 reading /dev/urandom
// first runs the jitter-entropy loop. That is seconds on a slow or virtual machine without a
// hardware RNG (measured: 2.5 s of a 4 s init phase under QEMU TCG). A DHCP transaction ID only
// has to differ between clients on one segment; GRND_INSECURE (Linux 5.6+), or failing that
// the MAC address mixed with the boot clock, does that without waiting.
func Obtain(ctx context.Context, c *nclient4.Client, mods ...dhcpv4.Modifier) (*dhcpv4.DHCPv4, error) {
	hw := c.InterfaceAddr()
	discover := NewMessage(TransactionID(hw), append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(hw),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover),
	}, mods...)...)
	offer, err := c.SendAndRead(ctx, c.RemoteAddr(), discover, nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
	if err != nil {
		return nil, fmt.Errorf("no DHCP offer: %w", err)
	}
	request := NewMessage(offer.TransactionID, append([]dhcpv4.Modifier{
		dhcpv4.WithReply(offer),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(offer.ClientIPAddr),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOptionCopied(offer, dhcpv4.OptionServerIdentifier),
	}, mods...)...)
	match := nclient4.IsAll(nclient4.IsCorrectServer(offer.ServerIdentifier()),
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
	ack, err := c.SendAndRead(ctx, c.RemoteAddr(), request, match)
	if err != nil {
		return nil, fmt.Errorf("no answer to DHCP request for %s from %s: %w", offer.YourIPAddr, offer.ServerIdentifier(), err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("DHCP server %s refused %s (NAK: %s)", offer.ServerIdentifier(), offer.YourIPAddr, ack.Message())
	}
	return ack, nil
}
