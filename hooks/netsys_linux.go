package hooks

import (
	"context"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// The network half of the real System: links through netlink, DHCPv4 through
// insomniacslk/dhcp's nclient4.

func (*linuxSystem) NICs() ([]NIC, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	var nics []NIC
	for _, l := range links {
		a := l.Attrs()
		if a.EncapType != "ether" || len(a.HardwareAddr) != 6 || l.Type() != "device" {
			continue
		}
		nics = append(nics, NIC{Name: a.Name, MAC: a.HardwareAddr.String(), Carrier: a.RawFlags&unix.IFF_LOWER_UP != 0})
	}
	sort.Slice(nics, func(i, j int) bool { return nics[i].Name < nics[j].Name })
	return nics, nil
}

func (*linuxSystem) LinkUp(ctx context.Context, name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", name, err)
	}
	for {
		l, err := netlink.LinkByName(name)
		if err != nil {
			return err
		}
		if l.Attrs().RawFlags&unix.IFF_LOWER_UP != 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s has no carrier: %w", name, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (*linuxSystem) DHCP(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	c, err := nclient4.New(name, nclient4.WithTimeout(req.Timeout), nclient4.WithRetry(req.Retries))
	if err != nil {
		return nil, fmt.Errorf("DHCP client on %s: %w", name, err)
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("nbdroot")),
		dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
			dhcpv4.OptionHostName, dhcpv4.OptionDomainName, dhcpv4.OptionRootPath, dhcpv4.OptionInterfaceMTU,
			dhcpv4.OptionBroadcastAddress, dhcpv4.OptionNTPServers),
	}
	if req.Hostname != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(req.Hostname)))
	}
	l, err := c.Request(ctx, mods...)
	if err != nil {
		return nil, err
	}
	return leaseFrom(l.ACK), nil
}

// leaseFrom reads the parts of a DHCPACK the boot uses.
func leaseFrom(ack *dhcpv4.DHCPv4) *Lease {
	mask := ack.SubnetMask()
	if mask == nil {
		mask = ack.YourIPAddr.DefaultMask()
	}
	l := &Lease{
		Address:    net.IPNet{IP: ack.YourIPAddr.To4(), Mask: mask},
		DNS:        ack.DNS(),
		Domain:     ack.DomainName(),
		Hostname:   ack.HostName(),
		ServerID:   ack.ServerIdentifier(),
		NextServer: ack.ServerIPAddr,
		RootPath:   ack.RootPath(),
		LeaseTime:  ack.IPAddressLeaseTime(0),
	}
	if r := ack.Router(); len(r) > 0 {
		l.Gateway = r[0]
	}
	if mtu, err := dhcpv4.GetUint16(dhcpv4.OptionInterfaceMTU, ack.Options); err == nil {
		l.MTU = int(mtu)
	}
	if l.NextServer != nil && l.NextServer.IsUnspecified() {
		l.NextServer = nil
	}
	return l
}

func (*linuxSystem) Configure(name string, c *NetConfig) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if c.MTU >= 576 && c.MTU != l.Attrs().MTU {
		if err := netlink.LinkSetMTU(l, c.MTU); err != nil {
			return fmt.Errorf("set MTU %d: %w", c.MTU, err)
		}
	}
	if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: &c.Address}); err != nil {
		return fmt.Errorf("add address %s: %w", c.Address.String(), err)
	}
	if c.Gateway != nil && !c.Gateway.IsUnspecified() {
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: c.Gateway}
		if err := netlink.RouteReplace(r); err != nil {
			return fmt.Errorf("default route via %s: %w", c.Gateway, err)
		}
	}
	return nil
}

func (*linuxSystem) SetHostname(name string) error {
	return os.NewSyscallError("sethostname", unix.Sethostname([]byte(name)))
}

