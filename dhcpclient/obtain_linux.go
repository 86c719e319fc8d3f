package dhcpclient

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"golang.org/x/sys/unix"
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

// NewMessage is dhcpv4.New without its blocking random transaction ID: a BOOTREQUEST with
// transaction ID xid, modified by mods.
func NewMessage(xid dhcpv4.TransactionID, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	d := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  make(net.HardwareAddr, 6),
		TransactionID: xid,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       make(dhcpv4.Options),
	}
	for _, m := range mods {
		m(d)
	}
	return d
}

// TransactionID returns 4 bytes that differ between clients and boots without waiting for
// entropy.
func TransactionID(hw net.HardwareAddr) dhcpv4.TransactionID {
	var xid dhcpv4.TransactionID
	if n, err := unix.Getrandom(xid[:], unix.GRND_INSECURE); err == nil && n == len(xid) {
		return xid
	}
	h := uint64(time.Now().UnixNano()) ^ uint64(os.Getpid())<<32
	for _, b := range hw {
		h = h*1099511628211 ^ uint64(b)
	}
	binary.BigEndian.PutUint32(xid[:], uint32(h^h>>32))
	return xid
}
