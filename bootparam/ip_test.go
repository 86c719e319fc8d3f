package bootparam

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseIP(t *testing.T) {
	tests := []struct {
		value string
		want  IPConfig
	}{
		// Lone autoconf words (nfsroot.rst: "ip=<autoconf>").
		{"off", IPConfig{Mode: ModeOff, Autoconf: "off"}},
		{"none", IPConfig{Mode: ModeOff, Autoconf: "none"}},
		{"on", IPConfig{Mode: ModeDHCP, Autoconf: "on"}},
		{"any", IPConfig{Mode: ModeDHCP, Autoconf: "any"}},
		{"dhcp", IPConfig{Mode: ModeDHCP, Autoconf: "dhcp"}},
		{"bootp", IPConfig{Mode: ModeDHCP, Autoconf: "bootp"}},
		{"both", IPConfig{Mode: ModeDHCP, Autoconf: "both"}},
		{"single-dhcp", IPConfig{Mode: ModeDHCP, Autoconf: "single-dhcp"}},
		// Empty value: ipconfig.c disables autoconfiguration.
		{"", IPConfig{Mode: ModeOff}},
		// The seed's form: DHCP on any device.
		{"::::::dhcp", IPConfig{Mode: ModeDHCP, Autoconf: "dhcp"}},
		// Empty autoconf field, no address: every protocol, i.e. DHCP.
		{":::::eth0:", IPConfig{Mode: ModeDHCP, Device: "eth0"}},
		{":::::eth0", IPConfig{Mode: ModeDHCP, Device: "eth0"}},
		{":::::eth0:off", IPConfig{Mode: ModeOff, Device: "eth0", Autoconf: "off"}},
		// DHCP with fields that override the lease.
		{"::::thin01:eth1:dhcp", IPConfig{Mode: ModeDHCP, Hostname: "thin01", Device: "eth1", Autoconf: "dhcp"}},
		// The full 10-field static form.
		{"10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:thin01.lab:eth0:off:10.0.0.53:10.0.0.54:10.0.0.123",
			IPConfig{Mode: ModeStatic, Address: "10.0.0.5", Server: "10.0.0.1", Gateway: "10.0.0.254",
				Netmask: "255.255.255.0", Hostname: "thin01.lab", Device: "eth0", Autoconf: "off",
				DNS: []string{"10.0.0.53", "10.0.0.54"}, NTP: "10.0.0.123"}},
		{"10.0.0.5::10.0.0.1:255.255.255.0::eth0:none",
			IPConfig{Mode: ModeStatic, Address: "10.0.0.5", Gateway: "10.0.0.1", Netmask: "255.255.255.0", Device: "eth0", Autoconf: "none"}},
		// Static with an empty autoconf: a given address is configured as is.
		{"192.168.1.7::192.168.1.1:255.255.255.0",
			IPConfig{Mode: ModeStatic, Address: "192.168.1.7", Gateway: "192.168.1.1", Netmask: "255.255.255.0"}},
		// A lone address is the CLIENT field; the netmask is the classful default.
		{"10.1.2.3", IPConfig{Mode: ModeStatic, Address: "10.1.2.3", Netmask: "255.0.0.0"}},
		{"172.16.0.9:::", IPConfig{Mode: ModeStatic, Address: "172.16.0.9", Netmask: "255.255.0.0"}},
		{"192.168.5.9:::::eth0:off", IPConfig{Mode: ModeStatic, Address: "192.168.5.9", Netmask: "255.255.255.0", Device: "eth0", Autoconf: "off"}},
		// dracut's prefix-length netmask and its MTU field.
		{"10.0.0.5::10.0.0.1:24::eth0:none:9000",
			IPConfig{Mode: ModeStatic, Address: "10.0.0.5", Gateway: "10.0.0.1", Netmask: "255.255.255.0", Device: "eth0", Autoconf: "none", MTU: 9000}},
		// 0.0.0.0 means "not given" (INADDR_ANY → NONE in ipconfig.c).
		{"0.0.0.0::::::dhcp", IPConfig{Mode: ModeDHCP, Autoconf: "dhcp"}},
		// dracut's ip=DEVICE:AUTOCONF[:MTU].
		{"eth0:dhcp", IPConfig{Mode: ModeDHCP, Device: "eth0", Autoconf: "dhcp"}},
		{"enp0s3:on", IPConfig{Mode: ModeDHCP, Device: "enp0s3", Autoconf: "on"}},
		{"eth1:any:1400", IPConfig{Mode: ModeDHCP, Device: "eth1", Autoconf: "any", MTU: 1400}},
		{"eth0.100:dhcp", IPConfig{Mode: ModeDHCP, Device: "eth0.100", Autoconf: "dhcp"}},
		{"eth2:off", IPConfig{Mode: ModeOff, Device: "eth2", Autoconf: "off"}},
		// IPv6 (dracut): DHCPv6, SLAAC, and static addresses in brackets.
		{"dhcp6", IPConfig{Mode: ModeDHCP6, Autoconf: "dhcp6"}},
		{"auto6", IPConfig{Mode: ModeAuto6, Autoconf: "auto6"}},
		{"eth0:dhcp6", IPConfig{Mode: ModeDHCP6, Device: "eth0", Autoconf: "dhcp6"}},
		{"eth1:auto6:1400", IPConfig{Mode: ModeAuto6, Device: "eth1", Autoconf: "auto6", MTU: 1400}},
		{":::::eth0:dhcp6", IPConfig{Mode: ModeDHCP6, Device: "eth0", Autoconf: "dhcp6"}},
		{"[2001:db8::5]:[2001:db8::1]:[2001:db8::fffe]:64:thin6:eth0:none:[2001:db8::53]",
			IPConfig{Mode: ModeStatic, Address: "2001:db8::5", Server: "2001:db8::1", Gateway: "2001:db8::fffe",
				Netmask: "64", Hostname: "thin6", Device: "eth0", Autoconf: "none", DNS: []string{"2001:db8::53"}}},
		{"[fd00::2]::[fe80::1]:48::eth0:off:9000",
			IPConfig{Mode: ModeStatic, Address: "fd00::2", Gateway: "fe80::1", Netmask: "48", Device: "eth0", Autoconf: "off", MTU: 9000}},
		{"[fd00::2]", IPConfig{Mode: ModeStatic, Address: "fd00::2", Netmask: "64"}},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			got, err := ParseIP(tt.value)
			if err != nil {
				t.Fatalf("ParseIP(%q): %v", tt.value, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseIP(%q) (-want +got):\n%s", tt.value, diff)
			}
		})
	}
}

