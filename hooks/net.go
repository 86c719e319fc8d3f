package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
)

// Defaults of the net hook, documented in docs/network.md.
const (
	// DefaultWaitNIC bounds the wait for a NIC to appear: drivers load in the background
	// while the hooks run.
	DefaultWaitNIC = 10 * time.Second
	// DefaultCarrier bounds the wait for link carrier once an interface is up; switch ports
	// running spanning tree can take a few seconds.
	DefaultCarrier = 10 * time.Second
	// DefaultDHCP bounds the DHCPv4 exchange on one interface, every retry included.
	DefaultDHCP = 60 * time.Second
)

// Net brings up the network for the root: every ip= of the command line (one per NIC, or one
// without a device for "the boot NIC"), by DHCPv4 or statically, then the default route,
// /etc/resolv.conf and the hostname.
//
// The NIC of an ip= without a device is the one BOOTIF names (the NIC that PXE-booted),
// else the first one with carrier. An ip= naming a device configures that device.
//
// The configuration is left in place for the real root (the seed's NETWORK_PERSIST):
// nothing is ever flushed or set down, and every interface's configuration is written to
// /run/net-IFACE.conf (klibc ipconfig's form, read by Debian's initramfs-tools and ifupdown)
// and /run/nbdroot/net-IFACE.env, which switch_root carries into the root with /run; a DHCPv4
// interface gets NetworkManager's runtime files too, so that a root's NetworkManager takes
// its lease over (nmFiles).
type Net struct {
	// WaitNIC bounds the wait for a NIC to appear; default DefaultWaitNIC.
	WaitNIC time.Duration
	// Carrier bounds the wait for link carrier; default DefaultCarrier.
	Carrier time.Duration
	// DHCP bounds the DHCPv4 exchange on one interface, retries included; default
	// DefaultDHCP.
	DHCP time.Duration

	// poll is how often NICs are listed while waiting for one; backoff the first pause
	// between two DHCP attempts. Tests shorten them.
	poll    time.Duration
	backoff time.Duration
}

// Name implements Hook.
func (Net) Name() string { return "net" }

func (n Net) withDefaults() Net {
	if n.WaitNIC <= 0 {
		n.WaitNIC = DefaultWaitNIC
	}
	if n.Carrier <= 0 {
		n.Carrier = DefaultCarrier
	}
	if n.DHCP <= 0 {
		n.DHCP = DefaultDHCP
	}
	if n.poll <= 0 {
		n.poll = 20 * time.Millisecond
	}
	if n.backoff <= 0 {
		n.backoff = time.Second
	}
	return n
}

// ipEntry is one ip= the hook acts on.
type ipEntry struct {
	cfg bootparam.IPConfig
	// param is the parameter as written, for messages ("ip=eth1:dhcp").
	param string
}

// choice is the NIC picked for an ip=, and whether it was already seen with carrier.
type choice struct {
	nic     NIC
	carrier bool
}

// link is one configured interface.
type link struct {
	entry ipEntry
	nic   NIC
	nc    *NetConfig
	// lease is the DHCP answer; nil for a static configuration.
	lease *Lease
	// rootServer is klibc's ROOTSERVER: the static SERVER field, or the DHCP answer's
	// siaddr, else its server identifier (bootp_parse in klibc's ipconfig).
	rootServer net.IP
	// route is true for the interface that carries the default route.
	route bool
	// uptime is when the configuration was obtained, in time since boot.
	uptime time.Duration
}

// Run implements Hook.
func (n Net) Run(ctx context.Context, s *State) error {
	n = n.withDefaults()
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "net"); err != nil {
			return fail("net", "", "load network drivers", err)
		}
	}
	entries, off := ipEntries(s.Plan)
	if len(entries) == 0 {
		return nil
	}
	created, ports, err := n.netdevs(ctx, s)
	if err != nil {
		return err
	}
	choices, err := n.chooseNICs(ctx, s, entries, off, created, ports)
	if err != nil {
		return err
	}
	// Interfaces come up and ask DHCP in parallel: a second NIC costs no extra boot time.
	links := make([]*link, len(entries))
	errs := make([]error, len(entries))
	var wg sync.WaitGroup
	for i := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			links[i], errs[i] = n.bringUp(ctx, s, entries[i], choices[i])
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	if err := apply(s, links); err != nil {
		return err
	}
	return addStaticRoutes(s)
}

// Summary implements Summarizer.
func (Net) Summary(s *State) string {
	if s.Net == nil {
		return "network off (ip=off)"
	}
	ones, _ := s.Net.Address.Mask.Size()
	sum := fmt.Sprintf("%s %s/%d via %s", s.Net.Interface, s.Net.Address.IP, ones, s.Net.Method)
	if s.Net.Gateway != nil {
		sum += ", gateway " + s.Net.Gateway.String()
	}
	return sum
}

