package nbdclient

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/nbdroot/nbdroot/nbd"
)

// This file holds the client side of nbdroot's client identity (CONTRACTS.md): the identity
// a machine presents, and the check that a reconnect is served the copy-on-write overlay
// the device was attached with — never another view of the disk.

// MACIdentity turns a hardware address (any form net.ParseMAC reads: "52:54:00:12:34:56",
// "52-54-00-12-34-56", "5254.0012.3456", any case) into the identity form of CONTRACTS.md:
// lower case, colon separated. An all-zero address (loopback, tunnels) names no machine and
// is an error.
func MACIdentity(mac string) (string, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return "", fmt.Errorf("%w: %q is not a MAC address", nbd.ErrBadIdentity, mac)
	}
	zero := true
	for _, b := range hw {
		zero = zero && b == 0
	}
	if zero {
		return "", fmt.Errorf("%w: %s is the all-zero address of an interface without one", nbd.ErrBadIdentity, hw)
	}
	id := hw.String()
	if err := nbd.ValidateIdentity(id); err != nil {
		return "", err
	}
	return id, nil
}

// ErrNoMAC reports that the interface towards a server has no hardware address to serve as
// the client's identity (loopback, a tunnel).
var ErrNoMAC = errors.New("no hardware address")

// RouteIdentity is the identity of this machine towards the server at addr (host:port, an
// IP address): the MAC address of the interface the kernel routes to it through. It sends
// nothing (a UDP socket is connected only to learn the source address). It returns the
// interface's name too, for messages; ErrNoMAC for an interface without one.
func RouteIdentity(addr string) (id, iface string, err error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return "", "", fmt.Errorf("route to %s: %w", addr, err)
	}
	local := c.LocalAddr().(*net.UDPAddr).IP
	c.Close()
	ifs, err := net.Interfaces()
	if err != nil {
		return "", "", err
	}
	for _, ifc := range ifs {
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.Equal(local) {
				if len(ifc.HardwareAddr) == 0 {
					return "", ifc.Name, fmt.Errorf("%s (%s): %w", ifc.Name, local, ErrNoMAC)
				}
				id, err := MACIdentity(ifc.HardwareAddr.String())
				if err != nil {
					return "", ifc.Name, fmt.Errorf("%s (%s): %w: %v", ifc.Name, local, ErrNoMAC, err)
				}
				return id, ifc.Name, nil
			}
		}
	}
	return "", "", fmt.Errorf("no interface has %s, the source address towards %s: %w", local, addr, ErrNoMAC)
}

// OverlayError is a server that cannot serve the copy-on-write overlay a device was
// attached with: it answered NBD_REP_ERR_NBDROOT_OVERLAY_GONE, or reported another overlay
// (or none) in its GO reply. Attaching that connection would show the file system another
// view of its disk, so the keeper refuses it.
type OverlayError struct {
	// Server is the host:port that answered; Client the identity sent.
	Server string
	Client string
	// Expected is the overlay of the device (zero: none); Offered what the server serves
	// (zero: none, or gone).
	Expected, Offered nbd.OverlayID
	// Gone says the server answered NBD_REP_ERR_NBDROOT_OVERLAY_GONE; Message is its text.
	Gone    bool
	Message string
	// Unidentified says the server did not take the identity (a server without nbdroot's
	// extension): it reports no overlay at all.
	Unidentified bool
}

// Error implements error: "NBD server S, client C: expected overlay U, offered V: why".
func (e *OverlayError) Error() string {
	var why string
	switch {
	case e.Gone:
		why = "the server answered " + nbd.RepName(nbd.RepErrNbdrootOverlayGone)
		if e.Message != "" {
			why += ": " + e.Message
		}
	case e.Unidentified:
		why = "the server does not take client identities, so it cannot serve an overlay by its ID"
	default:
		why = "another view of the disk"
	}
	return fmt.Sprintf("NBD server %s, client %s: expected %s, offered %s: %s",
		e.Server, clientName(e.Client), overlayPhrase(e.Expected), overlayPhrase(e.Offered), why)
}

func clientName(id string) string {
	if id == "" {
		return "without identity"
	}
	return id
}

// overlayName is an overlay ID for messages: its hex form, or "none".
func overlayName(id nbd.OverlayID) string {
	if id.IsZero() {
		return "none"
	}
	return id.String()
}

func overlayPhrase(id nbd.OverlayID) string {
	if id.IsZero() {
		return "no overlay"
	}
	return "overlay " + id.String()
}

// checkOverlay compares what a server reported (info) with the overlay a device expects.
func checkOverlay(addr string, client *nbd.ClientOption, expect nbd.OverlayID, info nbd.ExportInfo) error {
	if info.Overlay == expect {
		return nil
	}
	e := &OverlayError{Server: addr, Expected: expect, Offered: info.Overlay}
	if client != nil {
		e.Client = client.ID
		e.Unidentified = !info.HasOverlay
	}
	return e
}

// overlayGone turns a server's NBD_REP_ERR_NBDROOT_OVERLAY_GONE into an *OverlayError; other
// errors are returned as they are.
func overlayGone(addr string, client *nbd.ClientOption, err error) error {
	var oe *nbd.OptionError
	if !errors.As(err, &oe) || oe.Type != nbd.RepErrNbdrootOverlayGone {
		return err
	}
	e := &OverlayError{Server: addr, Gone: true, Message: strings.TrimSpace(oe.Message)}
	if client != nil {
		e.Client, e.Expected = client.ID, client.Overlay
	}
	return e
}
