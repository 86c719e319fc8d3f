//go:build linux

package test

// The net hook's boot tests: the guest's root prints its network configuration as the init
// left it (addresses, routes, host name, resolv.conf, the lease files in /run) and the tests
// check it. Plain DHCP runs on QEMU's user network; everything slirp cannot do (DHCP
// options, DNS names, a second NIC on another network) runs on a netlab namespace of the
// test's own, with QEMU on a tap of the lab's bridge.

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// netInit is the root's init for the network tests: the usual marker and mounts (for
// assertRootMounted), then one "=== NAME" section per fact, then "=== end".
const netInit = `echo "` + vm.Marker + ` init=$0 pid=$$"
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- uptime $(cat /proc/uptime)"
echo "=== addr"
ip addr
echo "=== route"
ip route
echo "=== hostname"
hostname
echo "=== resolv"
cat /run/nbdroot/resolv.conf
for f in /run/net-*.conf /run/nbdroot/net-*.env; do
	echo "=== $f"
	cat "$f"
done
echo "=== end"
sync
poweroff -f
`

// guestNet is what netInit printed, by section.
type guestNet map[string]string

// kernelLine is a printk line that landed in the middle of the root's output.
var kernelLine = regexp.MustCompile(`^\[\s*\d+\.\d+\]`)

// readGuestNet waits for netInit's report and splits it into sections.
func readGuestNet(t *testing.T, v *vm.VM) guestNet {
	t.Helper()
	m := v.Expect(`(?s)=== addr\r?\n(.*?)=== end`, bootTimeout)
	g := guestNet{}
	name := "addr"
	for _, line := range strings.Split(m[1], "\n") {
		line = strings.TrimRight(line, "\r")
		if kernelLine.MatchString(line) {
			continue
		}
		if s, ok := strings.CutPrefix(line, "=== "); ok {
			name = s
			g[name] = ""
			continue
		}
		g[name] += line + "\n"
	}
	return g
}

// iface is one interface of `ip addr`.
type iface struct {
	name, mac string
	mtu       string
	inet      []string // address/prefix
}

var (
	ifLine   = regexp.MustCompile(`^\d+: ([^:@]+)[^:]*: .* mtu (\d+)`)
	etherRe  = regexp.MustCompile(`^\s+link/ether ([0-9a-f:]{17})`)
	inetLine = regexp.MustCompile(`^\s+inet (\S+)`)
)

// byMAC returns the interface with the given MAC address.
func (g guestNet) byMAC(t *testing.T, mac string) iface {
	t.Helper()
	var cur *iface
	var all []iface
	for _, line := range strings.Split(g["addr"], "\n") {
		if m := ifLine.FindStringSubmatch(line); m != nil {
			all = append(all, iface{name: m[1], mtu: m[2]})
			cur = &all[len(all)-1]
			continue
		}
		if cur == nil {
			continue
		}
		if m := etherRe.FindStringSubmatch(line); m != nil {
			cur.mac = m[1]
		} else if m := inetLine.FindStringSubmatch(line); m != nil {
			cur.inet = append(cur.inet, m[1])
		}
	}
	for _, i := range all {
		if i.mac == mac {
			return i
		}
	}
	t.Fatalf("no interface with MAC %s in the guest:\n%s", mac, g["addr"])
	return iface{}
}

// vars reads a KEY='value' file section (the values the tests check have no quotes).
func (g guestNet) vars(t *testing.T, section string) map[string]string {
	t.Helper()
	text, ok := g[section]
	if !ok {
		t.Fatalf("the guest has no %s; it printed:\n%s", section, g.String())
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: line %q is not KEY='value'", section, line)
		}
		out[k] = strings.Trim(v, "'")
	}
	return out
}

func (g guestNet) String() string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(g)) {
		fmt.Fprintf(&b, "=== %s\n%s", k, g[k])
	}
	return b.String()
}

// wantVars checks some keys of a lease file.
func (g guestNet) wantVars(t *testing.T, section string, want map[string]string) {
	t.Helper()
	got := g.vars(t, section)
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s: %s=%q, want %q", section, k, got[k], w)
		}
	}
}

