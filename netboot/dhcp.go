package netboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// DHCP modes.
const (
	// DHCPProxy answers PXE clients beside the network's own DHCP server, which keeps
	// handing out addresses: ProxyDHCP offers on port 67 and ProxyDHCP acks on port 4011
	// (PXE 2.1 specification, section 2.2).
	DHCPProxy = "proxy"
	// DHCPFull is the network's only DHCP server (an isolated lab): addresses from a
	// range, and the boot file for PXE clients.
	DHCPFull = "full"
)

// PXEPort is the PXE boot server port where ProxyDHCP requests arrive (PXE 2.1, 2.2.2).
const PXEPort = 4011

// Firmware is what a PXE client runs, from its client architecture (option 93, RFC 4578
// section 2.1; IANA "Processor Architecture Types").
type Firmware int

const (
	FirmwareUnknown Firmware = iota
	FirmwareBIOS             // x86 BIOS (arch 0)
	FirmwareUEFI64           // x86-64 UEFI (arch 7, and 9: EFI BC, which x86-64 firmware reports too)
	FirmwareUEFI32           // IA32 UEFI (arch 6)
	FirmwareARM64            // AArch64 UEFI (arch 11)
)

func (f Firmware) String() string {
	switch f {
	case FirmwareBIOS:
		return "BIOS"
	case FirmwareUEFI64:
		return "UEFI x86-64"
	case FirmwareUEFI32:
		return "UEFI IA32"
	case FirmwareARM64:
		return "UEFI ARM64"
	}
	return "unknown firmware"
}

// FirmwareOf maps option 93 to a Firmware. A client without option 93 is a BIOS PXE ROM
// from before RFC 4578.
func FirmwareOf(arch []iana.Arch) Firmware {
	if len(arch) == 0 {
		return FirmwareBIOS
	}
	switch arch[0] {
	case iana.INTEL_X86PC:
		return FirmwareBIOS
	case iana.EFI_X86_64, iana.EFI_BC:
		return FirmwareUEFI64
	case iana.EFI_IA32:
		return FirmwareUEFI32
	case iana.EFI_ARM64:
		return FirmwareARM64
	}
	return FirmwareUnknown
}

// Client is what a DHCP request tells about the machine asking.
type Client struct {
	MAC      net.HardwareAddr
	Firmware Firmware
	// Arch is option 93 as sent, for the log.
	Arch []iana.Arch
	// PXE: option 60 starts with "PXEClient" (a boot ROM).
	PXE bool
	// IPXE: the client is iPXE (user class "iPXE", option 77, or iPXE's encapsulated
	// option 175): it fetches its boot file over HTTP.
	IPXE bool
}

// ClientOf reads a request's client.
func ClientOf(req *dhcpv4.DHCPv4) Client {
	c := Client{MAC: req.ClientHWAddr, Arch: req.ClientArch()}
	c.Firmware = FirmwareOf(c.Arch)
	c.PXE = strings.HasPrefix(req.ClassIdentifier(), "PXEClient")
	for _, uc := range req.UserClass() {
		if uc == "iPXE" {
			c.IPXE = true
		}
	}
	if req.Options.Has(dhcpv4.GenericOptionCode(175)) {
		c.IPXE = true
	}
	return c
}

// describe is a client for the log: "52:54:00:12:34:56 (BIOS, iPXE)".
func (c Client) describe() string {
	kind := c.Firmware.String()
	if c.Firmware == FirmwareUnknown && len(c.Arch) > 0 {
		kind = fmt.Sprintf("client architecture %d", c.Arch[0])
	}
	if c.IPXE {
		kind += ", iPXE"
	}
	return fmt.Sprintf("%s (%s)", c.MAC, kind)
}

