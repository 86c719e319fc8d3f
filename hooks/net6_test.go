package hooks

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/mdlayher/ndp"
)

func lease6(ip string, prefix int) *Lease {
	return &Lease{Address: net.IPNet{IP: net.ParseIP(ip), Mask: net.CIDRMask(prefix, 128)},
		DNS: []net.IP{net.ParseIP("2001:db8::53")}, LeaseTime: time.Hour}
}

// TestNetIPv6: dhcp6, auto6 and static IPv6 in the net hook, with the scripted Network.
func TestNetIPv6(t *testing.T) {
	const server = " nbd_server=[2001:db8::1]:10809 root=/dev/nbd0"
	tests := []struct {
		name    string
		cmdline string
		answers map[string]*Lease
		want    map[string]NetConfig // by interface, the fields compared: Method, Address, Gateway, DNS
		wantErr []string
	}{
		{name: "DHCPv6", cmdline: "ip=eth0:dhcp6" + server,
			answers: map[string]*Lease{"eth0#dhcp6": lease6("2001:db8::100", 128)},
			want: map[string]NetConfig{"eth0": {Method: "dhcp6", Address: lease6("2001:db8::100", 128).Address,
				DNS: []net.IP{net.ParseIP("2001:db8::53")}}}},
		{name: "SLAAC", cmdline: "ip=auto6" + server,
			answers: map[string]*Lease{"eth0#auto6": lease6("2001:db8::5054:ff:fe00:10", 64)},
			want:    map[string]NetConfig{"eth0": {Method: "auto6", Address: lease6("2001:db8::5054:ff:fe00:10", 64).Address, DNS: []net.IP{net.ParseIP("2001:db8::53")}}}},
		{name: "static IPv6 beside DHCPv4: a default route each", cmdline: "ip=eth0:dhcp ip=[2001:db8::7]::[fe80::1]:64::eth1:none:[2001:db8::53]" + server,
			answers: map[string]*Lease{"eth0": lease("10.0.2.15", 24, "10.0.2.2")},
			want: map[string]NetConfig{
				"eth0": {Method: "dhcp", Address: lease("10.0.2.15", 24, "").Address, Gateway: net.ParseIP("10.0.2.2").To4()},
				"eth1": {Method: "static", Address: net.IPNet{IP: net.ParseIP("2001:db8::7"), Mask: net.CIDRMask(64, 128)},
					Gateway: net.ParseIP("fe80::1"), DNS: []net.IP{net.ParseIP("2001:db8::53")}}}},
		{name: "DHCPv6 never answers", cmdline: "ip=eth0:dhcp6" + server,
			wantErr: []string{"get a DHCPv6 lease on eth0 (is a DHCPv6 server on this network?)", "no usable answer within"}},
		{name: "an IPv4 answer to DHCPv6", cmdline: "ip=eth0:dhcp6" + server,
			answers: map[string]*Lease{"eth0#dhcp6": lease("10.0.2.15", 24, "")},
			wantErr: []string{"the answer gives no global IPv6 address"}},
		{name: "no SLAAC address", cmdline: "ip=eth0:auto6" + server,
			wantErr: []string{"get an IPv6 address by autoconfiguration on eth0 (is an IPv6 router advertising a prefix on this network?)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true}, NIC{Name: "eth1", MAC: mac1, Carrier: true})
			for k, l := range tt.answers {
				f.answers[k] = []dhcpAnswer{{lease: l}}
			}
			s, _, err := runNet(t, tt.cmdline, f)
			if len(tt.wantErr) > 0 {
				var fl *Failure
				if !errors.As(err, &fl) || fl.Hook != "net" || !strings.HasPrefix(fl.Param, "ip=") {
					t.Fatalf("err = %v, want a net failure naming ip=", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.want {
				got := f.configured[name]
				got = NetConfig{Method: got.Method, Address: got.Address, Gateway: got.Gateway, DNS: got.DNS}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Configure(%s) (-want +got):\n%s", name, diff)
				}
			}
			for name := range tt.want {
				if _, ok := f.file("/run/net-" + name + ".conf"); ok == isV6(f.configured[name].Address.IP) {
					t.Errorf("/run/net-%s.conf written: %v, want only for IPv4", name, ok)
				}
				env, _ := f.file("/run/nbdroot/net-" + name + ".env")
				vars, err := parseShellVars(env)
				if err != nil || vars["METHOD"] != tt.want[name].Method || vars["ADDRESS"] != tt.want[name].Address.IP.String() {
					t.Errorf("net-%s.env: %v\n%s", name, err, env)
				}
			}
			if s.Net == nil {
				t.Error("no State.Net")
			}
		})
	}
}

// TestLease6From: a DHCPv6 REPLY is read byte for byte or refused.
func TestLease6From(t *testing.T) {
	reply := func(mods ...dhcpv6.Modifier) *dhcpv6.Message {
		m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply}
		for _, mod := range mods {
			mod(m)
		}
		// Through the wire format, as the client sees it; the library refuses to parse
		// some malformed options at all: those are read as built.
		if b, err := dhcpv6.MessageFromBytes(m.ToBytes()); err == nil {
			return b
		}
		return m
	}
	ia := dhcpv6.WithIANA(dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP("2001:db8::100"), PreferredLifetime: time.Hour, ValidLifetime: 2 * time.Hour})
	url := func(s string) dhcpv6.Modifier {
		return func(d dhcpv6.DHCPv6) {
			d.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionBootfileURL, OptionData: []byte(s)})
		}
	}
	l := lease6From(reply(ia, dhcpv6.WithDNS(net.ParseIP("2001:db8::53")), dhcpv6.WithDomainSearchList("lab.test", "bad name.test"),
		url("nbd://[2001:db8::1]:10809/r\xffoot")))
	want := &Lease{Address: net.IPNet{IP: net.ParseIP("2001:db8::100"), Mask: net.CIDRMask(128, 128)}, LeaseTime: 2 * time.Hour,
		DNS: []net.IP{net.ParseIP("2001:db8::53")}, Search: []string{"lab.test"}, RootPath: "nbd://[2001:db8::1]:10809/r\xffoot",
		Refused: []Refusal{{Option: opt6Search, Name: "domain search list", Reason: `"bad name.test" is not a valid domain name`}}}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("lease6From (-want +got):\n%s", diff)
	}
	l = lease6From(reply(ia, url("nbd://x\x00y")))
	if l.RootPath != "" || len(l.Refused) != 1 || !l.Refused[0].RootPath {
		t.Errorf("a boot file URL with a NUL: %+v", l)
	}
	l = lease6From(reply(ia, func(d dhcpv6.DHCPv6) {
		d.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionDNSRecursiveNameServer, OptionData: make([]byte, 17)})
	}))
	if len(l.DNS) != 0 || len(l.Refused) != 1 || l.Refused[0].Option != opt6DNS {
		t.Errorf("name servers of 17 bytes: %+v", l)
	}
}

