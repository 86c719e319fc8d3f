package netboot

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var (
	serverIP = net.IPv4(10, 77, 0, 1).To4()
	macA     = net.HardwareAddr{0x52, 0x54, 0x00, 0x4e, 0x42, 0x01}
	uuid     = append([]byte{0}, []byte("0123456789abcdef")...)
)

// pxeDiscover is a PXE ROM's DISCOVER: option 60 PXEClient:Arch:…, option 93, option 97,
// and for iPXE the user class.
func pxeDiscover(t testing.TB, arch iana.Arch, ipxe bool, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	mods = append([]dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(fmt.Sprintf("PXEClient:Arch:%05d:UNDI:002001", arch))),
		dhcpv4.WithOption(dhcpv4.OptClientArch(arch)),
		dhcpv4.WithGeneric(dhcpv4.OptionClientMachineIdentifier, uuid),
	}, mods...)
	if ipxe {
		// iPXE sends the bare string, not RFC 3004's length-prefixed form.
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")))
	}
	d, err := dhcpv4.NewDiscovery(macA, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// fakeAnswer is the Server's part of DHCP, without sockets.
type fakeAnswer struct {
	loader string
	script string
	logs   []string
}

func (f *fakeAnswer) bootFile(c Client, ip net.IP) (string, bool, error) {
	return ChooseBootFile(c, f.loader, f.script)
}
func (f *fakeAnswer) logf(format string, args ...any) {
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}

// TestFirmware: option 93 decides the boot file; iPXE gets the script instead of a chain
// file; pxelinux mode sends every BIOS client to pxelinux.0.
func TestFirmware(t *testing.T) {
	const url = "http://10.77.0.1:8080/boot.ipxe"
	tests := []struct {
		name     string
		arch     iana.Arch
		ipxe     bool
		loader   string
		want     string
		wantTFTP bool
		wantErr  bool
	}{
		{"BIOS ROM", iana.INTEL_X86PC, false, LoaderIPXE, "undionly.kpxe", true, false},
		{"BIOS iPXE", iana.INTEL_X86PC, true, LoaderIPXE, url, false, false},
		{"UEFI x86-64", iana.EFI_X86_64, false, LoaderIPXE, "snponly.efi", true, false},
		{"UEFI as EFI BC (arch 9)", iana.EFI_BC, false, LoaderIPXE, "snponly.efi", true, false},
		{"UEFI iPXE", iana.EFI_X86_64, true, LoaderIPXE, url, false, false},
		{"UEFI IA32", iana.EFI_IA32, false, LoaderIPXE, "", false, true},
		{"ARM64", iana.EFI_ARM64, false, LoaderIPXE, "", false, true},
		{"unknown architecture", iana.Arch(99), false, LoaderIPXE, "", false, true},
		{"BIOS ROM, pxelinux", iana.INTEL_X86PC, false, LoaderPXELinux, "pxelinux.0", true, false},
		{"BIOS iPXE, pxelinux", iana.INTEL_X86PC, true, LoaderPXELinux, "pxelinux.0", true, false},
		{"UEFI, pxelinux", iana.EFI_X86_64, false, LoaderPXELinux, "snponly.efi", true, false},
		{"UEFI iPXE, pxelinux", iana.EFI_X86_64, true, LoaderPXELinux, url, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ClientOf(pxeDiscover(t, tt.arch, tt.ipxe))
			if !c.PXE || c.IPXE != tt.ipxe {
				t.Fatalf("client %+v", c)
			}
			file, tftp, err := ChooseBootFile(c, tt.loader, url)
			if (err != nil) != tt.wantErr || file != tt.want || tftp != tt.wantTFTP {
				t.Errorf("ChooseBootFile = %q, %v, %v; want %q, %v, error %v", file, tftp, err, tt.want, tt.wantTFTP, tt.wantErr)
			}
		})
	}
	// Option 175 alone marks iPXE too; no option 93 is a pre-RFC 4578 BIOS ROM.
	d, _ := dhcpv4.NewDiscovery(macA, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient")), dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(175), []byte{19, 1, 1}))
	if c := ClientOf(d); !c.IPXE || c.Firmware != FirmwareBIOS {
		t.Errorf("option 175 client: %+v", c)
	}
}

// TestProxyReply: a ProxyDHCP offer never carries an address, echoes the client's UUID,
// names us as server and TFTP server; REQUESTs on 4011 get the same as an ACK; clients that
// are not booting, and REQUESTs on port 67, are the real DHCP server's.
func TestProxyReply(t *testing.T) {
	a := &fakeAnswer{loader: LoaderIPXE, script: "http://10.77.0.1:8080/boot.ipxe"}
	offer, err := proxyReply(a, pxeDiscover(t, iana.INTEL_X86PC, false), serverIP, false)
	if err != nil || offer == nil {
		t.Fatalf("DISCOVER: %v, %v", offer, err)
	}
	got := map[string]string{
		"type": offer.MessageType().String(), "yiaddr": offer.YourIPAddr.String(), "siaddr": offer.ServerIPAddr.String(),
		"server-id": offer.ServerIdentifier().String(), "class": offer.ClassIdentifier(), "file": offer.BootFileName,
		"opt67": offer.BootFileNameOption(), "sname": offer.ServerHostName,
		"uuid":  string(offer.Options.Get(dhcpv4.OptionClientMachineIdentifier)),
		"opt43": fmt.Sprint(offer.Options.Get(dhcpv4.OptionVendorSpecificInformation)),
	}
	want := map[string]string{"type": "OFFER", "yiaddr": "0.0.0.0", "siaddr": "10.77.0.1", "server-id": "10.77.0.1",
		"class": "PXEClient", "file": "undionly.kpxe", "opt67": "undionly.kpxe", "sname": "10.77.0.1", "uuid": string(uuid), "opt43": "[6 1 8 255]"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("BIOS offer (-want +got):\n%s", diff)
	}

	ipxe, _ := proxyReply(a, pxeDiscover(t, iana.INTEL_X86PC, true), serverIP, false)
	if ipxe == nil || ipxe.BootFileName != a.script {
		t.Errorf("iPXE offer: %v", ipxe)
	}
	uefi, _ := proxyReply(a, pxeDiscover(t, iana.EFI_X86_64, false), serverIP, false)
	if uefi == nil || uefi.BootFileName != "snponly.efi" || uefi.Options.Has(dhcpv4.OptionVendorSpecificInformation) {
		t.Errorf("UEFI offer (no option 43: UEFI asks again on 4011): %v", uefi)
	}

	req, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	req.ClientIPAddr = net.IPv4(10, 77, 0, 100)
	ack, err := proxyReply(a, req, serverIP, true)
	if err != nil || ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "undionly.kpxe" || !ack.YourIPAddr.IsUnspecified() {
		t.Errorf("REQUEST on 4011: %v, %v", ack, err)
	}
	if to := replyAddr(req, true, &net.UDPAddr{IP: req.ClientIPAddr, Port: 68}); to.Port != 68 || !to.IP.Equal(req.ClientIPAddr) {
		t.Errorf("4011 answer goes to %v", to)
	}
	if r, _ := proxyReply(a, req, serverIP, false); r != nil {
		t.Errorf("REQUEST on port 67 answered: %v", r.Summary())
	}
	if r, _ := proxyReply(a, pxeDiscover(t, iana.INTEL_X86PC, false), serverIP, true); r != nil {
		t.Errorf("DISCOVER on port 4011 answered: %v", r.Summary())
	}
	plain, _ := dhcpv4.NewDiscovery(macA)
	if r, _ := proxyReply(a, plain, serverIP, false); r != nil {
		t.Errorf("a client that is not booting was answered: %v", r.Summary())
	}
	if _, err := proxyReply(a, pxeDiscover(t, iana.EFI_ARM64, false), serverIP, false); err == nil {
		t.Error("ARM64 client: no error")
	}
}

// TestFullReply: full mode leases addresses from the range and gives PXE clients their
// boot file; the init's own DHCP (not a PXE client) gets the same address, without one.
func TestFullReply(t *testing.T) {
	a := &fakeAnswer{loader: LoaderIPXE, script: "http://10.77.0.1:8080/boot.ipxe"}
	clock := time.Unix(1000, 0)
	pool := &LeasePool{First: net.IPv4(10, 77, 0, 100), Last: net.IPv4(10, 77, 0, 101), Lease: time.Hour, Exclude: net.IPv4(10, 77, 0, 100),
		now: func() time.Time { return clock }}
	cfg := &FullDHCP{Pool: pool, Netmask: net.CIDRMask(24, 32), Router: serverIP, DNS: []net.IP{serverIP}}
	offer, err := fullReply(a, cfg, pxeDiscover(t, iana.INTEL_X86PC, false), serverIP)
	if err != nil || offer == nil {
		t.Fatalf("DISCOVER: %v, %v", offer, err)
	}
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.IPv4(10, 77, 0, 101)) ||
		offer.BootFileName != "undionly.kpxe" || !offer.ServerIPAddr.Equal(serverIP) || offer.ClassIdentifier() != "" {
		t.Fatalf("offer %s", offer.Summary())
	}
	req, _ := dhcpv4.NewRequestFromOffer(offer)
	ack, _ := fullReply(a, cfg, req, serverIP)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(offer.YourIPAddr) ||
		ack.IPAddressLeaseTime(0) != time.Hour || net.IP(ack.SubnetMask()).String() != "255.255.255.0" {
		t.Fatalf("ack %v", ack)
	}
	// The init's DHCP later: same MAC, not a PXE client: same address, no boot file.
	d, _ := dhcpv4.NewDiscovery(macA)
	o2, _ := fullReply(a, cfg, d, serverIP)
	if o2 == nil || !o2.YourIPAddr.Equal(offer.YourIPAddr) || o2.BootFileName != "" {
		t.Errorf("the init's DISCOVER: %v", o2)
	}
	// Another client: the range (less the server's address) is exhausted.
	macB := net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 2}
	d2, _ := dhcpv4.NewDiscovery(macB)
	if _, err := fullReply(a, cfg, d2, serverIP); err == nil {
		t.Error("exhausted range: no error")
	}
	// A REQUEST for someone else's address is refused; after the lease expires it is free.
	r2, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithHwAddr(macB))
	if nak, _ := fullReply(a, cfg, r2, serverIP); nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("REQUEST for a leased address: %v", nak)
	}
	clock = clock.Add(2 * time.Hour)
	if o, err := fullReply(a, cfg, d2, serverIP); err != nil || !o.YourIPAddr.Equal(net.IPv4(10, 77, 0, 101)) {
		t.Errorf("after expiry: %v, %v", o, err)
	}
	// RELEASE frees; a REQUEST naming another server withdraws our offer.
	rel, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease), dhcpv4.WithHwAddr(macA))
	if r, _ := fullReply(a, cfg, rel, serverIP); r != nil {
		t.Errorf("RELEASE answered %v", r)
	}
	other, _ := dhcpv4.NewRequestFromOffer(offer, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 254))))
	if r, _ := fullReply(a, cfg, other, serverIP); r != nil {
		t.Errorf("REQUEST for another server answered %v", r)
	}
}

