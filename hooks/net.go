package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
)

// Net brings up the network: the NIC chosen by BOOTIF, then the ip= device, then the first
// with carrier; DHCPv4 or the static ip= configuration. The configuration is left in place
// for the real root (NETWORK_PERSIST): nothing is ever flushed or set down.
type Net struct {
	// WaitNIC bounds the wait for a NIC to appear (drivers load in parallel); default 10 s.
	WaitNIC time.Duration
	// Carrier bounds the wait for link carrier; default 10 s.
	Carrier time.Duration
}

// Name implements Hook.
func (Net) Name() string { return "net" }

// Run implements Hook.
func (n Net) Run(ctx context.Context, s *State) error {
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "net"); err != nil {
			return fail("net", "", "load network drivers", err)
		}
	}
	cfg := firstIP(s.Plan)
	if cfg.Mode == "off" {
		return nil
	}
	param := "ip=" + ipParam(cfg)
	nic, err := n.pickNIC(ctx, s, cfg)
	if err != nil {
		return fail("net", param, "find a network interface", err)
	}
	carrier := n.Carrier
	if carrier == 0 {
		carrier = 10 * time.Second
	}
	upCtx, cancel := context.WithTimeout(ctx, carrier)
	err = s.Sys.LinkUp(upCtx, nic.Name)
	cancel()
	if err != nil {
		return fail("net", param, fmt.Sprintf("bring %s up (waited %s for carrier: is the cable plugged in?)", nic.Name, carrier), err)
	}
	nc := &NetConfig{Interface: nic.Name, MAC: nic.MAC}
	switch cfg.Mode {
	case "static":
		if err := staticConfig(cfg, nc); err != nil {
			return fail("net", param, "read the static configuration", err)
		}
	default:
		lease, err := s.Sys.DHCP(ctx, nic.Name, DHCPRequest{Hostname: cfg.Hostname, Timeout: 4 * time.Second, Retries: 4})
		if err != nil {
			return fail("net", param, "get a DHCPv4 lease on "+nic.Name+" (is a DHCP server on this network?)", err)
		}
		fromLease(lease, nc)
		if cfg.Hostname != "" {
			nc.Hostname = cfg.Hostname
		}
	}
	if err := s.Sys.Configure(nic.Name, nc); err != nil {
		return fail("net", param, "configure "+nic.Name, err)
	}
	if nc.Hostname != "" {
		if err := s.Sys.SetHostname(nc.Hostname); err != nil {
			s.Log.Printf("net: set hostname %q: %v", nc.Hostname, err)
		}
	}
	if err := writeNetFiles(s, nc); err != nil {
		// The root can still boot; it just will not find the lease files.
		s.Log.Printf("net: %v", err)
	}
	s.Net = nc
	return nil
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

// firstIP is the ip= entry the net hook applies; no ip= at all means DHCP, which is what a
// PXE-booted thin client needs.
func firstIP(p *bootparam.Plan) bootparam.IPConfig {
	if len(p.IP) == 0 {
		return bootparam.IPConfig{Mode: "dhcp"}
	}
	return p.IP[0]
}

func ipParam(c bootparam.IPConfig) string {
	if c.Autoconf != "" && c.Address == "" && c.Device == "" {
		return c.Autoconf
	}
	return strings.Join([]string{c.Address, c.Server, c.Gateway, c.Netmask, c.Hostname, c.Device, c.Autoconf}, ":")
}

