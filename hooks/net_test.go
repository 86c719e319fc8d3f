package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/nbdroot/nbdroot/bootparam"
)

// netFake is the Network, scripted per interface: which NICs exist, which have carrier,
// what DHCP answers. files is where the net hook writes (resolv.conf, the lease).
type netFake struct {
	files *fakeFiles

	nmu sync.Mutex
	// nics is what NICs returns once hidden calls have passed (drivers still loading).
	nics   []NIC
	hidden int
	// late NICs join the list after lateAfter more calls (a slower driver).
	late      []NIC
	lateAfter int
	// carrier: LinkUp returns at once for these, otherwise when its context ends.
	carrier map[string]bool
	// answers are the DHCP results per interface, consumed in order; the last one repeats.
	answers map[string][]dhcpAnswer

	ups        []string
	dhcpReqs   map[string][]DHCPRequest
	configured map[string]NetConfig
	order      []string // interfaces in the order Configure saw them
	hostnames  []string
	hostErr    error
	// routes maps destinations to the interface RouteTo says.
	routes map[string]string
	// links records RenameLink, CreateLink and AddRoute calls, in order; linkErr fails the
	// call whose record starts with its key.
	links   []string
	linkErr map[string]error
}

type dhcpAnswer struct {
	lease *Lease
	err   error
}

func newNetFake(nics ...NIC) *netFake {
	f := &netFake{files: &fakeFiles{}, nics: nics, carrier: map[string]bool{},
		answers: map[string][]dhcpAnswer{}, dhcpReqs: map[string][]DHCPRequest{}, configured: map[string]NetConfig{}}
	for _, n := range nics {
		f.carrier[n.Name] = n.Carrier
	}
	return f
}

func (f *netFake) NICs() ([]NIC, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	if f.hidden > 0 {
		f.hidden--
		return nil, nil
	}
	if f.lateAfter > 0 {
		f.lateAfter--
		return append([]NIC(nil), f.nics...), nil
	}
	return append(append([]NIC(nil), f.nics...), f.late...), nil
}

func (f *netFake) LinkUp(ctx context.Context, name string) error {
	f.nmu.Lock()
	f.ups = append(f.ups, name)
	ok := f.carrier[name]
	f.nmu.Unlock()
	if ok {
		return nil
	}
	<-ctx.Done()
	return fmt.Errorf("%s has no carrier: %w", name, ctx.Err())
}

func (f *netFake) DHCP(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	return f.answer(name, req)
}

// DHCP6 and Autoconf6 answer from answers[NAME#dhcp6] and answers[NAME#auto6].
func (f *netFake) DHCP6(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	return f.answer(name+"#dhcp6", req)
}

func (f *netFake) Autoconf6(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	return f.answer(name+"#auto6", req)
}

func (f *netFake) answer(name string, req DHCPRequest) (*Lease, error) {
	f.nmu.Lock()
	f.dhcpReqs[name] = append(f.dhcpReqs[name], req)
	answers := f.answers[name]
	var a dhcpAnswer
	switch {
	case len(answers) == 0:
		a.err = errors.New("no DHCPOFFER received")
	case len(answers) == 1:
		a = answers[0]
	default:
		a, f.answers[name] = answers[0], answers[1:]
	}
	f.nmu.Unlock()
	if a.lease == nil && a.err == nil {
		a.err = errors.New("no DHCPOFFER received")
	}
	if a.err != nil {
		return nil, a.err
	}
	l := *a.lease
	return &l, nil
}

func (f *netFake) Configure(name string, c *NetConfig) error {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	f.configured[name] = *c
	f.order = append(f.order, name)
	return nil
}

func (f *netFake) SetHostname(name string) error {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	f.hostnames = append(f.hostnames, name)
	return f.hostErr
}

func (f *netFake) RouteTo(dst net.IP) (string, error) {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	if name, ok := f.routes[dst.String()]; ok {
		return name, nil
	}
	return "", fmt.Errorf("no route to %s", dst)
}

func (f *netFake) linkCall(rec string) error {
	f.nmu.Lock()
	defer f.nmu.Unlock()
	f.links = append(f.links, rec)
	for k, err := range f.linkErr {
		if strings.HasPrefix(rec, k) {
			return err
		}
	}
	return nil
}

func (f *netFake) RenameLink(name, newName string) error {
	if err := f.linkCall("rename " + name + " " + newName); err != nil {
		return err
	}
	f.nmu.Lock()
	defer f.nmu.Unlock()
	for i := range f.nics {
		if f.nics[i].Name == name {
			f.nics[i].Name = newName
			f.carrier[newName] = f.carrier[name]
		}
	}
	return nil
}

func (f *netFake) CreateLink(d Netdev) (NIC, error) {
	rec := "create " + d.Kind + " " + d.Name + " " + strings.Join(d.deps(), ",")
	if d.Kind == "vlan" {
		rec += fmt.Sprintf(" id %d", d.VLANID)
	}
	for _, o := range d.BondOptions {
		rec += " " + o.Name + "=" + o.Value
	}
	if err := f.linkCall(rec); err != nil {
		return NIC{}, err
	}
	f.nmu.Lock()
	defer f.nmu.Unlock()
	f.carrier[d.Name] = true
	return NIC{Name: d.Name, MAC: "52:54:00:00:0" + fmt.Sprint(len(f.links)%10) + ":ff"}, nil
}

func (f *netFake) AddRoute(r Route, dev string) error {
	rec := "route " + r.Dst.String()
	if r.Gateway != nil {
		rec += " via " + r.Gateway.String()
	}
	if dev != "" {
		rec += " dev " + dev
	}
	return f.linkCall(rec)
}

func (f *netFake) file(path string) (string, bool) { return f.files.file(path) }

func (f *netFake) fileNames() []string { return f.files.fileNames() }

const (
	mac0 = "52:54:00:00:00:10"
	mac1 = "52:54:00:00:00:11"
	mac2 = "52:54:00:00:00:12"
)

// fastNet is the hook with waits short enough for unit tests.
var fastNet = Net{WaitNIC: 100 * time.Millisecond, Carrier: 150 * time.Millisecond, DHCP: 300 * time.Millisecond,
	poll: 5 * time.Millisecond, backoff: time.Millisecond}

// runNet parses cmdline and runs the net hook over f.
func runNet(t *testing.T, cmdline string, f *netFake) (*State, string, error) {
	t.Helper()
	p, err := bootparam.Parse(cmdline)
	if err != nil {
		t.Fatalf("Parse(%q): %v", cmdline, err)
	}
	return runNetPlan(p, f)
}

func runNetPlan(p *bootparam.Plan, f *netFake) (*State, string, error) {
	var buf bytes.Buffer
	m := &fakeMachine{}
	s := &State{Plan: p, Sys: System{Files: f.files, Net: f, Machine: m}, Log: NewLogger(&syncWriter{w: &buf}, m.Uptime)}
	err := fastNet.Run(context.Background(), s)
	return s, buf.String(), err
}