// Loaders: what a ROM that only speaks TFTP loads first.
const (
	// LoaderIPXE chains to iPXE (Debian's ipxe package: undionly.kpxe for BIOS,
	// snponly.efi for UEFI), which then fetches the export's boot.ipxe over HTTP.
	LoaderIPXE = "ipxe"
	// LoaderPXELinux serves pxelinux.0 to BIOS clients, which loads the kernel and
	// initramfs over TFTP as the seed does; UEFI clients still get iPXE.
	LoaderPXELinux = "pxelinux"
)

// Chain files in the TFTP namespace.
const (
	fileUndionly = "undionly.kpxe"
	fileSNPOnly  = "snponly.efi"
	filePXELinux = "pxelinux.0"
	fileLDLinux  = "ldlinux.c32"
)

// ErrNoBootFile is wrapped when a client gets no boot file (its firmware has none).
var ErrNoBootFile = errors.New("no boot file for this client")

// ChooseBootFile decides what a PXE client loads: iPXE gets the HTTP script URL scriptURL;
// others get a chain file over TFTP by firmware. loader is LoaderIPXE or LoaderPXELinux.
// With pxelinux every BIOS client, iPXE ROMs included, loads pxelinux.0, as in the seed.
func ChooseBootFile(c Client, loader, scriptURL string) (file string, overTFTP bool, err error) {
	if c.Firmware == FirmwareBIOS && loader == LoaderPXELinux {
		return filePXELinux, true, nil
	}
	if c.IPXE {
		if scriptURL == "" {
			return "", false, fmt.Errorf("%w: iPXE needs --http for its boot script", ErrNoBootFile)
		}
		return scriptURL, false, nil
	}
	switch c.Firmware {
	case FirmwareBIOS:
		return fileUndionly, true, nil
	case FirmwareUEFI64:
		// snponly.efi drives the NIC through the firmware's own driver (SNP), which
		// works on every NIC the firmware booted from.
		return fileSNPOnly, true, nil
	}
	return "", false, fmt.Errorf("%w: %s (Debian's ipxe package has x86 BIOS and x86-64 UEFI builds only)", ErrNoBootFile, c.Firmware)
}

// dhcpAnswer is what the DHCP logic needs from the server: the boot file for a client, and
// a log.
type dhcpAnswer interface {
	bootFile(c Client, serverIP net.IP) (file string, overTFTP bool, err error)
	logf(format string, args ...any)
}

// pxeVendorOptions is option 43 with PXE_DISCOVERY_CONTROL (tag 6) = 8: "use the boot file
// of this offer, no boot server discovery" (PXE 2.1, table 2-1), then the end tag.
var pxeVendorOptions = []byte{6, 1, 8, 255}

// proxyReply answers a PXE client's DISCOVER (on port 67: a ProxyDHCP offer) or REQUEST
// (on port 4011: a ProxyDHCP ack). It never gives an address: yiaddr stays 0 and the
// network's DHCP server answers the same DISCOVER with one. nil: not ours to answer.
func proxyReply(a dhcpAnswer, req *dhcpv4.DHCPv4, serverIP net.IP, pxePort bool) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil, nil
	}
	c := ClientOf(req)
	if !c.PXE {
		return nil, nil // not a boot ROM: the network's DHCP server deals with it
	}
	var typ dhcpv4.MessageType
	switch t := req.MessageType(); {
	case t == dhcpv4.MessageTypeDiscover && !pxePort:
		typ = dhcpv4.MessageTypeOffer
	case (t == dhcpv4.MessageTypeRequest || t == dhcpv4.MessageTypeInform) && pxePort:
		typ = dhcpv4.MessageTypeAck
	default:
		return nil, nil
	}
	file, _, err := a.bootFile(c, serverIP)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.describe(), err)
	}
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithServerIP(serverIP),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
		// The PXE specification has the server identify itself with the client's class.
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")),
	)
	if err != nil {
		return nil, err
	}
	resp.YourIPAddr = net.IPv4zero
	if uuid := req.Options.Get(dhcpv4.OptionClientMachineIdentifier); uuid != nil {
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionClientMachineIdentifier, uuid))
	}
	if c.Firmware == FirmwareBIOS {
		// BIOS ROMs load the file of the offer at once; UEFI firmware ignores such an
		// offer and asks again on port 4011, which is answered the same way.
		resp.UpdateOption(dhcpv4.OptGeneric(dhcpv4.OptionVendorSpecificInformation, pxeVendorOptions))
	}
	setBootFile(resp, file, serverIP)
	return resp, nil
}