// FuzzDHCP: whatever arrives on port 67 or 4011, neither mode panics, and what it sends
// parses back as a DHCP message of the right kind.
func FuzzDHCP(f *testing.F) {
	f.Add(pxeDiscover(f, iana.INTEL_X86PC, false).ToBytes(), false)
	f.Add(pxeDiscover(f, iana.EFI_X86_64, true).ToBytes(), true)
	d, _ := dhcpv4.NewDiscovery(macA)
	f.Add(d.ToBytes(), false)
	r, _ := dhcpv4.NewRequestFromOffer(d)
	f.Add(r.ToBytes(), true)
	f.Fuzz(func(t *testing.T, b []byte, pxePort bool) {
		req, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		a := &fakeAnswer{loader: LoaderIPXE, script: "http://10.77.0.1:8080/boot.ipxe"}
		pool := &LeasePool{First: net.IPv4(10, 77, 0, 100), Last: net.IPv4(10, 77, 0, 110), Lease: time.Hour}
		for _, resp := range []func() (*dhcpv4.DHCPv4, error){
			func() (*dhcpv4.DHCPv4, error) { return proxyReply(a, req, serverIP, pxePort) },
			func() (*dhcpv4.DHCPv4, error) {
				return fullReply(a, &FullDHCP{Pool: pool, Netmask: net.CIDRMask(24, 32)}, req, serverIP)
			},
		} {
			m, err := resp()
			if err != nil || m == nil {
				continue
			}
			back, err := dhcpv4.FromBytes(m.ToBytes())
			if err != nil {
				t.Fatalf("unparseable answer: %v", err)
			}
			switch back.MessageType() {
			case dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak:
			default:
				t.Fatalf("answered with %v", back.MessageType())
			}
			_ = replyAddr(req, pxePort, nil)
		}
	})
}
