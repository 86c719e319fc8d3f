package hooks

import (
	"crypto/sha1"
	"fmt"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/dhcpclient"
)

// nmFile is one of NetworkManager's runtime files the net hook writes.
type nmFile struct {
	path    string
	content string
	// private: NetworkManager ignores a keyfile profile that others may read ("insecure
	// permissions"), so profiles are written 0600.
	private bool
}

// nmFiles returns the runtime files that make a booted NetworkManager assume the DHCPv4
// configuration the init gave l and renew its lease, the way NetworkManager in a dracut
// initramfs leaves them for the one in the root (NMRUNDIR is /run/NetworkManager, which
// switch_root carries into the root with /run). None for a static or IPv6 interface, or one
// whose interface index is unknown.
//
//   - a keyfile profile for the interface in system-connections (method=auto): NetworkManager
//     1.42 reads profiles from /run/NetworkManager/system-connections too;
//   - the device state file devices/IFINDEX with managed=true and the profile's UUID: at
//     start NetworkManager assumes the indicated profile without comparing it with the
//     configuration it finds (nm-manager.c get_existing_connection, "(indicated)"), so the
//     address stays and NetworkManager runs DHCP; without it, the address the init set is
//     not "method=auto" and NetworkManager leaves the interface alone as externally
//     configured;
//   - the internal DHCP client's lease file internal-UUID-IFACE.lease with the address
//     (ADDRESS=, nm-dhcp-nettools.c): NetworkManager asks for that address again
//     (INIT-REBOOT, RFC 2131 section 3.2) instead of discovering a new one. It starts with
//     dhcpclient.NMSeedLeaseHeader, which the keeper's hand-off detection skips until
//     NetworkManager rewrites the file with a lease of its own.
//
// The profile keeps trying DHCP for ever (dhcp-timeout=infinity): a DHCP server that does
// not answer when NetworkManager starts must not fail the activation, which would take the
// root's address away. It identifies the client by its MAC address (1.42 cannot send no
// client identifier, as the init does) and sends the init's vendor class and host name.
func nmFiles(l *link) []nmFile {
	if l.lease == nil || l.nc.Address.IP.To4() == nil || l.nic.Index <= 0 {
		return nil
	}
	iface := l.nc.Interface
	uuid := nmUUID(iface, l.nc.MAC)
	name := keyfileValue(iface) // a Linux interface name may hold a backslash
	var profile strings.Builder
	fmt.Fprintf(&profile, `# written by nbdroot-init: %s carries the root; NetworkManager assumes it (devices/%d) and renews its DHCPv4 lease
[connection]
id=nbdroot-%s
uuid=%s
type=ethernet
interface-name=%s

[ipv4]
method=auto
dhcp-client-id=mac
dhcp-timeout=2147483647
dhcp-vendor-class-identifier=%s
`, name, l.nic.Index, name, uuid, name, VendorClass)
	if h := l.lease.SentHostname; h != "" {
		fmt.Fprintf(&profile, "dhcp-hostname=%s\n", keyfileValue(h))
	}
	// IPv6 stays as the kernel (or the init's ip=…6) has it.
	profile.WriteString("\n[ipv6]\nmethod=ignore\n")
	return []nmFile{
		{path: "/run/NetworkManager/system-connections/nbdroot-" + iface + ".nmconnection", content: profile.String(), private: true},
		{path: "/run/NetworkManager/devices/" + strconv.Itoa(l.nic.Index),
			content: "# written by nbdroot-init: assume the profile of " + iface + "\n[device]\nmanaged=true\nconnection-uuid=" + uuid + "\n"},
		{path: "/run/NetworkManager/internal-" + uuid + "-" + iface + ".lease",
			content: dhcpclient.NMSeedLeaseHeader + "ADDRESS=" + l.nc.Address.IP.To4().String() + "\n"},
	}
}

// nmUUID is the profile's UUID: a name-based one (RFC 9562 section 5.5, version 5) of the
// interface and its MAC address, the same at every boot of the machine.
func nmUUID(iface, mac string) string {
	h := sha1.Sum([]byte("nbdroot NetworkManager profile\x00" + iface + "\x00" + mac))
	u := h[:16]
	u[6] = u[6]&0x0f | 0x50 // version 5
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
}

// keyfileValue escapes a string for a GLib key file value (g_key_file_parse_value_as_string
// reads \\, \n, \t, \r and a leading \s back): NetworkManager's keyfiles are GLib key files.
func keyfileValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == ' ' && i == 0:
			b.WriteString(`\s`)
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