// setBootFile puts the boot file into the file field (128 bytes) and option 67, and the
// TFTP server's name into sname.
func setBootFile(resp *dhcpv4.DHCPv4, file string, serverIP net.IP) {
	if len(file) < 128 {
		resp.BootFileName = file
	}
	resp.UpdateOption(dhcpv4.OptBootFileName(file))
	resp.ServerHostName = serverIP.String()
}

// LeasePool hands out addresses of a range in full DHCP mode (RFC 2131): each MAC address
// keeps its address while its lease lasts, and gets it back afterwards while nobody else
// took it. Leases live in memory: after a restart clients keep their addresses by asking
// for them again (INIT-REBOOT), which the pool grants when the address is free.
type LeasePool struct {
	First, Last net.IP // inclusive, IPv4
	Lease       time.Duration
	Exclude     net.IP // the server's own address, if inside the range

	mu     sync.Mutex
	byMAC  map[string]lease
	byAddr map[uint32]string
	now    func() time.Time
}

type lease struct {
	ip      uint32
	expires time.Time
}

func ip4(ip net.IP) uint32 { return binary.BigEndian.Uint32(ip.To4()) }

func ipOf(n uint32) net.IP {
	b := make(net.IP, 4)
	binary.BigEndian.PutUint32(b, n)
	return b
}

func (p *LeasePool) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

// free reports whether address n can be given to mac.
func (p *LeasePool) freeFor(n uint32, mac string, now time.Time) bool {
	if p.Exclude != nil && n == ip4(p.Exclude) || n < ip4(p.First) || n > ip4(p.Last) {
		return false
	}
	owner, taken := p.byAddr[n]
	return !taken || owner == mac || now.After(p.byMAC[owner].expires)
}

// Offer returns the address for mac: its current one, the one it asks for if free, or
// the first free one of the range.
func (p *LeasePool) Offer(mac string, want net.IP) (net.IP, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	now := p.clock()
	if l, ok := p.byMAC[mac]; ok {
		return ipOf(l.ip), nil
	}
	if want.To4() != nil && p.freeFor(ip4(want), mac, now) {
		return want.To4(), nil
	}
	for n := ip4(p.First); n <= ip4(p.Last) && n >= ip4(p.First); n++ {
		if p.freeFor(n, mac, now) {
			return ipOf(n), nil
		}
	}
	return nil, errors.New("address range exhausted")
}

// Commit grants mac the address ip (a REQUEST): false when someone else holds it.
func (p *LeasePool) Commit(mac string, ip net.IP) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	now := p.clock()
	if ip.To4() == nil || !p.freeFor(ip4(ip), mac, now) {
		return false
	}
	if old, ok := p.byMAC[mac]; ok && old.ip != ip4(ip) {
		delete(p.byAddr, old.ip)
	}
	if owner, ok := p.byAddr[ip4(ip)]; ok && owner != mac {
		delete(p.byMAC, owner) // expired
	}
	p.byMAC[mac] = lease{ip: ip4(ip), expires: now.Add(p.Lease)}
	p.byAddr[ip4(ip)] = mac
	return true
}

// Release ends mac's lease (a RELEASE or DECLINE).
func (p *LeasePool) Release(mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.init()
	if l, ok := p.byMAC[mac]; ok {
		delete(p.byAddr, l.ip)
		delete(p.byMAC, mac)
	}
}

func (p *LeasePool) init() {
	if p.byMAC == nil {
		p.byMAC, p.byAddr = map[string]lease{}, map[uint32]string{}
	}
}

