package dhcpclient

import (
	"net"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/iana"
)

// Requested6 are the options a DHCPv6 client of nbdroot asks for (RFC 8415 section 21.7):
// name servers (23), the domain search list (24) and the boot file URL (59, RFC 5970), which
// names the NBD root as a DHCPv4 root-path does.
var Requested6 = []dhcpv6.OptionCode{dhcpv6.OptionDNSRecursiveNameServer, dhcpv6.OptionDomainSearchList, dhcpv6.OptionBootfileURL}

// NewMessage6 is a DHCPv6 client message of type t from the interface with hardware address
// hw: a transaction ID that does not wait for the kernel's entropy pool (dhcpv6.NewMessage
// draws one from crypto/rand), the client identifier DUID-LL (RFC 8415 section 11.4: stable
// across boots, as a thin client's identity must be), the elapsed time and the option
// request, then mods.
func NewMessage6(t dhcpv6.MessageType, hw net.HardwareAddr, mods ...dhcpv6.Modifier) *dhcpv6.Message {
	xid := TransactionID(hw)
	m := &dhcpv6.Message{MessageType: t, TransactionID: dhcpv6.TransactionID{xid[0], xid[1], xid[2]}}
	m.AddOption(dhcpv6.OptClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: hw}))
	m.AddOption(dhcpv6.OptElapsedTime(0))
	m.AddOption(dhcpv6.OptRequestedOption(Requested6...))
	for _, mod := range mods {
		mod(m)
	}
	return m
}

// IAID is the identity association of an interface: the last four bytes of its hardware
// address, as dhcpv6.NewSolicit chooses it.
func IAID(hw net.HardwareAddr) [4]byte {
	var id [4]byte
	if len(hw) >= 4 {
		copy(id[:], hw[len(hw)-4:])
	}
	return id
}