// ipEntries returns the ip= entries to configure, in command line order, and the devices
// that ip=DEVICE:off keeps out of the automatic choice. A Plan without ip= (not made by
// bootparam.Parse, which adds the default) means DHCP, which is what a diskless client needs.
func ipEntries(p *bootparam.Plan) ([]ipEntry, map[string]bool) {
	ips := p.IP
	if len(ips) == 0 {
		ips = []bootparam.IPConfig{{Mode: bootparam.ModeDHCP}}
	}
	off := map[string]bool{}
	var out []ipEntry
	for i, c := range ips {
		if c.Mode == bootparam.ModeOff {
			if c.Device != "" {
				off[c.Device] = true
			}
			continue
		}
		param := p.Sources["ip["+strconv.Itoa(i)+"]"]
		if !strings.HasPrefix(param, "ip=") {
			param = "ip= (none given: DHCP by default)"
			if len(p.IP) > 0 {
				param = "ip=" + ipParam(c)
			}
		}
		out = append(out, ipEntry{cfg: c, param: param})
	}
	return out, off
}

// ipParam writes an IPConfig back in the kernel's form, for Plans without Sources.
func ipParam(c bootparam.IPConfig) string {
	if c.Address == "" && c.Device == "" && c.Hostname == "" && c.Autoconf != "" {
		return c.Autoconf
	}
	if c.Address == "" && c.Device != "" && c.Hostname == "" && c.Autoconf != "" {
		return c.Device + ":" + c.Autoconf
	}
	return strings.TrimRight(strings.Join([]string{c.Address, c.Server, c.Gateway, c.Netmask, c.Hostname, c.Device, c.Autoconf}, ":"), ":")
}

// bootifParam is BOOTIF= as written, for messages.
func bootifParam(p *bootparam.Plan) string {
	if src := p.Sources["bootif"]; strings.HasPrefix(src, "BOOTIF=") {
		return src
	}
	return "BOOTIF=01-" + strings.ReplaceAll(p.BootIF, ":", "-")
}

// chooseNICs picks the NIC of every entry. An entry naming a device gets that device. An
// entry without one gets the NIC BOOTIF names (pxelinux IPAPPEND 2: the NIC that
// PXE-booted), else the first NIC, in the kernel's probe order, that has carrier once all
// are up; NICs that another ip= names or turns off, or that are ports of a bond or bridge
// (ports), are not candidates. An entry may name a device the hook created (created).
func (n Net) chooseNICs(ctx context.Context, s *State, entries []ipEntry, off map[string]bool, created map[string]NIC, ports map[string]string) ([]choice, error) {
	out := make([]choice, len(entries))
	claimed := map[string]string{}
	for dev := range off {
		claimed[dev] = "ip=" + dev + ":off"
	}
	for dev, by := range ports {
		claimed[dev] = by
	}
	for name := range created {
		// A virtual device is never "the first NIC with carrier".
		claimed[name] = "its own parameter"
	}
	for i, e := range entries {
		dev := e.cfg.Device
		if dev == "" {
			continue
		}
		if nic, ok := created[dev]; ok {
			out[i] = choice{nic: nic}
			claimed[dev] = e.param
			continue
		}
		nic, nics, err := n.waitNIC(ctx, s, func(nic NIC) bool { return nic.Name == dev })
		if err != nil {
			return nil, fail("net", e.param, "find interface "+dev, err)
		}
		if nic == nil {
			return nil, fail("net", e.param, "find interface "+dev,
				fmt.Errorf("no interface %q after waiting %s (found: %s)", dev, n.WaitNIC, nicList(nics)))
		}
		if s.Plan.BootIF != "" && len(entries) == 1 && nic.MAC != s.Plan.BootIF {
			// The command line names the device; BOOTIF is what pxelinux appends to every
			// entry. What the administrator wrote wins, as with klibc's ipconfig.
			s.Log.Printf("net: %s names %s; BOOTIF %s (another NIC) is not used", e.param, dev, s.Plan.BootIF)
		}
		out[i] = choice{nic: *nic}
		claimed[dev] = e.param
	}
	for i, e := range entries {
		if e.cfg.Device != "" {
			continue
		}
		c, err := n.autoNIC(ctx, s, e, claimed)
		if err != nil {
			return nil, err
		}
		out[i] = c
		claimed[c.nic.Name] = e.param
	}
	return out, nil
}