// FullDHCP is the network configuration full DHCP mode hands out.
type FullDHCP struct {
	Pool    *LeasePool
	Netmask net.IPMask
	Router  net.IP
	DNS     []net.IP
}

// fullReply answers as the network's DHCP server (RFC 2131 section 4.3): an OFFER for a
// DISCOVER, an ACK or NAK for a REQUEST; RELEASE and DECLINE free the lease. PXE clients
// get their boot file; others (the nbdroot init's own DHCP, the booted system) only an
// address. nil: nothing to send.
func fullReply(a dhcpAnswer, cfg *FullDHCP, req *dhcpv4.DHCPv4, serverIP net.IP) (*dhcpv4.DHCPv4, error) {
	if req.OpCode != dhcpv4.OpcodeBootRequest || len(req.ClientHWAddr) != 6 {
		return nil, nil
	}
	mac := req.ClientHWAddr.String()
	c := ClientOf(req)
	var typ dhcpv4.MessageType
	var ip net.IP
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		var err error
		if ip, err = cfg.Pool.Offer(mac, req.RequestedIPAddress()); err != nil {
			return nil, fmt.Errorf("%s: %w", c.describe(), err)
		}
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// RFC 2131 4.3.2: a REQUEST naming another server's identifier chose that
		// server's offer; ours is withdrawn.
		if id := req.ServerIdentifier(); id != nil && !id.Equal(serverIP) {
			cfg.Pool.Release(mac)
			return nil, nil
		}
		ip = req.RequestedIPAddress()
		if ip == nil || ip.IsUnspecified() {
			ip = req.ClientIPAddr // RENEWING / REBINDING
		}
		typ = dhcpv4.MessageTypeAck
		if !cfg.Pool.Commit(mac, ip) {
			typ, ip = dhcpv4.MessageTypeNak, nil
		}
	case dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeDecline:
		cfg.Pool.Release(mac)
		return nil, nil
	default:
		return nil, nil
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverIP)),
	}
	if typ == dhcpv4.MessageTypeNak {
		return dhcpv4.NewReplyFromRequest(req, mods...)
	}
	mods = append(mods,
		dhcpv4.WithYourIP(ip),
		dhcpv4.WithServerIP(serverIP),
		dhcpv4.WithNetmask(cfg.Netmask),
		dhcpv4.WithLeaseTime(uint32(cfg.Pool.Lease/time.Second)),
	)
	if cfg.Router != nil {
		mods = append(mods, dhcpv4.WithRouter(cfg.Router))
	}
	if len(cfg.DNS) > 0 {
		mods = append(mods, dhcpv4.WithDNS(cfg.DNS...))
	}
	resp, err := dhcpv4.NewReplyFromRequest(req, mods...)
	if err != nil {
		return nil, err
	}
	if c.PXE || c.IPXE {
		file, _, err := a.bootFile(c, serverIP)
		if err != nil {
			// The address is still given: the machine may boot otherwise.
			a.logf("netboot: dhcp %s: %v", c.describe(), err)
		} else {
			setBootFile(resp, file, serverIP)
		}
	}
	return resp, nil
}

// replyAddr is where a reply goes (RFC 2131 section 4.1): to the relay agent if there is
// one, to the client's address if it has one, else broadcast.
func replyAddr(req *dhcpv4.DHCPv4, pxePort bool, from *net.UDPAddr) *net.UDPAddr {
	switch {
	case pxePort && from != nil:
		return from // a unicast ProxyDHCP request: answer where it came from
	case req.GatewayIPAddr != nil && !req.GatewayIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.GatewayIPAddr, Port: dhcpv4.ServerPort}
	case req.ClientIPAddr != nil && !req.ClientIPAddr.IsUnspecified():
		return &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	}
	return &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
}

// sameMAC reports whether two hardware addresses are equal.
func sameMAC(a, b net.HardwareAddr) bool { return bytes.Equal(a, b) }
