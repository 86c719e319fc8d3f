package hooks

import (
	"net"
	"os"
	"regexp"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/dhcpclient"
)

// TestNMFiles: a DHCPv4 interface gets a NetworkManager profile, a device state file naming
// it by UUID and a seeded lease file; nothing else does.
func TestNMFiles(t *testing.T) {
	uuid := nmUUID("eth0", mac0)
	dhcp := func(index int, host string) *link {
		l := fullLease()
		l.SentHostname = host
		return &link{nic: NIC{Name: "eth0", MAC: mac0, Index: index}, lease: l,
			nc: &NetConfig{Interface: "eth0", MAC: mac0, Method: "dhcp", Address: l.Address, Lease: l}}
	}
	profile := func(extra string) string {
		return `# written by nbdroot-init: eth0 carries the root; NetworkManager assumes it (devices/2) and renews its DHCPv4 lease
[connection]
id=nbdroot-eth0
uuid=` + uuid + `
type=ethernet
interface-name=eth0

[ipv4]
method=auto
dhcp-client-id=mac
dhcp-timeout=2147483647
dhcp-vendor-class-identifier=nbdroot
` + extra + `
[ipv6]
method=ignore
`
	}
	others := []nmFile{
		{path: "/run/NetworkManager/devices/2",
			content: "# written by nbdroot-init: assume the profile of eth0\n[device]\nmanaged=true\nconnection-uuid=" + uuid + "\n"},
		{path: "/run/NetworkManager/internal-" + uuid + "-eth0.lease",
			content: dhcpclient.NMSeedLeaseHeader + "ADDRESS=10.77.0.100\n"},
	}
	static := &link{nic: NIC{Name: "eth0", MAC: mac0, Index: 2},
		nc: &NetConfig{Interface: "eth0", MAC: mac0, Method: "static", Address: net.IPNet{IP: net.IPv4(10, 77, 0, 5).To4(), Mask: net.CIDRMask(24, 32)}}}
	v6 := dhcp(2, "")
	v6.nc.Address = net.IPNet{IP: net.ParseIP("2001:db8::5"), Mask: net.CIDRMask(128, 128)}
	tests := []struct {
		name string
		l    *link
		want []nmFile
	}{
		{name: "DHCPv4", l: dhcp(2, ""), want: append([]nmFile{{
			path: "/run/NetworkManager/system-connections/nbdroot-eth0.nmconnection", content: profile(""), private: true}}, others...)},
		{name: "DHCPv4 with the host name the init sent", l: dhcp(2, "thin7"), want: append([]nmFile{{
			path: "/run/NetworkManager/system-connections/nbdroot-eth0.nmconnection", content: profile("dhcp-hostname=thin7\n"), private: true}}, others...)},
		{name: "static: NetworkManager has no lease to renew", l: static},
		{name: "IPv6: the keeper does not renew it either", l: v6},
		{name: "interface index unknown", l: dhcp(0, "")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, nmFiles(tt.l), cmp.AllowUnexported(nmFile{})); diff != "" {
				t.Errorf("nmFiles (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNMUUID: the profile's UUID is a version 5 UUID, the same for the same interface and
// MAC address and different for another.
func TestNMUUID(t *testing.T) {
	u := nmUUID("eth0", mac0)
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(u) {
		t.Errorf("nmUUID = %q, not a version 5 UUID", u)
	}
	if nmUUID("eth0", mac0) != u || nmUUID("eth0", mac1) == u || nmUUID("eth1", mac0) == u {
		t.Errorf("nmUUID is not a function of the interface and its MAC address")
	}
}

// TestNetWritesNetworkManagerFiles: the net hook writes nmFiles with the interface's index,
// the profile readable by root only (NetworkManager ignores it otherwise).
func TestNetWritesNetworkManagerFiles(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true, Index: 2})
	f.answers["eth0"] = []dhcpAnswer{{lease: fullLease()}}
	if _, _, err := runNet(t, "ip=dhcp root=/dev/nbd0", f); err != nil {
		t.Fatal(err)
	}
	uuid := nmUUID("eth0", mac0)
	want := map[string]os.FileMode{
		"/run/NetworkManager/system-connections/nbdroot-eth0.nmconnection": 0o600,
		"/run/NetworkManager/devices/2":                                    0o644,
		"/run/NetworkManager/internal-" + uuid + "-eth0.lease":             0o644,
	}
	got := map[string]os.FileMode{}
	for p, perm := range f.files.perms {
		if regexp.MustCompile(`^/run/NetworkManager/`).MatchString(p) {
			got[p] = perm
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NetworkManager files and modes (-want +got):\n%s", diff)
	}
}

// TestKeyfileValue: what GLib's key file parser reads back as escapes is escaped.
func TestKeyfileValue(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"plain", "eth0", "eth0"},
		{"backslash", `eth\0`, `eth\\0`},
		{"control characters", "a\nb\tc\rd", `a\nb\tc\rd`},
		{"leading space", " x y", `\sx y`},
		{"not UTF-8", "\xff", "\xff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := keyfileValue(tt.in); got != tt.want {
				t.Errorf("keyfileValue(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}