// wantLine checks that a section has a line matching re.
func (g guestNet) wantLine(t *testing.T, section, re string) {
	t.Helper()
	if !regexp.MustCompile(`(?m)` + re).MatchString(g[section]) {
		t.Errorf("%s has no line matching %q:\n%s", section, re, g[section])
	}
}

// wantFiles checks which lease files the guest has.
func (g guestNet) wantFiles(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	for k := range g {
		if strings.HasPrefix(k, "/run/") {
			got = append(got, k)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("lease files %v, want %v", got, want)
	}
}

// bootNet boots a guest with the seed's hooks, checks that its root is mounted and returns
// what netInit printed.
func bootNet(t *testing.T, e *vm.Env, o vm.Options) (*vm.VM, guestNet) {
	t.Helper()
	o.Kernel = e.Vmlinuz()
	o.Initrd = e.Initramfs(t, seedHooks)
	o.Timeout = bootTimeout + time.Minute
	v := vm.Start(t, o)
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	g := readGuestNet(t, v)
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
	return v, g
}

const (
	macA = "52:54:00:4e:42:01"
	macB = "52:54:00:4e:42:02"
)

func bootif(mac string) string { return "BOOTIF=01-" + strings.ReplaceAll(mac, ":", "-") }

// TestNetDHCP: plain DHCP on QEMU's user network; the lease is applied and recorded for the
// root in both file forms. Under restrict=on slirp's answer has no router and no name server
// (libslirp's bootp.c leaves them out), so there is no default route and resolv.conf has no
// server: the lab tests cover those.
func TestNetDHCP(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{Init: netInit})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	_, g := bootNet(t, e, vm.Options{
		Append:   "ip=dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0",
		Forwards: map[int]int{10809: srv.Port},
		MACs:     []string{macA},
	})
	eth := g.byMAC(t, macA)
	if !slices.Equal(eth.inet, []string{"10.0.2.15/24"}) {
		t.Errorf("%s has %v, want slirp's 10.0.2.15/24", eth.name, eth.inet)
	}
	g.wantLine(t, "route", `^10\.0\.2\.0/24 dev `+eth.name)
	if strings.Contains(g["route"], "default") {
		t.Errorf("a default route without a router in the answer:\n%s", g["route"])
	}
	g.wantFiles(t, "/run/net-"+eth.name+".conf", "/run/nbdroot/net-"+eth.name+".env")
	g.wantVars(t, "/run/net-"+eth.name+".conf", map[string]string{
		"DEVICE": eth.name, "PROTO": "dhcp", "IPV4ADDR": "10.0.2.15", "IPV4NETMASK": "255.255.255.0",
		"IPV4BROADCAST": "10.0.2.255", "IPV4GATEWAY": "0.0.0.0", "IPV4DNS0": "0.0.0.0", "ROOTSERVER": "10.0.2.2",
		"DHCPLEASETIME": "86400",
	})
	g.wantVars(t, "/run/nbdroot/net-"+eth.name+".env", map[string]string{
		"INTERFACE": eth.name, "MAC": macA, "METHOD": "dhcp", "PARAMETER": "ip=dhcp", "PRIMARY": "yes",
		"ADDRESS": "10.0.2.15", "PREFIXLEN": "24", "GATEWAY": "", "DEFAULT_ROUTE": "no", "DHCP_SERVER": "10.0.2.2",
	})
}

// newLab is a lab with nbdroot serve exporting a net test root.
func newLab(t *testing.T, e *vm.Env) (*netlab.Lab, *vm.Server) {
	t.Helper()
	netlab.Need(t)
	lab := netlab.New(t)
	img := e.RootImage(t, vm.RootOptions{Init: netInit})
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img)
	return lab, srv
}