func lease(ip string, prefix int, gw string) *Lease {
	l := &Lease{Address: net.IPNet{IP: net.ParseIP(ip).To4(), Mask: net.CIDRMask(prefix, 32)},
		ServerID: net.ParseIP("10.0.2.2").To4(), LeaseTime: time.Hour}
	if gw != "" {
		l.Gateway = net.ParseIP(gw).To4()
	}
	return l
}

func TestNetChoosesNIC(t *testing.T) {
	const server = " nbd_server=10.0.0.1 root=/dev/nbd0"
	bootif1 := " BOOTIF=01-" + strings.ReplaceAll(mac1, ":", "-")
	tests := []struct {
		name    string
		cmdline string
		nics    []NIC
		hidden  int
		late    []NIC
		// wantIf is the interface configured; on failure wantErr are substrings of the
		// error and wantParam the parameter the failure names.
		wantIf    string
		wantOrder []string // interfaces configured, when more than wantIf
		wantUps   []string // interfaces set up, sorted; nil = not checked
		wantErr   []string
		wantParam string
		wantLog   string
	}{
		{name: "BOOTIF picks the second NIC and touches no other", cmdline: "ip=dhcp" + bootif1 + server,
			nics:   []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1", wantUps: []string{"eth1"}},
		{name: "BOOTIF without any ip=", cmdline: strings.TrimSpace(bootif1) + server,
			nics:   []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1", wantUps: []string{"eth1"}},
		{name: "ip= device", cmdline: "ip=eth1:dhcp" + server,
			nics:   []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1", wantUps: []string{"eth1"}},
		{name: "kernel form device field", cmdline: "ip=::::host:eth1:dhcp" + server,
			nics:   []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1"},
		{name: "ip= device wins over BOOTIF", cmdline: "ip=eth0:dhcp" + bootif1 + server,
			nics:   []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth0", wantUps: []string{"eth0"}, wantLog: "BOOTIF " + mac1 + " (another NIC) is not used"},
		{name: "first with carrier, in probe order", cmdline: "ip=::::::dhcp" + server,
			nics: []NIC{{Name: "eth0", MAC: mac0}, {Name: "eth1", MAC: mac1, Carrier: true},
				{Name: "eth2", MAC: mac2, Carrier: true}},
			wantIf: "eth1", wantUps: []string{"eth0", "eth1", "eth2"}},
		{name: "no ip= at all is DHCP on the first with carrier", cmdline: strings.TrimSpace(server),
			nics:   []NIC{{Name: "eth0", MAC: mac0}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1"},
		{name: "the NIC with the cable appears during the carrier wait", cmdline: "ip=dhcp" + server,
			nics: []NIC{{Name: "eth0", MAC: mac0}}, late: []NIC{{Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1", wantUps: []string{"eth0", "eth1"}},
		{name: "NIC appears while drivers load", cmdline: "ip=dhcp" + server, hidden: 3,
			nics: []NIC{{Name: "eth0", MAC: mac0, Carrier: true}}, wantIf: "eth0"},
		{name: "BOOTIF NIC taken by another ip=", cmdline: "ip=eth1:dhcp ip=dhcp" + bootif1 + server,
			nics:   []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantIf: "eth1", wantOrder: []string{"eth1", "eth0"},
			wantLog: "BOOTIF " + mac1 + " is eth1, which ip=eth1:dhcp configures; ip=dhcp takes the first other interface"},
		{name: "ip=DEVICE:off keeps the device out of the choice", cmdline: "ip=eth1:off ip=dhcp" + server,
			nics:   []NIC{{Name: "eth1", MAC: mac1, Carrier: true}, {Name: "eth0", MAC: mac0, Carrier: true}},
			wantIf: "eth0", wantUps: []string{"eth0"}},

		{name: "BOOTIF matches nothing", cmdline: "ip=dhcp BOOTIF=01-52-54-00-00-00-99" + server,
			nics: []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1, Carrier: true}},
			wantErr: []string{"find the interface that PXE-booted", "no interface has the BOOTIF address 52:54:00:00:00:99",
				"found: eth0 " + mac0 + ", eth1 " + mac1},
			wantParam: "BOOTIF=01-52-54-00-00-00-99"},
		{name: "device missing", cmdline: "ip=eth7:dhcp" + server,
			nics:      []NIC{{Name: "eth0", MAC: mac0, Carrier: true}},
			wantErr:   []string{"find interface eth7", `no interface "eth7"`, "found: eth0 " + mac0},
			wantParam: "ip=eth7:dhcp"},
		{name: "no NIC at all", cmdline: "ip=dhcp" + server,
			wantErr:   []string{"no Ethernet interface appeared", "nbdroot initramfs --nics"},
			wantParam: "ip=dhcp"},
		{name: "no carrier anywhere", cmdline: "ip=dhcp" + server,
			nics: []NIC{{Name: "eth0", MAC: mac0}, {Name: "eth1", MAC: mac1}},
			wantErr: []string{"find an interface with carrier", "no interface got carrier",
				"tried: eth0 " + mac0 + ", eth1 " + mac1, "is a cable plugged in?"},
			wantParam: "ip=dhcp"},
		{name: "named device without carrier", cmdline: "ip=eth0:dhcp" + server,
			nics:      []NIC{{Name: "eth0", MAC: mac0}},
			wantErr:   []string{"bring eth0 (" + mac0 + ") up", "carrier", "eth0 has no carrier"},
			wantParam: "ip=eth0:dhcp"},
		{name: "BOOTIF NIC without carrier", cmdline: "ip=dhcp" + bootif1 + server,
			nics:      []NIC{{Name: "eth0", MAC: mac0, Carrier: true}, {Name: "eth1", MAC: mac1}},
			wantErr:   []string{"bring eth1 (" + mac1 + ") up"},
			wantParam: "ip=dhcp"},
		{name: "every NIC taken", cmdline: "ip=eth0:off ip=dhcp" + server,
			nics:      []NIC{{Name: "eth0", MAC: mac0, Carrier: true}},
			wantErr:   []string{"every interface is taken by another ip= (found: eth0 " + mac0 + ")"},
			wantParam: "ip=dhcp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newNetFake(tt.nics...)
			f.hidden = tt.hidden
			f.late, f.lateAfter = tt.late, 3
			for _, n := range tt.late {
				f.carrier[n.Name] = n.Carrier
				f.answers[n.Name] = []dhcpAnswer{{lease: lease("10.0.2.15", 24, "10.0.2.2")}}
			}
			for _, n := range tt.nics {
				f.answers[n.Name] = []dhcpAnswer{{lease: lease("10.0.2.15", 24, "10.0.2.2")}}
			}
			s, log, err := runNet(t, tt.cmdline, f)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("no error; configured %v", f.order)
				}
				var fl *Failure
				if !errors.As(err, &fl) {
					t.Fatalf("error %v is not a *Failure", err)
				}
				if fl.Hook != "net" || fl.Param != tt.wantParam {
					t.Errorf("failure names hook %q parameter %q, want net and %q", fl.Hook, fl.Param, tt.wantParam)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if len(f.order) != 0 {
					t.Errorf("configured %v despite the failure", f.order)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			wantOrder := tt.wantOrder
			if wantOrder == nil {
				wantOrder = []string{tt.wantIf}
			}
			if diff := cmp.Diff(wantOrder, f.order); diff != "" {
				t.Errorf("configured interfaces (-want +got):\n%s", diff)
			}
			if s.Net == nil || s.Net.Interface != tt.wantIf {
				t.Errorf("State.Net = %+v, want interface %s", s.Net, tt.wantIf)
			}
			if tt.wantUps != nil {
				ups := append([]string(nil), f.ups...)
				sort.Strings(ups)
				if diff := cmp.Diff(tt.wantUps, ups); diff != "" {
					t.Errorf("interfaces set up (-want +got):\n%s", diff)
				}
			}
			if tt.wantLog != "" && !strings.Contains(log, tt.wantLog) {
				t.Errorf("log does not say %q:\n%s", tt.wantLog, log)
			}
		})
	}
}

func TestNetStatic(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
	s, _, err := runNet(t, "ip=10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:client1:eth0:off:10.0.0.53:10.0.0.54 nbd_server=10.0.0.1 root=/dev/nbd0", f)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.dhcpReqs) != 0 {
		t.Errorf("static configuration asked DHCP: %v", f.dhcpReqs)
	}
	want := NetConfig{Interface: "eth0", MAC: mac0, Method: "static",
		Address:  net.IPNet{IP: net.IPv4(10, 0, 0, 5).To4(), Mask: net.CIDRMask(24, 32)},
		Gateway:  net.IPv4(10, 0, 0, 254).To4(),
		DNS:      []net.IP{net.IPv4(10, 0, 0, 53).To4(), net.IPv4(10, 0, 0, 54).To4()},
		Hostname: "client1"}
	if diff := cmp.Diff(want, f.configured["eth0"]); diff != "" {
		t.Errorf("Configure(eth0) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&want, s.Net); diff != "" {
		t.Errorf("State.Net (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"client1"}, f.hostnames); diff != "" {
		t.Errorf("hostname (-want +got):\n%s", diff)
	}
	wantConf := `DEVICE='eth0'
PROTO='none'
IPV4ADDR='10.0.0.5'
IPV4BROADCAST='10.0.0.255'
IPV4NETMASK='255.255.255.0'
IPV4GATEWAY='10.0.0.254'
IPV4DNS0='10.0.0.53'
IPV4DNS1='10.0.0.54'
HOSTNAME='client1'
DNSDOMAIN=''
NISDOMAIN=''
ROOTSERVER='10.0.0.1'
ROOTPATH=''
filename=''
UPTIME='1'
DHCPLEASETIME='0'
DOMAINSEARCH=''
`
	got, _ := f.file("/run/net-eth0.conf")
	if diff := cmp.Diff(wantConf, got); diff != "" {
		t.Errorf("/run/net-eth0.conf (-want +got):\n%s", diff)
	}
	wantResolv := "# written by nbdroot-init (net hook)\nnameserver 10.0.0.53\nnameserver 10.0.0.54\n"
	for _, p := range []string{"/etc/resolv.conf", "/run/nbdroot/resolv.conf"} {
		got, _ := f.file(p)
		if diff := cmp.Diff(wantResolv, got); diff != "" {
			t.Errorf("%s (-want +got):\n%s", p, diff)
		}
	}
	wantEnv := `INTERFACE='eth0'
MAC='52:54:00:00:00:10'
METHOD='static'
PARAMETER='ip=10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:client1:eth0:off:10.0.0.53:10.0.0.54'
PRIMARY='yes'
ADDRESS='10.0.0.5'
PREFIXLEN='24'
NETMASK='255.255.255.0'
BROADCAST='10.0.0.255'
GATEWAY='10.0.0.254'
DEFAULT_ROUTE='yes'
MTU=''
DNS='10.0.0.53 10.0.0.54'
DOMAIN=''
SEARCH=''
HOSTNAME='client1'
NISDOMAIN=''
DHCP_SERVER=''
NEXT_SERVER=''
ROOT_SERVER='10.0.0.1'
ROOT_PATH=''
BOOT_FILE=''
LEASE_SECONDS=''
OBTAINED_UPTIME='1'
`
	got, _ = f.file("/run/nbdroot/net-eth0.env")
	if diff := cmp.Diff(wantEnv, got); diff != "" {
		t.Errorf("/run/nbdroot/net-eth0.env (-want +got):\n%s", diff)
	}
	if got, want := (Net{}).Summary(s), "eth0 10.0.0.5/24 via static, gateway 10.0.0.254"; got != want {
		t.Errorf("Summary = %q, want %q", got, want)
	}
}

// fullLease is a DHCP answer with every field the hook records.
func fullLease() *Lease {
	return &Lease{
		Address:    net.IPNet{IP: net.IPv4(10, 77, 0, 100).To4(), Mask: net.CIDRMask(24, 32)},
		Gateway:    net.IPv4(10, 77, 0, 1).To4(),
		DNS:        []net.IP{net.IPv4(10, 77, 0, 1).To4(), net.IPv4(10, 77, 0, 2).To4(), net.IPv4(10, 77, 0, 3).To4()},
		Domain:     "lab.test",
		Search:     []string{"lab.test", "example.org"},
		Hostname:   "thin7",
		MTU:        1400,
		ServerID:   net.IPv4(10, 77, 0, 1).To4(),
		NextServer: net.IPv4(10, 77, 0, 9).To4(),
		RootPath:   "nbd:10.77.0.9:10809",
		LeaseTime:  2 * time.Hour,
		NISDomain:  "nis.lab",
		BootFile:   "pxelinux.0",
		Broadcast:  net.IPv4(10, 77, 0, 255).To4(),
	}
}

func TestNetDHCP(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
	f.answers["eth0"] = []dhcpAnswer{{lease: fullLease()}}
	s, _, err := runNet(t, "ip=dhcp root=/dev/nbd0", f)
	if err != nil {
		t.Fatal(err)
	}
	l := fullLease()
	// The lease carries when its request went out (the fake machine's uptime) for the
	// keeper's renewals.
	l.Requested = 1500 * time.Millisecond
	want := NetConfig{Interface: "eth0", MAC: mac0, Method: "dhcp", Address: l.Address, Gateway: l.Gateway,
		DNS: l.DNS, Hostname: "thin7", Domain: "lab.test", MTU: 1400, ServerID: l.ServerID,
		NextServer: l.NextServer, RootPath: l.RootPath, LeaseTime: 2 * time.Hour, Lease: l}
	if diff := cmp.Diff(want, f.configured["eth0"]); diff != "" {
		t.Errorf("Configure(eth0) (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&want, s.Net); diff != "" {
		t.Errorf("State.Net (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"thin7"}, f.hostnames); diff != "" {
		t.Errorf("hostname (-want +got):\n%s", diff)
	}
	if reqs := f.dhcpReqs["eth0"]; len(reqs) != 1 || reqs[0].Hostname != "" {
		t.Errorf("DHCP requests %+v, want one without a host name", reqs)
	}
	wantConf := `DEVICE='eth0'
PROTO='dhcp'
IPV4ADDR='10.77.0.100'
IPV4BROADCAST='10.77.0.255'
IPV4NETMASK='255.255.255.0'
IPV4GATEWAY='10.77.0.1'
IPV4DNS0='10.77.0.1'
IPV4DNS1='10.77.0.2'
HOSTNAME='thin7'
DNSDOMAIN='lab.test'
NISDOMAIN='nis.lab'
ROOTSERVER='10.77.0.9'
ROOTPATH='nbd:10.77.0.9:10809'
filename='pxelinux.0'
UPTIME='1'
DHCPLEASETIME='7200'
DOMAINSEARCH='lab.test. example.org.'
`
	got, _ := f.file("/run/net-eth0.conf")
	if diff := cmp.Diff(wantConf, got); diff != "" {
		t.Errorf("/run/net-eth0.conf (-want +got):\n%s", diff)
	}
	wantResolv := "# written by nbdroot-init (net hook)\nsearch lab.test example.org\n" +
		"nameserver 10.77.0.1\nnameserver 10.77.0.2\nnameserver 10.77.0.3\n"
	got, _ = f.file("/etc/resolv.conf")
	if diff := cmp.Diff(wantResolv, got); diff != "" {
		t.Errorf("/etc/resolv.conf (-want +got):\n%s", diff)
	}
	env, _ := f.file("/run/nbdroot/net-eth0.env")
	vars, err := parseShellVars(env)
	if err != nil {
		t.Fatal(err)
	}
	wantVars := map[string]string{"INTERFACE": "eth0", "MAC": mac0, "METHOD": "dhcp", "PARAMETER": "ip=dhcp",
		"PRIMARY": "yes", "ADDRESS": "10.77.0.100", "PREFIXLEN": "24", "NETMASK": "255.255.255.0",
		"BROADCAST": "10.77.0.255", "GATEWAY": "10.77.0.1", "DEFAULT_ROUTE": "yes", "MTU": "1400",
		"DNS": "10.77.0.1 10.77.0.2 10.77.0.3", "DOMAIN": "lab.test", "SEARCH": "lab.test example.org",
		"HOSTNAME": "thin7", "NISDOMAIN": "nis.lab", "DHCP_SERVER": "10.77.0.1", "NEXT_SERVER": "10.77.0.9",
		"ROOT_SERVER": "10.77.0.9", "ROOT_PATH": "nbd:10.77.0.9:10809", "BOOT_FILE": "pxelinux.0",
		"LEASE_SECONDS": "7200", "OBTAINED_UPTIME": "1"}
	if diff := cmp.Diff(wantVars, vars); diff != "" {
		t.Errorf("/run/nbdroot/net-eth0.env (-want +got):\n%s", diff)
	}
}

// TestNetDHCPPrecedence covers what the command line overrides in a DHCP answer, and what
// the hook refuses from one.
func TestNetDHCPPrecedence(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		edit    func(*Lease)
		// want* are the configured host name, MTU and domain; wantReqHost the host name
		// sent as option 12; wantLog a line the log must have.
		wantHost, wantDomain string
		wantMTU              int
		wantReqHost          string
		wantLog              string
	}{
		{name: "DHCP gives it all", cmdline: "ip=dhcp", wantHost: "thin7", wantMTU: 1400, wantDomain: "lab.test"},
		{name: "ip= hostname wins and is sent as option 12", cmdline: "ip=::::mybox::dhcp",
			wantHost: "mybox", wantReqHost: "mybox", wantMTU: 1400, wantDomain: "lab.test"},
		{name: "dracut MTU wins", cmdline: "ip=eth0:dhcp:9000", wantHost: "thin7", wantMTU: 9000, wantDomain: "lab.test"},
		{name: "invalid DHCP host name is ignored", cmdline: "ip=dhcp",
			edit:     func(l *Lease) { l.Hostname = "bad host\nname" },
			wantHost: "", wantMTU: 1400, wantDomain: "lab.test", wantLog: `ignoring DHCP host name "bad host\nname"`},
		{name: "invalid DHCP domain is ignored", cmdline: "ip=dhcp",
			edit:     func(l *Lease) { l.Domain = "lab.test\nnameserver 6.6.6.6"; l.Search = nil },
			wantHost: "thin7", wantMTU: 1400, wantLog: "ignoring DHCP domain name"},
		{name: "no MTU option keeps the interface's", cmdline: "ip=dhcp",
			edit: func(l *Lease) { l.MTU = 0 }, wantHost: "thin7", wantDomain: "lab.test"},
		{name: "a refused option is said with the answer's server", cmdline: "ip=dhcp",
			edit: func(l *Lease) {
				l.Refused = []Refusal{{Option: optClasslessRoutes, Name: "classless static routes", Reason: "not a list of routes (empty)"}}
			},
			wantHost: "thin7", wantMTU: 1400, wantDomain: "lab.test",
			wantLog: "net: eth0: DHCPv4 answer of 10.77.0.1: option 121 (classless static routes) refused: not a list of routes (empty)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
			l := fullLease()
			if tt.edit != nil {
				tt.edit(l)
			}
			f.answers["eth0"] = []dhcpAnswer{{lease: l}}
			_, log, err := runNet(t, tt.cmdline+" nbd_server=10.0.0.1 root=/dev/nbd0", f)
			if err != nil {
				t.Fatal(err)
			}
			c := f.configured["eth0"]
			got := fmt.Sprintf("host=%q mtu=%d domain=%q", c.Hostname, c.MTU, c.Domain)
			want := fmt.Sprintf("host=%q mtu=%d domain=%q", tt.wantHost, tt.wantMTU, tt.wantDomain)
			if got != want {
				t.Errorf("configured %s, want %s", got, want)
			}
			var wantHostnames []string
			if tt.wantHost != "" {
				wantHostnames = []string{tt.wantHost}
			}
			if diff := cmp.Diff(wantHostnames, f.hostnames); diff != "" {
				t.Errorf("hostname (-want +got):\n%s", diff)
			}
			if reqs := f.dhcpReqs["eth0"]; len(reqs) == 0 || reqs[0].Hostname != tt.wantReqHost {
				t.Errorf("DHCP requests %+v, want host name %q", reqs, tt.wantReqHost)
			}
			if tt.wantLog != "" && !strings.Contains(log, tt.wantLog) {
				t.Errorf("log does not say %q:\n%s", tt.wantLog, log)
			}
			resolv, _ := f.file("/etc/resolv.conf")
			if strings.Contains(resolv, "6.6.6.6") || strings.Contains(resolv, "bad") {
				t.Errorf("resolv.conf carries a rejected name:\n%s", resolv)
			}
		})
	}
}

// TestNetDHCPCmdlineFields: the address fields an ip= gives with DHCP win over the lease, as
// in the kernel.
func TestNetDHCPCmdlineFields(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
	f.answers["eth0"] = []dhcpAnswer{{lease: fullLease()}}
	_, _, err := runNet(t, "ip=:10.9.9.9:10.77.0.254:255.255.0.0::eth0:dhcp:10.9.9.53 nbd_server=10.0.0.1 root=/dev/nbd0", f)
	if err != nil {
		t.Fatal(err)
	}
	c := f.configured["eth0"]
	got := fmt.Sprintf("%s gw %v dns %v", c.Address.String(), c.Gateway, c.DNS)
	if want := "10.77.0.100/16 gw 10.77.0.254 dns [10.9.9.53]"; got != want {
		t.Errorf("configured %s, want %s", got, want)
	}
	conf, _ := f.file("/run/net-eth0.conf")
	if vars, _ := parseShellVars(conf); vars["ROOTSERVER"] != "10.9.9.9" || vars["IPV4DNS0"] != "10.9.9.53" {
		t.Errorf("/run/net-eth0.conf:\n%s", conf)
	}
}

func TestNetSeveralIP(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true}, NIC{Name: "eth1", MAC: mac1, Carrier: true})
	l0 := lease("10.0.2.15", 24, "10.0.2.2")
	l0.DNS = []net.IP{net.IPv4(10, 0, 2, 3).To4()}
	l1 := lease("192.168.7.20", 24, "192.168.7.1")
	l1.DNS = []net.IP{net.IPv4(192, 168, 7, 1).To4(), net.IPv4(10, 0, 2, 3).To4()}
	l1.Hostname = "second"
	f.answers["eth0"] = []dhcpAnswer{{lease: l0}}
	f.answers["eth1"] = []dhcpAnswer{{lease: l1}}
	s, log, err := runNet(t, "ip=eth0:dhcp ip=eth1:dhcp nbd_server=10.0.0.1 root=/dev/nbd0", f)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"eth0", "eth1"}, f.order); diff != "" {
		t.Errorf("configuration order (-want +got):\n%s", diff)
	}
	if gw := f.configured["eth0"].Gateway; !gw.Equal(net.IPv4(10, 0, 2, 2)) {
		t.Errorf("eth0 configured with gateway %v, want the default route via 10.0.2.2", gw)
	}
	if gw := f.configured["eth1"].Gateway; gw != nil {
		t.Errorf("eth1 configured with gateway %v: two default routes", gw)
	}
	if !strings.Contains(log, "eth1: gateway 192.168.7.1 not used: the default route goes via 10.0.2.2 on eth0") {
		t.Errorf("log does not explain the unused gateway:\n%s", log)
	}
	if s.Net.Interface != "eth0" {
		t.Errorf("State.Net is %s, want eth0 (the first ip=)", s.Net.Interface)
	}
	if diff := cmp.Diff([]string{"second"}, f.hostnames); diff != "" {
		t.Errorf("hostname (-want +got):\n%s", diff)
	}
	resolv, _ := f.file("/etc/resolv.conf")
	if want := "nameserver 10.0.2.3\nnameserver 192.168.7.1\n"; !strings.HasSuffix(resolv, want) {
		t.Errorf("resolv.conf:\n%s\nwant the servers of both, without duplicates:\n%s", resolv, want)
	}
	wantFiles := []string{"/etc/resolv.conf", "/run/nbdroot/net-eth0.env", "/run/nbdroot/net-eth1.env",
		"/run/nbdroot/resolv.conf", "/run/net-eth0.conf", "/run/net-eth1.conf"}
	if diff := cmp.Diff(wantFiles, f.fileNames()); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
	conf1, _ := f.file("/run/net-eth1.conf")
	vars, _ := parseShellVars(conf1)
	// klibc records the lease as the server gave it, routed or not.
	if vars["IPV4GATEWAY"] != "192.168.7.1" || vars["IPV4ADDR"] != "192.168.7.20" {
		t.Errorf("/run/net-eth1.conf:\n%s", conf1)
	}
	env1, _ := f.file("/run/nbdroot/net-eth1.env")
	vars, _ = parseShellVars(env1)
	if vars["DEFAULT_ROUTE"] != "no" || vars["PRIMARY"] != "no" || vars["PARAMETER"] != "ip=eth1:dhcp" {
		t.Errorf("/run/nbdroot/net-eth1.env:\n%s", env1)
	}
}

// TestNetSeveralIPFailure: an interface the command line asks for and cannot get is a
// failure naming its ip=, even when another one worked.
func TestNetSeveralIPFailure(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true}, NIC{Name: "eth1", MAC: mac1, Carrier: true})
	f.answers["eth0"] = []dhcpAnswer{{lease: lease("10.0.2.15", 24, "10.0.2.2")}}
	_, _, err := runNet(t, "ip=eth0:dhcp ip=eth1:dhcp nbd_server=10.0.0.1 root=/dev/nbd0", f)
	var fl *Failure
	if !errors.As(err, &fl) || fl.Param != "ip=eth1:dhcp" || !strings.Contains(fl.Tried, "DHCPv4 lease on eth1") {
		t.Fatalf("error %v, want a failure of ip=eth1:dhcp getting a lease", err)
	}
	if len(f.order) != 0 {
		t.Errorf("configured %v before every interface had its configuration", f.order)
	}
}

// TestNetPrimaryFromDHCP: with the server left to DHCP, State.Net is the DHCP interface
// (its root-path names the server), not the first, static, one.
func TestNetPrimaryFromDHCP(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true}, NIC{Name: "eth1", MAC: mac1, Carrier: true})
	l := fullLease()
	f.answers["eth1"] = []dhcpAnswer{{lease: l}}
	s, _, err := runNet(t, "ip=10.1.0.5:::::eth0:off ip=eth1:dhcp root=/dev/nbd0", f)
	if err != nil {
		t.Fatal(err)
	}
	if s.Net == nil || s.Net.Interface != "eth1" || s.Net.RootPath != l.RootPath {
		t.Fatalf("State.Net = %+v, want eth1 with the root-path", s.Net)
	}
	// ip_auto_config's classful default for 10.x.
	if a := f.configured["eth0"].Address; a.String() != "10.1.0.5/8" {
		t.Errorf("eth0 configured with %s, want 10.1.0.5/8", a.String())
	}
}

func TestNetOff(t *testing.T) {
	for _, tt := range []struct {
		name string
		ip   []bootparam.IPConfig
	}{
		{"ip=off", []bootparam.IPConfig{{Mode: bootparam.ModeOff, Autoconf: "off"}}},
		{"every device off", []bootparam.IPConfig{{Mode: bootparam.ModeOff, Device: "eth0"}, {Mode: bootparam.ModeOff, Device: "eth1"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
			s, _, err := runNetPlan(&bootparam.Plan{IP: tt.ip}, f)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.ups) != 0 || len(f.order) != 0 || len(f.dhcpReqs) != 0 || len(f.fileNames()) != 0 {
				t.Errorf("network off touched: up %v, configured %v, DHCP %v, files %v", f.ups, f.order, f.dhcpReqs, f.fileNames())
			}
			if s.Net != nil {
				t.Errorf("State.Net = %+v, want nil", s.Net)
			}
			if got := (Net{}).Summary(s); got != "network off (ip=off)" {
				t.Errorf("Summary = %q", got)
			}
		})
	}
}

func TestNetDHCPRetries(t *testing.T) {
	tests := []struct {
		name     string
		answers  []dhcpAnswer
		wantErr  []string // nil: the lease is taken
		attempts int      // at least this many DHCP exchanges
	}{
		{name: "third attempt answers", attempts: 3, answers: []dhcpAnswer{
			{err: errors.New("timed out")}, {err: errors.New("got DHCPNAK")}, {lease: lease("10.0.2.15", 24, "")}}},
		{name: "an answer without an address is retried", attempts: 2, answers: []dhcpAnswer{
			{lease: &Lease{}}, {lease: lease("10.0.2.15", 24, "")}}},
		{name: "no server", attempts: 2, answers: []dhcpAnswer{{err: errors.New("no DHCPOFFER received")}},
			wantErr: []string{"get a DHCPv4 lease on eth0 (is a DHCP server on this network?)", "no usable answer within 300ms",
				"no DHCPOFFER received"}},
		{name: "bad netmask", attempts: 2,
			answers: []dhcpAnswer{{lease: &Lease{Address: net.IPNet{IP: net.IPv4(10, 0, 0, 9).To4(), Mask: net.IPMask{255, 0, 255, 0}}}}},
			wantErr: []string{"subnet mask 255.0.255.0 is not a valid IPv4 netmask"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
			f.answers["eth0"] = tt.answers
			_, _, err := runNet(t, "ip=dhcp nbd_server=10.0.0.1 root=/dev/nbd0", f)
			if n := len(f.dhcpReqs["eth0"]); n < tt.attempts {
				t.Errorf("%d DHCP attempts, want at least %d", n, tt.attempts)
			}
			if tt.wantErr == nil {
				if err != nil {
					t.Fatal(err)
				}
				if a := f.configured["eth0"].Address; a.String() != "10.0.2.15/24" {
					t.Errorf("configured %s", a.String())
				}
				return
			}
			var fl *Failure
			if !errors.As(err, &fl) || fl.Param != "ip=dhcp" {
				t.Fatalf("error %v, want a failure naming ip=dhcp", err)
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestNetHostnameFailureIsNotFatal: the root can boot without its host name.
func TestNetHostnameFailureIsNotFatal(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
	f.hostErr = errors.New("operation not permitted")
	_, log, err := runNet(t, "ip=10.0.0.5::::box:eth0:off nbd_server=10.0.0.1 root=/dev/nbd0", f)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log, `set hostname "box": operation not permitted`) {
		t.Errorf("log does not report the hostname failure:\n%s", log)
	}
}

func TestHostnameLength(t *testing.T) {
	long := strings.Repeat("a", 40) + "." + strings.Repeat("b", 40) + ".example"
	if got := hostname([]*link{{nc: &NetConfig{Hostname: long}}}); got != strings.Repeat("a", 40) {
		t.Errorf("hostname(%q) = %q, want its first label (the kernel keeps 64 bytes)", long, got)
	}
	if got := hostname([]*link{{nc: &NetConfig{}}, {nc: &NetConfig{Hostname: "b.example"}}}); got != "b.example" {
		t.Errorf("hostname = %q, want b.example", got)
	}
}

func TestLeaseFrom(t *testing.T) {
	ack, err := dhcpv4.New(
		dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
		dhcpv4.WithYourIP(net.IPv4(10, 77, 0, 100)),
		dhcpv4.WithServerIP(net.IPv4(10, 77, 0, 9)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(net.IPv4(10, 77, 0, 1)),
		dhcpv4.WithDNS(net.IPv4(10, 77, 0, 1), net.IPv4(10, 77, 0, 2)),
		dhcpv4.WithOption(dhcpv4.OptHostName("thin7\x00")),
		dhcpv4.WithOption(dhcpv4.OptDomainName("lab.test")),
		dhcpv4.WithOption(dhcpv4.OptRootPath("nbd:10.77.0.9:10809")),
		dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0x05, 0x78}),
		dhcpv4.WithGeneric(dhcpv4.OptionBroadcastAddress, []byte{10, 77, 0, 255}),
		dhcpv4.WithGeneric(dhcpv4.OptionNetworkInformationServiceDomain, []byte("nis.lab")),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 77, 0, 1))),
		dhcpv4.WithLeaseTime(7200),
		dhcpv4.WithDomainSearchList("lab.test", "example.org"),
		dhcpv4.WithOption(dhcpv4.OptBootFileName("nbdroot.0")),
	)
	if err != nil {
		t.Fatal(err)
	}
	ack.BootFileName = "pxelinux.0"
	// Through the wire format, as the client sees it.
	ack, err = dhcpv4.FromBytes(ack.ToBytes())
	if err != nil {
		t.Fatal(err)
	}
	want := fullLease()
	want.DNS = want.DNS[:2]
	want.MTU = 1400
	want.BootFile = "nbdroot.0" // option 67 wins over the file field
	if diff := cmp.Diff(want, leaseFrom(ack)); diff != "" {
		t.Errorf("leaseFrom (-want +got):\n%s", diff)
	}

	// A bare BOOTP-style answer: no mask (classful default), zero siaddr (none).
	bare, _ := dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(172, 16, 3, 4)))
	got := leaseFrom(bare)
	wantBare := &Lease{Address: net.IPNet{IP: net.IPv4(172, 16, 3, 4).To4(), Mask: net.CIDRMask(16, 32)}}
	if diff := cmp.Diff(wantBare, got); diff != "" {
		t.Errorf("leaseFrom(bare) (-want +got):\n%s", diff)
	}
}

