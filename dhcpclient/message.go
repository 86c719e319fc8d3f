package dhcpclient

import (
	"encoding/binary"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

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
	if insecureRandom(xid[:]) {
		return xid
	}
	h := uint64(time.Now().UnixNano()) ^ uint64(os.Getpid())<<32
	for _, b := range hw {
		h = h*1099511628211 ^ uint64(b)
	}
	binary.BigEndian.PutUint32(xid[:], uint32(h^h>>32))
	return xid
}