// pickNIC chooses the interface: BOOTIF (the NIC that PXE-booted), else the ip= device, else
// the first one with carrier, else the first one. It waits for NICs to appear, since drivers
// load in the background.
func (n Net) pickNIC(ctx context.Context, s *State, cfg bootparam.IPConfig) (NIC, error) {
	wait := n.WaitNIC
	if wait == 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	bootif := strings.ToLower(s.Plan.BootIF)
	for {
		nics, err := s.Sys.NICs()
		if err != nil {
			return NIC{}, err
		}
		switch {
		case bootif != "":
			for _, nic := range nics {
				if nic.MAC == bootif {
					return nic, nil
				}
			}
		case cfg.Device != "":
			for _, nic := range nics {
				if nic.Name == cfg.Device {
					return nic, nil
				}
			}
		case len(nics) > 0:
			for _, nic := range nics {
				if nic.Carrier {
					return nic, nil
				}
			}
			return nics[0], nil
		}
		if time.Now().After(deadline) {
			switch {
			case bootif != "":
				return NIC{}, fmt.Errorf("no interface has the BOOTIF address %s (found %s)", bootif, nicList(nics))
			case cfg.Device != "":
				return NIC{}, fmt.Errorf("no interface %q (found %s)", cfg.Device, nicList(nics))
			}
			return NIC{}, errors.New("no Ethernet interface appeared: is the NIC driver in the image? (nbdroot initramfs --nics)")
		}
		select {
		case <-ctx.Done():
			return NIC{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func nicList(nics []NIC) string {
	if len(nics) == 0 {
		return "none"
	}
	var names []string
	for _, n := range nics {
		names = append(names, n.Name+" "+n.MAC)
	}
	return strings.Join(names, ", ")
}

// staticConfig reads an ip= static configuration into nc.
func staticConfig(c bootparam.IPConfig, nc *NetConfig) error {
	ip := net.ParseIP(c.Address).To4()
	if ip == nil {
		return fmt.Errorf("client address %q is not an IPv4 address", c.Address)
	}
	mask := net.IPv4Mask(255, 255, 255, 0)
	if c.Netmask != "" {
		m := net.ParseIP(c.Netmask).To4()
		if m == nil {
			return fmt.Errorf("netmask %q is not an IPv4 netmask", c.Netmask)
		}
		mask = net.IPMask(m)
	} else if ip[0] < 128 {
		mask = net.IPv4Mask(255, 0, 0, 0) // classful default, as the kernel's ipconfig does
	} else if ip[0] < 192 {
		mask = net.IPv4Mask(255, 255, 0, 0)
	}
	nc.Method = "static"
	nc.Address = net.IPNet{IP: ip, Mask: mask}
	if c.Gateway != "" {
		nc.Gateway = net.ParseIP(c.Gateway).To4()
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
}

// writeNetFiles records the configuration for the real root: /etc/resolv.conf for the
// initramfs itself, /run/nbdroot/net-IFACE.env for us, and /run/net-IFACE.conf in the klibc
// ipconfig form that Debian's initramfs-tools and ifupdown read.
func writeNetFiles(s *State, nc *NetConfig) error {
	var resolv strings.Builder
	if nc.Domain != "" {
		fmt.Fprintf(&resolv, "search %s\n", nc.Domain)
	}
	for _, d := range nc.DNS {
		fmt.Fprintf(&resolv, "nameserver %s\n", d)
	}
	if err := s.Sys.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	if err := s.Sys.WriteFile("/etc/resolv.conf", []byte(resolv.String()), 0o644); err != nil {
		return fmt.Errorf("write /etc/resolv.conf: %w", err)
	}
	if err := s.Sys.MkdirAll("/run/nbdroot", 0o755); err != nil {
		return err
	}
	if err := s.Sys.WriteFile("/run/net-"+nc.Interface+".conf", []byte(klibcConf(nc)), 0o644); err != nil {
		return fmt.Errorf("write /run/net-%s.conf: %w", nc.Interface, err)
	}
	if err := s.Sys.WriteFile("/run/nbdroot/net-"+nc.Interface+".env", []byte(klibcConf(nc)), 0o644); err != nil {
		return fmt.Errorf("write /run/nbdroot/net-%s.env: %w", nc.Interface, err)
	}
	return nil
}

// klibcConf renders the shell-variable file klibc's ipconfig writes to /run/net-IFACE.conf.
func klibcConf(nc *NetConfig) string {
	ip4 := func(ip net.IP) string {
		if ip == nil {
			return "0.0.0.0"
		}
		return ip.String()
	}
	dns := []string{"0.0.0.0", "0.0.0.0"}
	for i := 0; i < len(nc.DNS) && i < 2; i++ {
		dns[i] = nc.DNS[i].String()
	}
	proto := "none"
	if nc.Method == "dhcp" {
		proto = "dhcp"
	}
	var b strings.Builder
	w := func(k, v string) { fmt.Fprintf(&b, "%s='%s'\n", k, strings.ReplaceAll(v, "'", "")) }
	w("DEVICE", nc.Interface)
	w("PROTO", proto)
	w("IPV4ADDR", ip4(nc.Address.IP))
	w("IPV4BROADCAST", ip4(broadcast(nc.Address)))
	w("IPV4NETMASK", ip4(net.IP(nc.Address.Mask)))
	w("IPV4GATEWAY", ip4(nc.Gateway))
	w("IPV4DNS0", dns[0])
	w("IPV4DNS1", dns[1])
	w("HOSTNAME", nc.Hostname)
	w("DNSDOMAIN", nc.Domain)
	w("NISDOMAIN", "")
	w("ROOTSERVER", ip4(nc.NextServer))
	w("ROOTPATH", nc.RootPath)
	w("filename", "")
	w("DOMAINSEARCH", nc.Domain)
	fmt.Fprintf(&b, "UPTIME='%d'\n", 0)
	fmt.Fprintf(&b, "DHCPLEASETIME='%d'\n", int(nc.LeaseTime.Seconds()))
	return b.String()
}

func broadcast(n net.IPNet) net.IP {
	ip := n.IP.To4()
	if ip == nil || len(n.Mask) != 4 {
		return nil
	}
	b := make(net.IP, 4)
	for i := range b {
		b[i] = ip[i] | ^n.Mask[i]
	}
	return b
}
