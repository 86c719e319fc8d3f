package hooks

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/vishvananda/netlink"
)

// The net hook with the real System (linuxNet: netlink, nclient4) on a netlab host: every
// network form of the command line against the lab's servers, without booting a kernel.
//
// The hook runs in a process of its own inside the host's namespace (the test binary again,
// under `ip netns exec`): it starts goroutines, and one of them on another OS thread would
// act on this machine's own interfaces.

// nsChildEnv carries, to the process inside the namespace, the name of the test to run and
// what it checks (a nsCase as JSON).
const nsChildEnv = "NBDROOT_NETNS_CASE"

// nsCase is one command line run in a host, and what the interfaces must look like after.
type nsCase struct {
	Cmdline string
	// Addrs are "IFACE ADDR/PREFIX" the host must have (with valid_lft forever).
	Addrs []string
	// Routes are "DST via GW dev IFACE" or "DST dev IFACE" lines the main table must have.
	Routes []string
	// MTU is "IFACE N".
	MTU string
	// Master is "PORT MASTER": a port of a bridge or bond.
	Master []string
	// RootPath and DNS are what State.Net must say.
	RootPath string
	DNS      []string
}

// nsNet is linuxNet without the host name: the UTS namespace is this machine's.
type nsNet struct {
	linuxNet
	hostnames *[]string
}

func (n nsNet) SetHostname(name string) error {
	*n.hostnames = append(*n.hostnames, name)
	return nil
}

// runInHost runs c in h: in the parent, it starts this test again inside h's namespace; in
// that child, it runs the net hook and checks the result.
func runInHost(t *testing.T, h *netlab.Host, c nsCase) {
	t.Helper()
	b, _ := json.Marshal(c)
	var pattern []string
	for _, part := range strings.Split(t.Name(), "/") {
		pattern = append(pattern, "^"+regexp.QuoteMeta(part)+"$")
	}
	cmd := exec.Command("ip", "netns", "exec", h.Name, os.Args[0], "-test.run", strings.Join(pattern, "/"), "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), nsChildEnv+"="+string(b))
	out, err := cmd.CombinedOutput()
	// The child must have run this very subtest, not matched nothing.
	if err != nil || !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" ")) {
		t.Fatalf("the net hook in %s: %v\n%s", h.Name, err, out)
	}
	t.Logf("in %s:\n%s", h.Name, out)
}

// nsChild reports whether this process is the child inside a namespace, and its case.
func nsChild(t *testing.T) (nsCase, bool) {
	v := os.Getenv(nsChildEnv)
	if v == "" {
		return nsCase{}, false
	}
	var c nsCase
	if err := json.Unmarshal([]byte(v), &c); err != nil {
		t.Fatal(err)
	}
	return c, true
}