// autoNIC picks the NIC of an ip= without a device.
func (n Net) autoNIC(ctx context.Context, s *State, e ipEntry, claimed map[string]string) (choice, error) {
	if mac := s.Plan.BootIF; mac != "" {
		param := bootifParam(s.Plan)
		nic, nics, err := n.waitNIC(ctx, s, func(nic NIC) bool { return nic.MAC == mac })
		if err != nil {
			return choice{}, fail("net", param, "find the interface that PXE-booted", err)
		}
		if nic == nil {
			return choice{}, fail("net", param, "find the interface that PXE-booted",
				fmt.Errorf("no interface has the BOOTIF address %s after waiting %s (found: %s)", mac, n.WaitNIC, nicList(nics)))
		}
		by, taken := claimed[nic.Name]
		if !taken {
			return choice{nic: *nic}, nil
		}
		s.Log.Printf("net: BOOTIF %s is %s, which %s configures; %s takes the first other interface with carrier", mac, nic.Name, by, e.param)
	}
	free := func(nic NIC) bool { _, taken := claimed[nic.Name]; return !taken }
	first, nics, err := n.waitNIC(ctx, s, free)
	if err != nil {
		return choice{}, fail("net", e.param, "find a network interface", err)
	}
	if first == nil {
		why := fmt.Errorf("no Ethernet interface appeared within %s: is its driver in the image? (nbdroot initramfs --nics)", n.WaitNIC)
		if len(nics) > 0 {
			why = fmt.Errorf("every interface is taken by another ip= (found: %s)", nicList(nics))
		}
		return choice{}, fail("net", e.param, "find a network interface", why)
	}
	nic, err := n.firstWithCarrier(ctx, s, free)
	if err != nil {
		return choice{}, fail("net", e.param, "find an interface with carrier", err)
	}
	return choice{nic: nic, carrier: true}, nil
}

// waitNIC lists the NICs until one matches or WaitNIC has passed. It returns the match (nil
// when there is none) and the NICs seen last, for the error message.
func (n Net) waitNIC(ctx context.Context, s *State, match func(NIC) bool) (*NIC, []NIC, error) {
	deadline := time.Now().Add(n.WaitNIC)
	for {
		nics, err := s.Sys.Net.NICs()
		if err != nil {
			return nil, nil, err
		}
		for _, nic := range nics {
			if match(nic) {
				return &nic, nics, nil
			}
		}
		if !time.Now().Before(deadline) {
			return nil, nics, nil
		}
		select {
		case <-ctx.Done():
			return nil, nics, ctx.Err()
		case <-time.After(n.poll):
		}
	}
}

// firstWithCarrier sets every candidate up at once and returns the first, in probe order,
// that had carrier when the first carrier came. NICs whose driver loads during the wait join
// in: the cable may be on the slower one. The others stay up: an interface is never set down
// again.
func (n Net) firstWithCarrier(ctx context.Context, s *State, candidate func(NIC) bool) (NIC, error) {
	cctx, cancel := context.WithTimeout(ctx, n.Carrier)
	defer cancel()
	type result struct {
		name string
		err  error
	}
	results := make(chan result)
	started := map[string]bool{}
	var order []NIC // every candidate seen, in probe order
	up := map[string]bool{}
	var other []error
	pending := 0
	start := func() error {
		nics, err := s.Sys.Net.NICs()
		if err != nil {
			return err
		}
		order = order[:0]
		for _, nic := range nics {
			if !candidate(nic) {
				continue
			}
			order = append(order, nic)
			if !started[nic.Name] {
				started[nic.Name] = true
				pending++
				go func() { results <- result{nic.Name, s.Sys.Net.LinkUp(cctx, nic.Name)} }()
			}
		}
		return nil
	}
	err := start()
	tick := time.NewTicker(n.poll)
	defer tick.Stop()
	// Every LinkUp started is waited for before returning: each goroutine ends by sending
	// its result, and cancel makes the ones still waiting for carrier give up.
	for pending > 0 {
		select {
		case r := <-results:
			pending--
			switch {
			case r.err == nil:
				up[r.name] = true
				cancel() // one has carrier: stop waiting for the others
			case !errors.Is(r.err, context.DeadlineExceeded) && !errors.Is(r.err, context.Canceled):
				other = append(other, r.err)
			}
		case <-tick.C:
			if err == nil && cctx.Err() == nil {
				err = start()
			}
		}
	}
	if err != nil {
		return NIC{}, err
	}
	for _, nic := range order {
		if up[nic.Name] {
			return nic, nil
		}
	}
	if err := ctx.Err(); err != nil {
		return NIC{}, err
	}
	err = fmt.Errorf("no interface got carrier within %s (tried: %s): is a cable plugged in?", n.Carrier, nicList(order))
	if len(other) > 0 {
		err = fmt.Errorf("%w; %w", err, errors.Join(other...))
	}
	return NIC{}, err
}

func nicList(nics []NIC) string {
	if len(nics) == 0 {
		return "no Ethernet interface"
	}
	var names []string
	for _, n := range nics {
		names = append(names, n.Name+" "+n.MAC)
	}
	return strings.Join(names, ", ")
}