// TestLeaseFromStrict: options are taken byte for byte or refused, never altered; classless
// static routes replace the router option (RFC 3442).
func TestLeaseFromStrict(t *testing.T) {
	ip4 := func(s string) net.IP { return net.ParseIP(s).To4() }
	cidr := func(s string) net.IPNet { _, n, _ := net.ParseCIDR(s); n.IP = n.IP.To4(); return *n }
	tests := []struct {
		name    string
		mods    []dhcpv4.Modifier
		check   func(l *Lease) string
		refused []int
	}{
		{name: "root-path not UTF-8 is kept byte for byte",
			mods:  []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionRootPath, []byte("nbd:10.0.0.1:\xffroot"))},
			check: func(l *Lease) string { return cmp.Diff("nbd:10.0.0.1:\xffroot", l.RootPath) }},
		{name: "trailing NUL padding is dropped",
			mods:  []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionRootPath, []byte("nbd:10.0.0.1\x00\x00"))},
			check: func(l *Lease) string { return cmp.Diff("nbd:10.0.0.1", l.RootPath) }},
		{name: "a NUL inside is refused, not cut",
			mods: []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionRootPath, []byte("nbd:10.0.0.1\x00evil")),
				dhcpv4.WithGeneric(dhcpv4.OptionHostName, []byte("a\x00b"))},
			check:   func(l *Lease) string { return cmp.Diff([2]string{}, [2]string{l.RootPath, l.Hostname}) },
			refused: []int{optHostName, optRootPath}},
		{name: "MTU below 68 is refused",
			mods:    []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0, 67})},
			check:   func(l *Lease) string { return cmp.Diff(0, l.MTU) },
			refused: []int{optMTU}},
		{name: "MTU of three bytes is refused",
			mods:    []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionInterfaceMTU, []byte{0, 5, 0xdc})},
			check:   func(l *Lease) string { return cmp.Diff(0, l.MTU) },
			refused: []int{optMTU}},
		{name: "router of 5 bytes is refused",
			mods:    []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionRouter, []byte{10, 0, 0, 1, 2})},
			check:   func(l *Lease) string { return cmp.Diff(net.IP(nil), l.Gateway) },
			refused: []int{optRouter}},
		{name: "non-contiguous netmask is refused: classful default",
			mods:    []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionSubnetMask, []byte{255, 0, 255, 0})},
			check:   func(l *Lease) string { return cmp.Diff(net.CIDRMask(8, 32), l.Address.Mask) },
			refused: []int{optSubnetMask}},
		{name: "T1 and T2",
			mods: []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.OptionRenewTimeValue, []byte{0, 0, 0, 10}),
				dhcpv4.WithGeneric(dhcpv4.OptionRebindingTimeValue, []byte{0, 0, 0, 20})},
			check: func(l *Lease) string {
				return cmp.Diff([2]time.Duration{10 * time.Second, 20 * time.Second}, [2]time.Duration{l.RenewalTime, l.RebindingTime})
			}},
		{name: "classless routes replace the router option",
			mods: []dhcpv4.Modifier{dhcpv4.WithRouter(net.IPv4(10, 0, 0, 9)),
				// 0.0.0.0/0 via 10.0.0.1; 192.168.7.0/24 via 10.0.0.3; 172.16.240.0/20 with
				// host bits set, on the link.
				dhcpv4.WithGeneric(dhcpv4.OptionClasslessStaticRoute, []byte{0, 10, 0, 0, 1, 24, 192, 168, 7, 10, 0, 0, 3, 20, 172, 16, 0xff, 0, 0, 0, 0})},
			check: func(l *Lease) string {
				return cmp.Diff([]any{ip4("10.0.0.1"), []Route{{Dst: cidr("192.168.7.0/24"), Gateway: ip4("10.0.0.3")}, {Dst: cidr("172.16.240.0/20")}}},
					[]any{l.Gateway, l.Routes})
			}},
		{name: "classless routes without a default: no default route",
			mods: []dhcpv4.Modifier{dhcpv4.WithRouter(net.IPv4(10, 0, 0, 9)),
				dhcpv4.WithGeneric(dhcpv4.OptionClasslessStaticRoute, []byte{8, 10, 10, 0, 0, 1})},
			check: func(l *Lease) string {
				return cmp.Diff([]any{net.IP(nil), []Route{{Dst: cidr("10.0.0.0/8"), Gateway: ip4("10.0.0.1")}}}, []any{l.Gateway, l.Routes})
			}},
		{name: "option 249 when 121 is absent",
			mods:  []dhcpv4.Modifier{dhcpv4.WithGeneric(dhcpv4.GenericOptionCode(optMSClasslessRoutes), []byte{0, 10, 0, 0, 7})},
			check: func(l *Lease) string { return cmp.Diff(ip4("10.0.0.7"), l.Gateway) }},
		{name: "a truncated route list is refused: the router option counts",
			mods: []dhcpv4.Modifier{dhcpv4.WithRouter(net.IPv4(10, 0, 0, 9)),
				dhcpv4.WithGeneric(dhcpv4.OptionClasslessStaticRoute, []byte{24, 192, 168, 7, 10, 0})},
			check: func(l *Lease) string {
				return cmp.Diff([]any{ip4("10.0.0.9"), []Route(nil)}, []any{l.Gateway, l.Routes})
			},
			refused: []int{optClasslessRoutes}},
		{name: "a search domain with a space is refused",
			mods:    []dhcpv4.Modifier{dhcpv4.WithDomainSearchList("good.test", "bad name.test")},
			check:   func(l *Lease) string { return cmp.Diff([]string{"good.test"}, l.Search) },
			refused: []int{optDomainSearch}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ack, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithMessageType(dhcpv4.MessageTypeAck),
				dhcpv4.WithYourIP(net.IPv4(10, 0, 0, 5))}, tt.mods...)...)
			if err != nil {
				t.Fatal(err)
			}
			if ack, err = dhcpv4.FromBytes(ack.ToBytes()); err != nil {
				t.Fatal(err)
			}
			l := leaseFrom(ack)
			if d := tt.check(l); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
			var refused []int
			for _, r := range l.Refused {
				refused = append(refused, r.Option)
			}
			sort.Ints(refused)
			if diff := cmp.Diff(tt.refused, refused); diff != "" {
				t.Errorf("refused options (-want +got):\n%s\n%v", diff, l.Refused)
			}
		})
	}
}