func TestParseIPErrors(t *testing.T) {
	tests := []struct {
		value  string
		reason string // substring of ParamError.Reason
	}{
		{"rarp", "RARP is not supported"},
		{"either6", "either6 is not supported"},
		{"eth0:link6", "link6 configures only a link-local address"},
		{"[fd00::2]::::::dhcp6", "ambiguous"},
		{"[fd00::2]:::129::eth0:none", "IPv6 prefix length \"129\" is not 1-128"},
		{"[fd00::2]::10.0.0.1:64::eth0:none", "are not of the same IP version"},
		{"10.0.0.2::[fd00::1]:24::eth0:none", "are not of the same IP version"},
		{"[fd00::2::eth0:none", "unbalanced brackets"},
		{"[fe80::2%eth0]::::eth0:none", `client address "fe80::2%eth0" is not an IPv6 address`},
		{"[nonsense]:::64::eth0:none", `client address "nonsense" is not an IPv4 address`},
		{"ibft", "iBFT"},
		{"dhpc", "neither an autoconf word nor an IPv4 address"},
		{"::::::dhpc", `autoconf "dhpc" is not one of`},
		{"10.0.0.256::::::off", `client address "10.0.0.256" is not an IPv4 address`},
		{"10.0.0.5:x", `server address "x" is not an IPv4 address`},
		{"10.0.0.5::gw", `gateway "gw"`},
		{"10.0.0.5:::255.0.255.0", "not contiguous"},
		{"10.0.0.5:::33", "prefix length must be 0-32"},
		{"10.0.0.5:::mask", "neither a dotted quad nor a prefix length"},
		{"10.0.0.5::10.1.0.1:255.255.255.0", "gateway 10.1.0.1 is not on the network"},
		{"224.0.0.5", "class D/E"},
		{"10.0.0.5::::bad_host", "not a valid host name"},
		{"10.0.0.5:::::a/b", "interface name"},
		{"10.0.0.5:::::averyveryverylongname", "must be 1-15 characters"},
		{"10.0.0.5::::::dhcp", "ambiguous"},
		{"\xd2:off", "interface name"},
		{"eth\x01:dhcp", "interface name"},
		{":::255.255.255.0:::off", "gateway or netmask without a client address"},
		{"::::::dhcp:dns", `dns0 "dns"`},
		{"::::::dhcp:10.0.0.1:x", `dns1 "x"`},
		{"::::::dhcp:::ntp", `ntp0 "ntp"`},
		{"::::::dhcp:10.0.0.1:10.0.0.2:10.0.0.3:4", "more than 10 fields"},
		{"::::::off:50", "MTU must be 68-65535"},
		{"::::::off:9000:52:54:00:12:34:56", "MAC address"},
		{"eth0:dhcp:1", "MTU must be 68-65535"},
	}
	for _, tt := range tests {
		t.Run(tt.value, func(t *testing.T) {
			_, err := ParseIP(tt.value)
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseIP(%q) = %v, want a *ParamError", tt.value, err)
			}
			if pe.Param != "ip" || pe.Value != tt.value || pe.Expected == "" {
				t.Errorf("ParseIP(%q) error names %q=%q (form %q), want ip=%q and a form", tt.value, pe.Param, pe.Value, pe.Expected, tt.value)
			}
			if !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("ParseIP(%q) reason %q does not contain %q", tt.value, pe.Reason, tt.reason)
			}
		})
	}
}

func TestParseBootIF(t *testing.T) {
	for _, tt := range []struct{ value, want, err string }{
		{"01-52-54-00-12-34-56", "52:54:00:12:34:56", ""},
		{"01-AA-BB-CC-DD-EE-FF", "aa:bb:cc:dd:ee:ff", ""},
		{"52-54-00-12-34-56", "52:54:00:12:34:56", ""},
		{"52:54:00:12:34:56", "52:54:00:12:34:56", ""},
		{"06-52-54-00-12-34-56", "", "hardware type 06 is not 01"},
		{"01-52-54-00-12", "", "6-byte MAC"},
		{"01-52-54-00-12-34-56-78", "", "6-byte MAC"},
		{"01-52-54-00-12-34-5g", "", `"5g" is not two hex digits`},
		{"01-52-54-00-12-34-567", "", "pairs of hex digits"},
		{"01--54-00-12-34-56", "", "pairs of hex digits"},
		{"", "", "pairs of hex digits"},
	} {
		t.Run(tt.value, func(t *testing.T) {
			got, err := ParseBootIF(tt.value)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseBootIF(%q) = %q, %v; want error containing %q", tt.value, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseBootIF(%q) = %q, %v; want %q", tt.value, got, err, tt.want)
			}
		})
	}
}