// bringUp sets the interface up, waits for carrier and obtains its configuration (DHCP or
// static); apply configures it.
func (n Net) bringUp(ctx context.Context, s *State, e ipEntry, c choice) (*link, error) {
	name := c.nic.Name
	if !c.carrier {
		uctx, cancel := context.WithTimeout(ctx, n.Carrier)
		err := s.Sys.Net.LinkUp(uctx, name)
		cancel()
		if err != nil {
			return nil, fail("net", e.param, fmt.Sprintf("bring %s (%s) up and wait %s for carrier (is the cable plugged in?)", name, c.nic.MAC, n.Carrier), err)
		}
	}
	l := &link{entry: e, nic: c.nic}
	nc := &NetConfig{Interface: name, MAC: c.nic.MAC}
	switch e.cfg.Mode {
	case bootparam.ModeStatic:
		if err := staticConfig(e.cfg, nc); err != nil {
			return nil, fail("net", e.param, "read the static configuration", err)
		}
		l.rootServer = net.ParseIP(e.cfg.Server)
	default:
		proto := protocols[e.cfg.Mode]
		lease, err := n.dhcp(ctx, s, name, e.cfg, proto)
		if err != nil {
			return nil, fail("net", e.param, proto.tried(name), err)
		}
		l.lease = lease
		from := proto.answer
		if lease.ServerID != nil {
			from += " of " + lease.ServerID.String()
		}
		for _, r := range lease.Refused {
			s.Log.Printf("net: %s: %s: %s", name, from, r)
		}
		for _, note := range lease.Notes {
			s.Log.Printf("net: %s: %s", name, note)
		}
		fromLease(lease, nc)
		nc.Method = proto.method
		l.rootServer = lease.NextServer
		if l.rootServer == nil {
			l.rootServer = lease.ServerID
		}
		switch {
		case e.cfg.Hostname != "":
			// The command line's hostname wins over DHCP's (it was also sent as option 12).
			nc.Hostname = e.cfg.Hostname
		case nc.Hostname != "" && !validDomain(nc.Hostname):
			s.Log.Printf("net: %s: ignoring DHCP host name %q: not a valid host name", name, nc.Hostname)
			nc.Hostname = ""
		}
		if nc.Domain != "" && !validDomain(nc.Domain) {
			s.Log.Printf("net: %s: ignoring DHCP domain name %q: not a valid domain name", name, nc.Domain)
			nc.Domain = ""
		}
		if err := cmdlineOverrides(e.cfg, nc, l); err != nil {
			return nil, fail("net", e.param, "read the fields given with DHCP", err)
		}
	}
	if e.cfg.MTU != 0 {
		// dracut's ip=…:MTU wins over DHCP's option 26.
		nc.MTU = e.cfg.MTU
	}
	l.nc = nc
	l.uptime = s.Sys.Machine.Uptime()
	return l, nil
}

// cmdlineOverrides applies the fields an ip= in DHCP mode gives (SERVER, GW, NETMASK, DNS0,
// DNS1): they win over the lease, as in the kernel's ipconfig, which only takes from the
// DHCP answer what the command line left empty (ic_do_bootp_ext, ic_bootp_recv_reply).
func cmdlineOverrides(c bootparam.IPConfig, nc *NetConfig, l *link) error {
	if c.Netmask != "" {
		mask := net.IPMask(net.ParseIP(c.Netmask).To4())
		if ones, bits := mask.Size(); bits != 32 || ones == 0 {
			return fmt.Errorf("netmask %q is not an IPv4 netmask", c.Netmask)
		}
		nc.Address.Mask = mask
	}
	if c.Gateway != "" {
		gw := net.ParseIP(c.Gateway).To4()
		if gw == nil {
			return fmt.Errorf("gateway %q is not an IPv4 address", c.Gateway)
		}
		nc.Gateway = gw
	}
	if len(c.DNS) > 0 {
		nc.DNS = nil
		for _, d := range c.DNS {
			if ip := net.ParseIP(d); ip != nil {
				nc.DNS = append(nc.DNS, ip)
			}
		}
	}
	if ip := net.ParseIP(c.Server); ip != nil {
		l.rootServer = ip
	}
	return nil
}

// protocol is one way of asking the network for an address.
type protocol struct {
	// name is what is asked for, in messages; answer what answers it; method the
	// NetConfig's Method.
	name, answer, method string
	// server says what the network needs, for failure messages.
	server string
	// ask runs one exchange on the interface.
	ask func(n Network) func(ctx context.Context, name string, req DHCPRequest) (*Lease, error)
	// check refuses an answer the interface cannot be configured with.
	check func(l *Lease) error
}

func (p protocol) tried(iface string) string {
	return "get " + p.name + " on " + iface + " (" + p.server + ")"
}

// protocols are the ip= modes that ask the network, by mode.
var protocols = map[string]protocol{
	bootparam.ModeDHCP: {name: "a DHCPv4 lease", answer: "DHCPv4 answer", method: "dhcp", server: "is a DHCP server on this network?",
		ask: func(n Network) func(context.Context, string, DHCPRequest) (*Lease, error) { return n.DHCP }, check: checkLease},
	bootparam.ModeDHCP6: {name: "a DHCPv6 lease", answer: "DHCPv6 answer", method: "dhcp6", server: "is a DHCPv6 server on this network?",
		ask: func(n Network) func(context.Context, string, DHCPRequest) (*Lease, error) { return n.DHCP6 }, check: checkLease6},
	bootparam.ModeAuto6: {name: "an IPv6 address by autoconfiguration", answer: "router advertisement", method: "auto6", server: "is an IPv6 router advertising a prefix on this network?",
		ask: func(n Network) func(context.Context, string, DHCPRequest) (*Lease, error) { return n.Autoconf6 }, check: checkLease6},
}

