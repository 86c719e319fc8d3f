package dhcpclient

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"
)

// Obtain6 asks for one address (an IA_NA) by SOLICIT/ADVERTISE/REQUEST/REPLY (RFC 8415
// section 18.2) and returns the REPLY; a server's refusal (a status code other than
// Success, e.g. NoAddrsAvail) is an error that says so.
func Obtain6(ctx context.Context, c *nclient6.Client, hw net.HardwareAddr) (*dhcpv6.Message, error) {
	sol := NewMessage6(dhcpv6.MessageTypeSolicit, hw, dhcpv6.WithIAID(IAID(hw)))
	adv, err := c.SendAndRead(ctx, c.RemoteAddr(), sol, nclient6.IsMessageType(dhcpv6.MessageTypeAdvertise))
	if err != nil {
		return nil, fmt.Errorf("no DHCPv6 advertise: %w", err)
	}
	if err := refused6(adv); err != nil {
		return nil, err
	}
	sid, ia := adv.GetOneOption(dhcpv6.OptionServerID), adv.Options.OneIANA()
	if sid == nil || ia == nil {
		return nil, errors.New("the DHCPv6 advertise has no server identifier or no address (IA_NA)")
	}
	req := NewMessage6(dhcpv6.MessageTypeRequest, hw, func(d dhcpv6.DHCPv6) {
		d.AddOption(sid)
		d.AddOption(ia)
	})
	reply, err := c.SendAndRead(ctx, c.RemoteAddr(), req, nclient6.IsMessageType(dhcpv6.MessageTypeReply))
	if err != nil {
		return nil, fmt.Errorf("no answer to the DHCPv6 request: %w", err)
	}
	return reply, refused6(reply)
}

// Inform6 asks for configuration without an address (INFORMATION-REQUEST, RFC 8415 section
// 18.2.6): the name servers and boot file URL of a network whose addresses come from SLAAC.
func Inform6(ctx context.Context, c *nclient6.Client, hw net.HardwareAddr) (*dhcpv6.Message, error) {
	m := NewMessage6(dhcpv6.MessageTypeInformationRequest, hw)
	reply, err := c.SendAndRead(ctx, c.RemoteAddr(), m, nclient6.IsMessageType(dhcpv6.MessageTypeReply))
	if err != nil {
		return nil, fmt.Errorf("no answer to the DHCPv6 information request: %w", err)
	}
	return reply, refused6(reply)
}

// refused6 is the error of a status code other than Success, in the message or its IA_NA.
func refused6(m *dhcpv6.Message) error {
	st := m.Options.Status()
	if ia := m.Options.OneIANA(); st == nil && ia != nil {
		st = ia.Options.Status()
	}
	if st == nil || st.StatusCode == iana.StatusSuccess {
		return nil
	}
	return fmt.Errorf("the DHCPv6 server refused: %s (%s)", st.StatusCode, st.StatusMessage)
}