// TestLeaseFromRA: what a router advertisement gives beside the SLAAC address.
func TestLeaseFromRA(t *testing.T) {
	ra := &ndp.RouterAdvertisement{OtherConfiguration: true, RouterLifetime: 30 * time.Minute, Options: []ndp.Option{
		&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: 24 * time.Hour, PreferredLifetime: 4 * time.Hour, Prefix: netip.MustParseAddr("2001:db8::")},
		&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, ValidLifetime: time.Hour, Prefix: netip.MustParseAddr("2001:db8:1::")},
		&ndp.RecursiveDNSServer{Lifetime: time.Hour, Servers: []netip.Addr{netip.MustParseAddr("2001:db8::53")}},
		&ndp.DNSSearchList{Lifetime: time.Hour, DomainNames: []string{"lab.test"}},
		ndp.NewMTU(1200),
	}}
	if got := autonomousPrefixes(ra); len(got) != 1 || got[0] != netip.MustParsePrefix("2001:db8::/64") {
		t.Errorf("autonomous prefixes %v", got)
	}
	addr := net.IPNet{IP: net.ParseIP("2001:db8::5054:ff:fe00:10"), Mask: net.CIDRMask(64, 128)}
	l := leaseFromRA(ra, addr)
	want := &Lease{Address: addr, LeaseTime: 24 * time.Hour, DNS: []net.IP{net.ParseIP("2001:db8::53")}, Search: []string{"lab.test"},
		Refused: []Refusal{{Option: 5, Name: "MTU (router advertisement)", Reason: "1200 is outside IPv6's 1280-65535"}}}
	if diff := cmp.Diff(want, l); diff != "" {
		t.Errorf("leaseFromRA (-want +got):\n%s", diff)
	}
	if d := describeRA(&ndp.RouterAdvertisement{ManagedConfiguration: true, Options: ra.Options[1:2]}); d != "prefixes: 2001:db8:1::/64 without the autonomous flag; addresses by DHCPv6 (M flag): use ip=dhcp6" {
		t.Errorf("describeRA = %q", d)
	}
}