// dhcp asks for a lease until one comes or the DHCP budget is spent. Each attempt is a whole
// exchange (DHCPv4's DISCOVER/OFFER/REQUEST/ACK, DHCPv6's SOLICIT/…/REPLY; the client
// retransmits within it, or waiting for SLAAC); a failed attempt — no answer, a refusal, an
// answer without an address — is retried with backoff.
func (n Net) dhcp(ctx context.Context, s *State, name string, cfg bootparam.IPConfig, proto protocol) (*Lease, error) {
	dctx, cancel := context.WithTimeout(ctx, n.DHCP)
	defer cancel()
	// nclient4 sends each message up to Retries times and doubles the wait every time, as
	// RFC 2131 section 4.1 asks; starting at 2 s rather than its 4 s gets a lost packet back
	// sooner on a boot that waits for it.
	req := DHCPRequest{Hostname: cfg.Hostname, Timeout: 2 * time.Second, Retries: 3}
	backoff := n.backoff
	for attempt := 1; ; attempt++ {
		sent := s.Sys.Machine.Uptime()
		lease, err := proto.ask(s.Sys.Net)(dctx, name, req)
		if err == nil {
			if err = proto.check(lease); err == nil {
				lease.Requested, lease.SentHostname = sent, req.Hostname
				return lease, nil
			}
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.Log.Debugf("net: %s: %s, attempt %d: %v", name, proto.name, attempt, err)
		select {
		case <-dctx.Done():
			return nil, fmt.Errorf("no usable answer within %s (%d attempts; last: %w)", n.DHCP, attempt, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 8*time.Second)
	}
}

// checkLease refuses a DHCP answer the interface cannot be configured with.
func checkLease(l *Lease) error {
	if l == nil || l.Address.IP.To4() == nil || l.Address.IP.IsUnspecified() {
		return errors.New("the answer gives no IPv4 address")
	}
	if ones, bits := l.Address.Mask.Size(); bits != 32 || ones == 0 {
		return fmt.Errorf("the answer's subnet mask %s is not a valid IPv4 netmask", net.IP(l.Address.Mask))
	}
	return nil
}

// checkLease6 refuses an IPv6 answer without a global unicast address.
func checkLease6(l *Lease) error {
	if l == nil || l.Address.IP.To16() == nil || l.Address.IP.To4() != nil || !l.Address.IP.IsGlobalUnicast() {
		return errors.New("the answer gives no global IPv6 address")
	}
	if ones, bits := l.Address.Mask.Size(); bits != 128 || ones == 0 {
		return errors.New("the answer's address has no valid prefix length")
	}
	return nil
}

// staticConfig reads an ip= static configuration into nc. bootparam has checked the fields
// and filled the classful netmask (ic_defaults); this only converts them.
func staticConfig(c bootparam.IPConfig, nc *NetConfig) error {
	if strings.Contains(c.Address, ":") {
		return staticConfig6(c, nc)
	}
	ip := net.ParseIP(c.Address).To4()
	if ip == nil {
		return fmt.Errorf("client address %q is not an IPv4 address", c.Address)
	}
	mask := net.IPMask(net.ParseIP(c.Netmask).To4())
	if ones, bits := mask.Size(); bits != 32 || ones == 0 {
		return fmt.Errorf("netmask %q is not an IPv4 netmask", c.Netmask)
	}
	nc.Method = "static"
	nc.Address = net.IPNet{IP: ip, Mask: mask}
	if c.Gateway != "" {
		gw := net.ParseIP(c.Gateway).To4()
		if gw == nil {
			return fmt.Errorf("gateway %q is not an IPv4 address", c.Gateway)
		}
		nc.Gateway = gw
	}
	for _, d := range c.DNS {
		if ip := net.ParseIP(d).To4(); ip != nil {
			nc.DNS = append(nc.DNS, ip)
		}
	}
	nc.Hostname = c.Hostname
	return nil
}

// staticConfig6 is staticConfig for an IPv6 address with a prefix length.
func staticConfig6(c bootparam.IPConfig, nc *NetConfig) error {
	ip := net.ParseIP(c.Address)
	bits, err := strconv.Atoi(c.Netmask)
	if ip == nil || ip.To4() != nil || err != nil || bits < 1 || bits > 128 {
		return fmt.Errorf("%s/%s is not an IPv6 address with a prefix length", c.Address, c.Netmask)
	}
	nc.Method = "static"
	nc.Address = net.IPNet{IP: ip, Mask: net.CIDRMask(bits, 128)}
	if c.Gateway != "" {
		if nc.Gateway = net.ParseIP(c.Gateway); nc.Gateway == nil {
			return fmt.Errorf("gateway %q is not an address", c.Gateway)
		}
	}
	for _, d := range c.DNS {
		if ip := net.ParseIP(d); ip != nil {
			nc.DNS = append(nc.DNS, ip)
		}
	}
	nc.Hostname = c.Hostname
	return nil
}

func fromLease(l *Lease, nc *NetConfig) {
	nc.Method = "dhcp"
	nc.Address = l.Address
	nc.Gateway = l.Gateway
	nc.DNS = l.DNS
	nc.Domain = l.Domain
	nc.Hostname = l.Hostname
	nc.MTU = l.MTU
	nc.ServerID = l.ServerID
	nc.NextServer = l.NextServer
	nc.RootPath = l.RootPath
	nc.LeaseTime = l.LeaseTime
	nc.Routes = l.Routes
	nc.Lease = l
}

// validDomain accepts a host or domain name made of RFC 1123 labels (letters, digits,
// hyphens; no leading or trailing hyphen), with an optional final dot. Names from the network
// go into /etc/resolv.conf and the kernel's hostname: a newline or a space there would
// change their meaning.
func validDomain(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// apply configures every interface, in command line order: address, MTU, and the default
// route on the first one that has a gateway (one default route; the others' gateways are
// recorded, not routed). Then the hostname, resolv.conf and the lease files.
func apply(s *State, links []*link) error {
	primary := primaryLink(s.Plan, links)
	if err := rootPathRefused(s.Plan, primary); err != nil {
		return err
	}
	// One default route per IP version, via the first interface (command line order) whose
	// configuration has a gateway of that version.
	routedBy := map[bool]*link{}
	for _, l := range links {
		if v6 := isV6(l.nc.Gateway); l.nc.Gateway != nil && routedBy[v6] == nil {
			routedBy[v6] = l
		}
	}
	for _, l := range links {
		c := *l.nc
		routed := routedBy[isV6(l.nc.Gateway)]
		l.route = l.nc.Gateway != nil && l == routed
		if !l.route {
			c.Gateway = nil
		}
		if err := s.Sys.Net.Configure(c.Interface, &c); err != nil {
			ones, _ := c.Address.Mask.Size()
			return fail("net", l.entry.param, fmt.Sprintf("configure %s with %s/%d", c.Interface, c.Address.IP, ones), err)
		}
		if !l.route && l.nc.Gateway != nil {
			s.Log.Printf("net: %s: gateway %s not used: the default route goes via %s on %s", c.Interface, l.nc.Gateway, routed.nc.Gateway, routed.nc.Interface)
		}
		if len(links) > 1 {
			s.Log.Printf("net: %s", describe(l))
		}
	}
	if host := hostname(links); host != "" {
		if err := s.Sys.Net.SetHostname(host); err != nil {
			s.Log.Printf("net: set hostname %q: %v", host, err)
		}
	}
	s.Net = primary.nc
	s.Links = nil
	for _, l := range links {
		s.Links = append(s.Links, l.nc)
	}
	if err := writeNetFiles(s, links, primary); err != nil {
		// The root can still boot; it just will not find the lease files.
		s.Log.Printf("net: %v", err)
	}
	return nil
}

// rootPathRefused fails the boot when the NBD server is left to DHCP and the root-path of
// the lease that names it was refused: falling back to the DHCP server's address would
// connect to a server the root-path did not name.
func rootPathRefused(p *bootparam.Plan, primary *link) error {
	if !p.NBD.FromDHCP || primary.lease == nil {
		return nil
	}
	for _, r := range primary.lease.Refused {
		if r.RootPath {
			return fail("net", primary.entry.param, "read the NBD root from the DHCP root-path on "+primary.nc.Interface,
				fmt.Errorf("DHCP server %s: %s", primary.lease.ServerID, r))
		}
	}
	return nil
}

// isV6 reports whether ip is an IPv6 address (false for nil).
func isV6(ip net.IP) bool { return ip != nil && ip.To4() == nil }

// describe says in one line what an interface got.
func describe(l *link) string {
	ones, _ := l.nc.Address.Mask.Size()
	d := fmt.Sprintf("%s (%s) %s/%d via %s", l.nc.Interface, l.nc.MAC, l.nc.Address.IP, ones, l.nc.Method)
	if l.route {
		d += ", default route via " + l.nc.Gateway.String()
	}
	return d
}

// hostname is the first host name, in command line order, of the ip= hostname fields and
// the DHCP answers. The kernel keeps at most 64 bytes (__NEW_UTS_LEN); a longer fully
// qualified name is cut to its first label.
func hostname(links []*link) string {
	for _, l := range links {
		if h := l.nc.Hostname; h != "" {
			if len(h) > 64 {
				h, _, _ = strings.Cut(h, ".")
			}
			return h
		}
	}
	return ""
}

// primaryLink is the configuration the other hooks read (State.Net): when the NBD server
// comes from DHCP, the first DHCP lease (its root-path names the server); otherwise the
// first interface.
func primaryLink(p *bootparam.Plan, links []*link) *link {
	if p.NBD.FromDHCP {
		for _, l := range links {
			if l.lease != nil {
				return l
			}
		}
	}
	return links[0]
}

// writeNetFiles records the configuration: /etc/resolv.conf for the initramfs itself (the
// nbd hook's resolver reads it), a copy in /run/nbdroot/resolv.conf for the root, and per
// interface /run/net-IFACE.conf (klibc form), /run/nbdroot/net-IFACE.env (ours) and, for a
// DHCPv4 interface, NetworkManager's runtime files (nmFiles).
func writeNetFiles(s *State, links []*link, primary *link) error {
	var errs []error
	write := func(path, content string) {
		if err := s.Sys.Files.WriteFile(path, []byte(content), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("write %s: %w", path, err))
		}
	}
	resolv := resolvConf(links)
	if err := s.Sys.Files.MkdirAll("/etc", 0o755); err != nil {
		errs = append(errs, err)
	}
	write("/etc/resolv.conf", resolv)
	if err := s.Sys.Files.MkdirAll("/run/nbdroot", 0o755); err != nil {
		errs = append(errs, err)
	}
	write("/run/nbdroot/resolv.conf", resolv)
	for _, l := range links {
		// klibc's format is IPv4's: an IPv6 interface has only nbdroot's file.
		if !isV6(l.nc.Address.IP) {
			write("/run/net-"+l.nc.Interface+".conf", klibcConf(l))
		}
		write("/run/nbdroot/net-"+l.nc.Interface+".env", envConf(l, l == primary))
		for _, f := range nmFiles(l) {
			if err := s.Sys.Files.MkdirAll(path.Dir(f.path), 0o755); err != nil {
				errs = append(errs, err)
			}
			perm := os.FileMode(0o644)
			if f.private {
				perm = 0o600
			}
			if err := s.Sys.Files.WriteFile(f.path, []byte(f.content), perm); err != nil {
				errs = append(errs, fmt.Errorf("write %s: %w", f.path, err))
			}
		}
	}
	return errors.Join(errs...)
}

// resolvConf renders resolv.conf(5): the search domains (DHCP option 119, else option 15)
// and the name servers of every interface, in command line order, without duplicates.
func resolvConf(links []*link) string {
	var b strings.Builder
	b.WriteString("# written by nbdroot-init (net hook)\n")
	var search []string
	var servers []string
	seen := map[string]bool{}
	add := func(list *[]string, v string) {
		if v != "" && !seen[v] {
			seen[v] = true
			*list = append(*list, v)
		}
	}
	for _, l := range links {
		for _, d := range searchList(l) {
			add(&search, d)
		}
		for _, ip := range l.nc.DNS {
			add(&servers, ip.String())
		}
	}
	if len(search) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(search, " "))
	}
	for _, ip := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", ip)
	}
	return b.String()
}