// checkInHost runs the net hook with c's command line and checks the interfaces: the child's
// side of runInHost.
func checkInHost(t *testing.T, c nsCase) {
	p, err := bootparam.Parse(c.Cmdline)
	if err != nil {
		t.Fatal(err)
	}
	var hostnames []string
	var buf bytes.Buffer
	s := &State{Plan: p, Sys: System{Files: &fakeFiles{}, Net: nsNet{linuxNet: linuxNet{veths: true}, hostnames: &hostnames}, Machine: linuxMachine{}},
		Log: NewLogger(&syncWriter{w: &buf}, Uptime)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = (Net{WaitNIC: 5 * time.Second, Carrier: 5 * time.Second, DHCP: 30 * time.Second}).Run(ctx, s)
	t.Logf("console:\n%s", buf.String())
	if err != nil {
		t.Fatalf("net hook: %v", err)
	}
	if strings.Contains(c.Cmdline, "auto6") {
		// Two more advertisements: the kernel must not give the SLAAC address its
		// lifetimes back.
		time.Sleep(5 * time.Second)
	}
	for _, want := range c.Addrs {
		name, cidr, _ := strings.Cut(want, " ")
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
		found := false
		for _, a := range addrs {
			if a.IPNet.String() == cidr {
				found = true
				// 0xffffffff is "forever": the kernel never drops the root's address.
				if uint32(a.ValidLft) != 0xffffffff {
					t.Errorf("%s %s: valid_lft %d, want forever", name, cidr, a.ValidLft)
				}
			}
		}
		if !found {
			t.Errorf("%s has %v, want %s", name, addrs, cidr)
		}
	}
	out, err := exec.Command("ip", "-4", "route", "show", "table", "main").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	out6, err := exec.Command("ip", "-6", "route", "show", "table", "main").CombinedOutput()
	if err != nil {
		t.Fatal(err)
	}
	out = append(out, out6...)
	for _, want := range c.Routes {
		if !strings.Contains(string(out), want) {
			t.Errorf("no route %q:\n%s", want, out)
		}
	}
	if c.MTU != "" {
		name, mtu, _ := strings.Cut(c.MTU, " ")
		if l, err := netlink.LinkByName(name); err != nil || l.Attrs().MTU != atoi(mtu) {
			t.Errorf("%s MTU: %v %v, want %s", name, l.Attrs().MTU, err, mtu)
		}
	}
	if c.RootPath != "" && (s.Net == nil || s.Net.RootPath != c.RootPath) {
		t.Errorf("root-path %q, want %q", s.Net.RootPath, c.RootPath)
	}
	var dns []string
	for _, ip := range s.Net.DNS {
		dns = append(dns, ip.String())
	}
	if c.DNS != nil && strings.Join(dns, " ") != strings.Join(c.DNS, " ") {
		t.Errorf("name servers %v, want %v", dns, c.DNS)
	}
	for _, m := range c.Master {
		port, master, _ := strings.Cut(m, " ")
		l, err1 := netlink.LinkByName(port)
		ml, err2 := netlink.LinkByName(master)
		if err1 != nil || err2 != nil || l.Attrs().MasterIndex != ml.Attrs().Index {
			t.Errorf("%s is not a port of %s (%v %v)", port, master, err1, err2)
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// kernelHas reports whether the running kernel can make a link of kind (in a throwaway
// namespace: this machine's kernel may lack bonding or 802.1Q, which the QEMU boots test).
func kernelHas(t *testing.T, lab *netlab.Lab, kind string) bool {
	h := lab.AddHost(t, netlab.HostOptions{})
	args := []string{"link", "add", "probe0", "type", kind}
	if kind == "vlan" {
		args = []string{"link", "add", "link", "lo", "name", "probe0", "type", "vlan", "id", "5"}
	}
	_, err := h.Run("ip", args...)
	return err == nil
}

func TestNetNamespaces(t *testing.T) {
	const macA, macB = "52:54:00:4e:53:01", "52:54:00:4e:53:02"
	const tail = " nbd_server=" + netlab.ServerIP + " root=/dev/nbd0"
	server := net.ParseIP(netlab.ServerIP)
	tests := []struct {
		name string
		// dhcp, when not nil, is the lab's DHCP server; ra and dhcp6 give the lab IPv6.
		dhcp  *netlab.DHCPConfig
		ra    *netlab.RAConfig
		dhcp6 *netlab.DHCP6Config
		macs  []string
		kind  string // a link kind the kernel must have
		c     nsCase
	}{
		{name: "DHCP with classless routes and MTU",
			dhcp: &netlab.DHCPConfig{Router: server, MTU: 1400, Extra: map[uint8][]byte{
				// RFC 3442: 0.0.0.0/0 via 10.77.0.1, 192.168.7.0/24 via 10.77.0.254.
				121: {0, 10, 77, 0, 1, 24, 192, 168, 7, 10, 77, 0, 254}}},
			macs: []string{macA},
			c: nsCase{Cmdline: "ip=dhcp" + tail, Addrs: []string{"eth0 10.77.0.100/24"}, MTU: "eth0 1400",
				Routes: []string{"default via 10.77.0.1 dev eth0", "192.168.7.0/24 via 10.77.0.254 dev eth0"}}},
		{name: "static with rd.route",
			macs: []string{macA},
			c: nsCase{Cmdline: "ip=10.77.0.50::10.77.0.1:24::eth0:off rd.route=10.99.0.0/16:10.77.0.254 rd.route=10.98.0.0/16::eth0" + tail,
				Addrs:  []string{"eth0 10.77.0.50/24"},
				Routes: []string{"default via 10.77.0.1 dev eth0", "10.99.0.0/16 via 10.77.0.254 dev eth0", "10.98.0.0/16 dev eth0 scope link"}}},
		{name: "ifname renames the NIC DHCP runs on",
			dhcp: &netlab.DHCPConfig{}, macs: []string{macA, macB},
			c: nsCase{Cmdline: "ifname=bootnet:" + macB + " ip=bootnet:dhcp" + tail, Addrs: []string{"bootnet 10.77.0.100/24"}}},
		{name: "bridge",
			dhcp: &netlab.DHCPConfig{}, macs: []string{macA},
			c: nsCase{Cmdline: "bridge=br0:eth0 ip=br0:dhcp" + tail, Addrs: []string{"br0 10.77.0.100/24"}, Master: []string{"eth0 br0"}}},
		{name: "DHCPv6, routes from the router",
			ra:    &netlab.RAConfig{Prefix: netlab.Subnet6, Managed: true, RouterLifetime: 30 * time.Minute},
			dhcp6: &netlab.DHCP6Config{DNS: []net.IP{net.ParseIP(netlab.ServerIP6)}, BootFileURL: "nbd://[2001:db8::1]:10809/root"},
			macs:  []string{macA},
			c: nsCase{Cmdline: "ip=eth0:dhcp6 root=dhcp", Addrs: []string{"eth0 2001:db8::100/128"},
				Routes: []string{"2001:db8::/64 dev eth0", "default via fe80::"}, RootPath: "nbd://[2001:db8::1]:10809/root", DNS: []string{"2001:db8::1"}}},
		{name: "SLAAC with the router's name servers",
			ra:   &netlab.RAConfig{Prefix: netlab.Subnet6, Autonomous: true, RouterLifetime: 30 * time.Minute, DNS: []netip.Addr{netip.MustParseAddr(netlab.ServerIP6)}},
			macs: []string{macA},
			c: nsCase{Cmdline: "ip=auto6 nbd_server=[" + netlab.ServerIP6 + "]:10809 root=/dev/nbd0", Addrs: []string{"eth0 2001:db8::5054:ff:fe4e:5301/64"},
				Routes: []string{"2001:db8::/64 dev eth0", "default via fe80::"}, DNS: []string{"2001:db8::1"}}},
		{name: "SLAAC, DHCPv6 for the rest (O flag)",
			ra:    &netlab.RAConfig{Prefix: netlab.Subnet6, Autonomous: true, Other: true, RouterLifetime: 30 * time.Minute},
			dhcp6: &netlab.DHCP6Config{DNS: []net.IP{net.ParseIP(netlab.ServerIP6)}, BootFileURL: "nbd://[2001:db8::1]/root"},
			macs:  []string{macA},
			c: nsCase{Cmdline: "ip=eth0:auto6 root=dhcp", Addrs: []string{"eth0 2001:db8::5054:ff:fe4e:5301/64"},
				RootPath: "nbd://[2001:db8::1]/root", DNS: []string{"2001:db8::1"}}},
		{name: "static IPv6",
			macs: []string{macA},
			c: nsCase{Cmdline: "ip=[2001:db8::7]::[2001:db8::1]:64::eth0:none nbd_server=[2001:db8::1] root=/dev/nbd0",
				Addrs: []string{"eth0 2001:db8::7/64"}, Routes: []string{"default via 2001:db8::1 dev eth0"}}},
		{name: "bond", kind: "bond",
			dhcp: &netlab.DHCPConfig{}, macs: []string{macA, macB},
			c: nsCase{Cmdline: "bond=bond0:eth0,eth1:mode=active-backup,miimon=100 ip=bond0:dhcp" + tail,
				Addrs: []string{"bond0 10.77.0.100/24"}, Master: []string{"eth0 bond0", "eth1 bond0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if c, ok := nsChild(t); ok {
				checkInHost(t, c)
				return
			}
			netlab.Need(t)
			t.Parallel()
			lab := netlab.New(t)
			if tt.kind != "" && !kernelHas(t, lab, tt.kind) {
				t.Skipf("this machine's kernel has no %s driver (the QEMU boots test it)", tt.kind)
			}
			if tt.dhcp != nil {
				lab.StartDHCP(t, *tt.dhcp)
			}
			if tt.ra != nil || tt.dhcp6 != nil || strings.Contains(tt.c.Cmdline, "[") {
				lab.AddIPv6(t)
			}
			if tt.ra != nil {
				lab.StartRA(t, *tt.ra)
			}
			if tt.dhcp6 != nil {
				lab.StartDHCP6(t, *tt.dhcp6)
			}
			h := lab.AddHost(t, netlab.HostOptions{MACs: tt.macs})
			runInHost(t, h, tt.c)
		})
	}
}