// FuzzLease6From feeds DHCPv6 replies through lease6From and the file writer: no panic, the
// boot file URL byte for byte (padding aside) or refused, and the file gives it back.
func FuzzLease6From(f *testing.F) {
	m := &dhcpv6.Message{MessageType: dhcpv6.MessageTypeReply}
	dhcpv6.WithIANA(dhcpv6.OptIAAddress{IPv6Addr: net.ParseIP("2001:db8::100"), ValidLifetime: time.Hour})(m)
	dhcpv6.WithDNS(net.ParseIP("2001:db8::53"))(m)
	m.AddOption(&dhcpv6.OptionGeneric{OptionCode: dhcpv6.OptionBootfileURL, OptionData: []byte("nbd://[2001:db8::1]/root'!")})
	f.Add(m.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		reply, err := dhcpv6.MessageFromBytes(b)
		if err != nil {
			return
		}
		l := lease6From(reply)
		if raw := raw6(reply, opt6BootFileURL); raw != nil {
			refused := false
			for _, r := range l.Refused {
				refused = refused || r.RootPath
			}
			if want := strings.TrimRight(string(raw), "\x00"); l.RootPath != want && !refused {
				t.Fatalf("boot file URL %q, the reply says %q, and it was not refused", l.RootPath, want)
			}
		}
		if checkLease6(l) != nil {
			return
		}
		nc := &NetConfig{Interface: "eth0", MAC: mac0}
		fromLease(l, nc)
		nc.Method = "dhcp6"
		lk := &link{entry: ipEntry{param: "ip=dhcp6"}, nic: NIC{Name: "eth0", MAC: mac0}, nc: nc, lease: l}
		env, err := parseShellVars(envConf(lk, true))
		if err != nil || env["ROOT_PATH"] != l.RootPath || env["ADDRESS"] != l.Address.IP.String() {
			t.Fatalf("envConf: %v %q", err, env)
		}
	})
}

// FuzzLeaseFromRA feeds router advertisements, as they come off the wire, through what
// SLAAC reads from them: no panic; only usable name servers, valid search domains and an
// MTU in IPv6's range are taken, everything else refused.
func FuzzLeaseFromRA(f *testing.F) {
	ra := &ndp.RouterAdvertisement{ManagedConfiguration: true, RouterLifetime: 30 * time.Minute, Options: []ndp.Option{
		&ndp.PrefixInformation{PrefixLength: 64, OnLink: true, AutonomousAddressConfiguration: true,
			ValidLifetime: time.Hour, PreferredLifetime: time.Hour, Prefix: netip.MustParseAddr("2001:db8::")},
		&ndp.RecursiveDNSServer{Lifetime: time.Hour, Servers: []netip.Addr{netip.MustParseAddr("2001:db8::53")}},
		&ndp.DNSSearchList{Lifetime: time.Hour, DomainNames: []string{"lab.test"}},
		ndp.NewMTU(1500),
	}}
	b, err := ndp.MarshalMessage(ra)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	addr := net.IPNet{IP: net.ParseIP("2001:db8::5054:ff:fe00:10"), Mask: net.CIDRMask(64, 128)}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ndp.ParseMessage(b)
		if err != nil {
			return
		}
		ra, ok := m.(*ndp.RouterAdvertisement)
		if !ok {
			return
		}
		for _, p := range autonomousPrefixes(ra) {
			if !p.IsValid() || !p.Addr().Is6() {
				t.Fatalf("autonomous prefix %v", p)
			}
		}
		_ = describeRA(ra)
		l := leaseFromRA(ra, addr)
		for _, d := range l.DNS {
			if d.IsUnspecified() || d.IsMulticast() {
				t.Fatalf("name server %v taken", d)
			}
		}
		for _, d := range l.Search {
			if !validDomain(d) {
				t.Fatalf("search domain %q taken", d)
			}
		}
		if l.MTU != 0 && (l.MTU < minMTU6 || l.MTU > 65535) {
			t.Fatalf("MTU %d taken", l.MTU)
		}
	})
}