// searchList is an interface's DNS search list: DHCP's domain search option (RFC 3397),
// else its domain name; names that are not valid domains are left out.
func searchList(l *link) []string {
	var list []string
	if l.lease != nil {
		for _, d := range l.lease.Search {
			if validDomain(d) {
				list = append(list, strings.TrimSuffix(d, "."))
			}
		}
	}
	if len(list) == 0 && validDomain(l.nc.Domain) {
		list = append(list, strings.TrimSuffix(l.nc.Domain, "."))
	}
	return list
}

// shellQuote quotes a value the way klibc's ipconfig writes it (write_option): inside
// single quotes, with ' and ! closed out and backslash-escaped, so that both sh and bash
// (history expansion) read the value back unchanged.
func shellQuote(v string) string {
	var b strings.Builder
	b.WriteByte('\'')
	// Byte by byte, not rune by rune: a value from the network need not be UTF-8, and
	// ranging over a string turns every invalid byte into U+FFFD.
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\'' || c == '!' {
			b.WriteString(`'\`)
			b.WriteByte(c)
			b.WriteByte('\'')
			continue
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('\'')
	return b.String()
}

// shellVars renders KEY='value' lines.
func shellVars(kv [][2]string) string {
	var b strings.Builder
	for _, p := range kv {
		b.WriteString(p[0])
		b.WriteByte('=')
		b.WriteString(shellQuote(strings.ReplaceAll(p[1], "\x00", "")))
		b.WriteByte('\n')
	}
	return b.String()
}

// ip4 writes an address the way klibc does: 0.0.0.0 for none.
func ip4(ip net.IP) string {
	if ip.To4() == nil {
		return "0.0.0.0"
	}
	return ip.To4().String()
}

// broadcastOf is the lease's broadcast address (option 28), else the subnet's.
func broadcastOf(l *link) net.IP {
	if l.lease != nil && l.lease.Broadcast != nil {
		return l.lease.Broadcast
	}
	ip := l.nc.Address.IP.To4()
	m := l.nc.Address.Mask
	if ip == nil || len(m) != 4 {
		return nil
	}
	b := make(net.IP, 4)
	for i := range b {
		b[i] = ip[i] | ^m[i]
	}
	return b
}

// klibcConf renders /run/net-IFACE.conf exactly as klibc's ipconfig does
// (usr/kinit/ipconfig/main.c, dump_device_config): the same keys in the same order,
// addresses as dotted quads with 0.0.0.0 for none, PROTO dhcp or none, DOMAINSEARCH as
// ipconfig decodes option 119 (each domain with its final dot, space-separated), UPTIME in
// whole seconds since boot. Debian's initramfs-tools and ifupdown source this file.
func klibcConf(l *link) string {
	nc := l.nc
	dns := []string{"0.0.0.0", "0.0.0.0"}
	for i := 0; i < len(nc.DNS) && i < 2; i++ {
		dns[i] = ip4(nc.DNS[i])
	}
	proto, nis, file := "none", "", ""
	var search []string
	if l.lease != nil {
		proto, nis, file = "dhcp", l.lease.NISDomain, l.lease.BootFile
		for _, d := range l.lease.Search {
			search = append(search, strings.TrimSuffix(d, ".")+".")
		}
	}
	return shellVars([][2]string{
		{"DEVICE", nc.Interface},
		{"PROTO", proto},
		{"IPV4ADDR", ip4(nc.Address.IP)},
		{"IPV4BROADCAST", ip4(broadcastOf(l))},
		{"IPV4NETMASK", ip4(net.IP(nc.Address.Mask))},
		{"IPV4GATEWAY", ip4(nc.Gateway)},
		{"IPV4DNS0", dns[0]},
		{"IPV4DNS1", dns[1]},
		{"HOSTNAME", nc.Hostname},
		{"DNSDOMAIN", nc.Domain},
		{"NISDOMAIN", nis},
		{"ROOTSERVER", ip4(l.rootServer)},
		{"ROOTPATH", nc.RootPath},
		{"filename", file},
		{"UPTIME", strconv.FormatInt(int64(l.uptime/time.Second), 10)},
		{"DHCPLEASETIME", strconv.FormatInt(int64(nc.LeaseTime/time.Second), 10)},
		{"DOMAINSEARCH", strings.Join(search, " ")},
	})
}

// envConf renders /run/nbdroot/net-IFACE.env: every fact nbdroot knows about the interface,
// one KEY='value' per line (quoted like klibcConf, so the root can source it), with empty
// values for what does not apply. The keys are documented in docs/network.md.
func envConf(l *link, primary bool) string {
	nc := l.nc
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	opt := func(ip net.IP) string {
		if ip == nil {
			return ""
		}
		return ip.String()
	}
	ones, _ := nc.Address.Mask.Size()
	var dns []string
	for _, ip := range nc.DNS {
		dns = append(dns, ip.String())
	}
	var dhcpServer, nextServer, bootFile, nis string
	if l.lease != nil {
		dhcpServer, nextServer = opt(l.lease.ServerID), opt(l.lease.NextServer)
		bootFile, nis = l.lease.BootFile, l.lease.NISDomain
	}
	mtu := ""
	if nc.MTU != 0 {
		mtu = strconv.Itoa(nc.MTU)
	}
	lease := ""
	if l.lease != nil {
		lease = strconv.FormatInt(int64(nc.LeaseTime/time.Second), 10)
	}
	netmask := "" // IPv6 has prefix lengths only
	if !isV6(nc.Address.IP) {
		netmask = ip4(net.IP(nc.Address.Mask))
	}
	return shellVars([][2]string{
		{"INTERFACE", nc.Interface},
		{"MAC", nc.MAC},
		{"METHOD", nc.Method},
		{"PARAMETER", l.entry.param},
		{"PRIMARY", yes(primary)},
		{"ADDRESS", nc.Address.IP.String()},
		{"PREFIXLEN", strconv.Itoa(ones)},
		{"NETMASK", netmask},
		{"BROADCAST", opt(broadcastOf(l))},
		{"GATEWAY", opt(nc.Gateway)},
		{"DEFAULT_ROUTE", yes(l.route)},
		{"MTU", mtu},
		{"DNS", strings.Join(dns, " ")},
		{"DOMAIN", nc.Domain},
		{"SEARCH", strings.Join(searchList(l), " ")},
		{"HOSTNAME", nc.Hostname},
		{"NISDOMAIN", nis},
		{"DHCP_SERVER", dhcpServer},
		{"NEXT_SERVER", nextServer},
		{"ROOT_SERVER", opt(l.rootServer)},
		{"ROOT_PATH", nc.RootPath},
		{"BOOT_FILE", bootFile},
		{"LEASE_SECONDS", lease},
		{"OBTAINED_UPTIME", strconv.FormatInt(int64(l.uptime/time.Second), 10)},
	})
}
