package hooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/nbdroot/nbdroot/nbdclient"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linuxSystem is the real System.
type linuxSystem struct {
	mu     sync.Mutex
	kernel *nbdclient.Kernel
}

// NewSystem returns the System that acts on the running kernel.
func NewSystem() System { return &linuxSystem{} }

func (*linuxSystem) Mount(source, target, fstype string, flags uintptr, data string) error {
	return os.NewSyscallError("mount", unix.Mount(source, target, fstype, flags, data))
}

func (*linuxSystem) MkdirAll(path string, perm os.FileMode) error { return os.MkdirAll(path, perm) }

func (*linuxSystem) WriteFile(path string, data []byte, perm os.FileMode) error {
	return os.WriteFile(path, data, perm)
}

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

func (*linuxSystem) DialNBD(ctx context.Context, addr, export string) (*nbdclient.Conn, error) {
	return nbdclient.Dial(ctx, addr, export)
}

func (s *linuxSystem) AttachNBD(dev nbdclient.Device, socks []*os.File) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kernel == nil {
		k, err := nbdclient.OpenKernel()
		if err != nil {
			return -1, err
		}
		s.kernel = k
	}
	return s.kernel.Connect(dev, socks)
}

func (*linuxSystem) BlockDeviceReady(path string) (bool, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return false, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return false, fmt.Errorf("%s is not a block device", path)
	}
	size, err := unix.IoctlGetUint64(fd, unix.BLKGETSIZE64)
	if err != nil {
		return false, os.NewSyscallError("BLKGETSIZE64", err)
	}
	if size == 0 {
		return false, errors.New("size is 0 (not connected yet)")
	}
	return true, nil
}

func (*linuxSystem) Uptime() time.Duration { return Uptime() }

// Uptime reads CLOCK_BOOTTIME: the time since the kernel started, what dmesg shows.
func Uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}