// TestNetRootPathRefused: a root-path the init refused, when the root-path names the server,
// fails the net stage naming the option instead of falling back to the DHCP server.
func TestNetRootPathRefused(t *testing.T) {
	f := newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
	l := lease("10.0.2.15", 24, "")
	l.Refused = []Refusal{{Option: optRootPath, Name: "root-path", Reason: "a NUL byte inside the value", RootPath: true}}
	f.answers["eth0"] = []dhcpAnswer{{lease: l}}
	_, out, err := runNet(t, "ip=dhcp root=/dev/nbd0", f)
	var fl *Failure
	if !errors.As(err, &fl) || fl.Hook != "net" || fl.Param != "ip=dhcp" || !strings.Contains(err.Error(), "option 17 (root-path) refused") {
		t.Fatalf("err = %v, want a net failure naming option 17", err)
	}
	if !strings.Contains(out, "option 17 (root-path) refused: a NUL byte inside the value") {
		t.Errorf("console does not say which option was refused:\n%s", out)
	}
	// With the server on the command line, the root-path does not matter.
	f = newNetFake(NIC{Name: "eth0", MAC: mac0, Carrier: true})
	f.answers["eth0"] = []dhcpAnswer{{lease: l}}
	if _, _, err := runNet(t, "ip=dhcp nbd_server=10.0.2.2 root=/dev/nbd0", f); err != nil {
		t.Fatalf("with nbd_server=: %v", err)
	}
}