// TestNetStatic: the kernel's 10-field ip= on a network without a DHCP server.
func TestNetStatic(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	lab, srv := newLab(t, e)
	tap := lab.AddTap(t)
	_, g := bootNet(t, e, vm.Options{
		Append: "ip=10.77.0.50:" + netlab.ServerIP + ":10.77.0.254:255.255.255.0:static-client:eth0:off:" + netlab.ServerIP +
			" nbd_server=" + srv.Addr + " root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", tap, macA),
	})
	eth := g.byMAC(t, macA)
	if eth.name != "eth0" || !slices.Equal(eth.inet, []string{"10.77.0.50/24"}) {
		t.Errorf("%s has %v, want eth0 with 10.77.0.50/24", eth.name, eth.inet)
	}
	g.wantLine(t, "route", `^default via 10\.77\.0\.254 dev eth0`)
	g.wantLine(t, "hostname", `^static-client$`)
	g.wantLine(t, "resolv", `^nameserver 10\.77\.0\.1$`)
	g.wantVars(t, "/run/net-eth0.conf", map[string]string{
		"DEVICE": "eth0", "PROTO": "none", "IPV4ADDR": "10.77.0.50", "IPV4NETMASK": "255.255.255.0",
		"IPV4BROADCAST": "10.77.0.255", "IPV4GATEWAY": "10.77.0.254", "IPV4DNS0": "10.77.0.1", "IPV4DNS1": "0.0.0.0",
		"HOSTNAME": "static-client", "ROOTSERVER": netlab.ServerIP, "DHCPLEASETIME": "0",
	})
	g.wantVars(t, "/run/nbdroot/net-eth0.env", map[string]string{"METHOD": "static", "GATEWAY": "10.77.0.254"})
}

// TestNetDNSName: nbd_server= names the server by DNS; the name server and search domain
// come from DHCP, the init's resolver asks the lab's DNS server.
func TestNetDNSName(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	lab, srv := newLab(t, e)
	tap := lab.AddTap(t)
	server := net.ParseIP(netlab.ServerIP)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{Router: server, DNS: []net.IP{server}, Domain: "lab.test"})
	dns := lab.StartDNS(t, map[string]string{"nbd.lab.test": netlab.ServerIP})
	v, g := bootNet(t, e, vm.Options{
		Append:  fmt.Sprintf("ip=dhcp nbd_server=nbd.lab.test:%d root=/dev/nbd0", srv.Port),
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", tap, macA),
	})
	if !slices.Contains(dns.Queries(), "nbd.lab.test. TypeA") {
		t.Errorf("the lab's DNS server was not asked for nbd.lab.test; it saw %v", dns.Queries())
	}
	v.Expect(`stage nbd .* ← nbd\.lab\.test:`+fmt.Sprint(srv.Port), time.Second)
	eth := g.byMAC(t, macA)
	if want := dhcp.Leases()[macA]; want == nil || !slices.Equal(eth.inet, []string{want.String() + "/24"}) {
		t.Errorf("%s has %v, want the lease %v/24", eth.name, eth.inet, want)
	}
	g.wantLine(t, "resolv", `^search lab\.test$`)
	g.wantLine(t, "resolv", `^nameserver 10\.77\.0\.1$`)
	g.wantLine(t, "route", `^default via 10\.77\.0\.1 dev `+eth.name)
	g.wantVars(t, "/run/net-"+eth.name+".conf", map[string]string{"PROTO": "dhcp", "DNSDOMAIN": "lab.test", "IPV4DNS0": netlab.ServerIP})
}

// TestNetDHCPRootPath: no server on the command line; DHCP's root-path (option 17) names it,
// with host name (option 12) and MTU (option 26) from the same answer.
func TestNetDHCPRootPath(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	lab, srv := newLab(t, e)
	tap := lab.AddTap(t)
	rootPath := "nbd://" + srv.Addr + "/root"
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{
		Router: net.ParseIP(netlab.ServerIP), RootPath: rootPath, MTU: 1400,
		Hostnames: map[string]string{macA: "rp-client"},
	})
	v, g := bootNet(t, e, vm.Options{
		Append:  "ip=dhcp root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", tap, macA),
	})
	v.Expect(`stage nbd .* ← `+regexp.QuoteMeta(srv.Addr), time.Second)
	eth := g.byMAC(t, macA)
	if eth.mtu != "1400" {
		t.Errorf("%s has MTU %s, want DHCP's 1400", eth.name, eth.mtu)
	}
	g.wantLine(t, "hostname", `^rp-client$`)
	g.wantVars(t, "/run/net-"+eth.name+".conf", map[string]string{
		"PROTO": "dhcp", "HOSTNAME": "rp-client", "ROOTPATH": rootPath, "ROOTSERVER": netlab.ServerIP,
		"IPV4ADDR": dhcp.Leases()[macA].String(),
	})
	g.wantVars(t, "/run/nbdroot/net-"+eth.name+".env", map[string]string{"ROOT_PATH": rootPath, "MTU": "1400", "HOSTNAME": "rp-client"})
	for _, r := range dhcp.Requests() {
		if r.Class != "nbdroot" {
			t.Errorf("DHCP %v from %s carries vendor class %q, want nbdroot", r.Type, r.MAC, r.Class)
		}
	}
}