// TestShellQuoting sources the files with a real shell: every value comes back unchanged,
// whatever a DHCP server put in it.
func TestShellQuoting(t *testing.T) {
	values := []string{"", "plain", "it's", "bang!", "'!'", `back\slash`, "$HOME `id` $(id)", "new\nline", "  spaces  ", "a\"b", "é"}
	var kv [][2]string
	for i, v := range values {
		kv = append(kv, [2]string{fmt.Sprintf("V%d", i), v})
	}
	content := shellVars(kv)
	got, err := parseShellVars(content)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		if got[fmt.Sprintf("V%d", i)] != v {
			t.Errorf("parseShellVars: V%d = %q, want %q", i, got[fmt.Sprintf("V%d", i)], v)
		}
	}
	for _, sh := range []string{"/bin/sh", "/bin/bash"} {
		if _, err := os.Stat(sh); err != nil {
			continue
		}
		t.Run(filepath.Base(sh), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "net-eth0.conf")
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			for i, v := range values {
				out, err := exec.Command(sh, "-c", fmt.Sprintf(`. "$1" && printf '%%s' "$V%d"`, i), sh, path).Output()
				if err != nil {
					t.Fatalf("%s: %v", sh, err)
				}
				if string(out) != v {
					t.Errorf("%s reads V%d = %q, want %q", sh, i, out, v)
				}
			}
		})
	}
}

// parseShellVars reads KEY='value' assignments in the quoting shellQuote writes: single
// quotes, a quote or an exclamation mark closed out of them and backslash-escaped. Values
// may span lines.
func parseShellVars(s string) (map[string]string, error) {
	vars := map[string]string{}
	for len(s) > 0 {
		key, rest, ok := strings.Cut(s, "=")
		if !ok || key == "" || strings.ContainsAny(key, "\n '") {
			return nil, fmt.Errorf("no assignment at %q", s)
		}
		if !strings.HasPrefix(rest, "'") {
			return nil, fmt.Errorf("%s: value does not start with a quote", key)
		}
		rest = rest[1:]
		var v strings.Builder
		for {
			i := strings.IndexByte(rest, '\'')
			if i < 0 {
				return nil, fmt.Errorf("%s: unterminated quote", key)
			}
			v.WriteString(rest[:i])
			rest = rest[i+1:]
			if strings.HasPrefix(rest, `\'`) || strings.HasPrefix(rest, `\!`) {
				if len(rest) < 3 || rest[2] != '\'' {
					return nil, fmt.Errorf("%s: escape not followed by a quote", key)
				}
				v.WriteByte(rest[1])
				rest = rest[3:]
				continue
			}
			break
		}
		if !strings.HasPrefix(rest, "\n") {
			return nil, fmt.Errorf("%s: no newline after the value", key)
		}
		if _, dup := vars[key]; dup {
			return nil, fmt.Errorf("%s assigned twice", key)
		}
		vars[key] = v.String()
		s = rest[1:]
	}
	return vars, nil
}