// TestNetBootIF: two NICs, both with a DHCP server behind them: QEMU's user network on the
// first, the lab on the second. BOOTIF names the second, so the init must configure it and
// leave the first alone (the NBD server is only reachable through the lab).
func TestNetBootIF(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	lab, srv := newLab(t, e)
	tap := lab.AddTap(t)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{Router: net.ParseIP(netlab.ServerIP)})
	extra := []string{"-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,mac=" + macA + ",romfile="}
	extra = append(extra, netlab.NIC("n1", tap, macB)...)
	_, g := bootNet(t, e, vm.Options{
		Append:  "ip=dhcp " + bootif(macB) + " nbd_server=" + srv.Addr + " root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: extra,
	})
	first, second := g.byMAC(t, macA), g.byMAC(t, macB)
	if len(first.inet) != 0 {
		t.Errorf("%s (the first NIC) has %v: BOOTIF named the other one", first.name, first.inet)
	}
	lease := dhcp.Leases()[macB]
	if lease == nil || !slices.Equal(second.inet, []string{lease.String() + "/24"}) {
		t.Errorf("%s (BOOTIF) has %v, want the lab's lease %v/24", second.name, second.inet, lease)
	}
	g.wantFiles(t, "/run/net-"+second.name+".conf", "/run/nbdroot/net-"+second.name+".env")
	g.wantVars(t, "/run/nbdroot/net-"+second.name+".env", map[string]string{"MAC": macB, "PARAMETER": "ip=dhcp"})
}

// TestNetTwoIP: dracut's ip=IFACE:dhcp twice configures both NICs (here on the same lab
// network, both answers naming a router): one default route, via the first ip=.
func TestNetTwoIP(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	lab, srv := newLab(t, e)
	server := net.ParseIP(netlab.ServerIP)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{Router: server, DNS: []net.IP{server}})
	extra := append(netlab.NIC("n0", lab.AddTap(t), macA), netlab.NIC("n1", lab.AddTap(t), macB)...)
	v, g := bootNet(t, e, vm.Options{
		Append:  "ip=eth0:dhcp ip=eth1:dhcp nbd_server=" + srv.Addr + " root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: extra,
	})
	leases := dhcp.Leases()
	for _, want := range []struct{ mac, name string }{{macA, "eth0"}, {macB, "eth1"}} {
		i := g.byMAC(t, want.mac)
		if l := leases[want.mac]; i.name != want.name || l == nil || !slices.Equal(i.inet, []string{l.String() + "/24"}) {
			t.Errorf("%s (%s) has %v, want %s with its lease %v/24", i.name, want.mac, i.inet, want.name, l)
		}
	}
	g.wantLine(t, "route", `^default via 10\.77\.0\.1 dev eth0`)
	if n := strings.Count(g["route"], "default"); n != 1 {
		t.Errorf("%d default routes:\n%s", n, g["route"])
	}
	if n := strings.Count(g["resolv"], "nameserver 10.77.0.1"); n != 1 {
		t.Errorf("the name server both leases give is listed %d times:\n%s", n, g["resolv"])
	}
	g.wantFiles(t, "/run/net-eth0.conf", "/run/net-eth1.conf", "/run/nbdroot/net-eth0.env", "/run/nbdroot/net-eth1.env")
	g.wantVars(t, "/run/nbdroot/net-eth0.env", map[string]string{"DEFAULT_ROUTE": "yes", "PRIMARY": "yes", "PARAMETER": "ip=eth0:dhcp"})
	g.wantVars(t, "/run/nbdroot/net-eth1.env", map[string]string{"DEFAULT_ROUTE": "no", "PRIMARY": "no", "GATEWAY": netlab.ServerIP})
	v.Expect(`net: eth1: gateway 10\.77\.0\.1 not used: the default route goes via 10\.77\.0\.1 on eth0`, time.Second)
}