// FuzzLeaseFrom feeds DHCP answers from the network through leaseFrom and the file writers:
// no panic; every text option is taken byte for byte (trailing NUL padding aside) or refused;
// and whatever the server sent, every file still parses as shell assignments that give back
// the lease's values byte for byte. The corpus keeps a root-path with bytes that are not
// UTF-8 (0xFF, 0xB1), which once came back as U+FFFD.
func FuzzLeaseFrom(f *testing.F) {
	ack, _ := dhcpv4.New(dhcpv4.WithMessageType(dhcpv4.MessageTypeAck), dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)), dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithOption(dhcpv4.OptHostName("it's!")), dhcpv4.WithOption(dhcpv4.OptRootPath("nbd:'x'\n!")),
		dhcpv4.WithDomainSearchList("a.test"))
	f.Add(ack.ToBytes())
	f.Fuzz(func(t *testing.T, b []byte) {
		ack, err := dhcpv4.FromBytes(b)
		if err != nil {
			return
		}
		l := leaseFrom(ack)
		refused := map[int]bool{}
		for _, r := range l.Refused {
			refused[r.Option] = true
		}
		for code, got := range map[int]string{optHostName: l.Hostname, optDomainName: l.Domain, optRootPath: l.RootPath, optNISDomain: l.NISDomain} {
			raw := ack.Options.Get(dhcpv4.GenericOptionCode(code))
			if want := strings.TrimRight(string(raw), "\x00"); got != want && !refused[code] {
				t.Fatalf("option %d: got %q, the answer says %q, and it was not refused", code, got, want)
			}
		}
		if raw := ack.Options.Get(dhcpv4.GenericOptionCode(optMTU)); raw != nil && !refused[optMTU] &&
			(len(raw) != 2 || l.MTU != int(raw[0])<<8|int(raw[1])) {
			t.Fatalf("MTU %d from option 26 % x, not refused", l.MTU, raw)
		}
		if checkLease(l) != nil {
			return
		}
		nc := &NetConfig{Interface: "eth0", MAC: mac0}
		fromLease(l, nc)
		lk := &link{entry: ipEntry{param: "ip=dhcp"}, nic: NIC{Name: "eth0", MAC: mac0}, nc: nc, lease: l,
			rootServer: l.NextServer, route: true}
		conf, err := parseShellVars(klibcConf(lk))
		if err != nil {
			t.Fatalf("klibcConf does not parse: %v\n%s", err, klibcConf(lk))
		}
		want := map[string]string{"ROOTPATH": l.RootPath, "HOSTNAME": l.Hostname, "DNSDOMAIN": l.Domain,
			"NISDOMAIN": l.NISDomain, "filename": l.BootFile}
		for k, v := range want {
			if conf[k] != v {
				t.Fatalf("klibcConf changed %s: %q, lease %q", k, conf[k], v)
			}
		}
		env, err := parseShellVars(envConf(lk, true))
		if err != nil {
			t.Fatalf("envConf does not parse: %v\n%s", err, envConf(lk, true))
		}
		want = map[string]string{"ROOT_PATH": l.RootPath, "HOSTNAME": l.Hostname, "DOMAIN": l.Domain,
			"NISDOMAIN": l.NISDomain, "BOOT_FILE": l.BootFile}
		for k, v := range want {
			if env[k] != v {
				t.Fatalf("envConf changed %s: %q, lease %q", k, env[k], v)
			}
		}
		resolv := resolvConf([]*link{lk})
		for _, line := range strings.Split(strings.TrimSuffix(resolv, "\n"), "\n") {
			if !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, "search ") && !strings.HasPrefix(line, "nameserver ") {
				t.Fatalf("resolv.conf has a foreign line %q:\n%s", line, resolv)
			}
		}
	})
}
