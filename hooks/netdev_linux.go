package hooks

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Bonds, VLANs and bridges through rtnetlink; bonding options and the bridge's forward delay
// through the drivers' sysfs attributes, which take every option by name (dracut does the
// same). Creating a link of a kind the kernel lacks makes it ask for the module
// (request_module("rtnl-link-KIND")), which the init's modprobe loads from the image.

// sysClassNet is where the kernel shows each interface's driver attributes.
const sysClassNet = "/sys/class/net"

// RenameLink implements Network.
func (linuxNet) RenameLink(name, newName string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find %s: %w", name, err)
	}
	if err := netlink.LinkSetName(l, newName); err != nil {
		return fmt.Errorf("rename %s to %s: %w", name, newName, err)
	}
	return nil
}

// CreateLink implements Network.
func (linuxNet) CreateLink(d Netdev) (NIC, error) {
	var err error
	switch d.Kind {
	case "bond":
		err = createBond(d)
	case "vlan":
		err = createVLAN(d)
	case "bridge":
		err = createBridge(d)
	default:
		err = fmt.Errorf("unknown kind of interface %q", d.Kind)
	}
	if err != nil {
		return NIC{}, err
	}
	// The MAC address is known now: a bond's is its first slave's, a bridge's its ports'.
	l, err := netlink.LinkByName(d.Name)
	if err != nil {
		return NIC{}, fmt.Errorf("find %s: %w", d.Name, err)
	}
	return NIC{Name: d.Name, MAC: l.Attrs().HardwareAddr.String(), Index: l.Attrs().Index}, nil
}

// addLink adds l; with takeOver, an existing link of the same kind without ports is used
// instead (EEXIST).
func addLink(l netlink.Link, takeOver bool) error {
	err := netlink.LinkAdd(l)
	if errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("create %s %s: the kernel has no %s driver (%w): add the netdev hook to the image (nbdroot initramfs --hooks '… net netdev …')",
			l.Type(), l.Attrs().Name, l.Type(), err)
	}
	if !errors.Is(err, unix.EEXIST) || !takeOver {
		if err != nil {
			return fmt.Errorf("create %s %s: %w", l.Type(), l.Attrs().Name, err)
		}
		return nil
	}
	old, lerr := netlink.LinkByName(l.Attrs().Name)
	if lerr != nil || old.Type() != l.Type() || hasPorts(old.Attrs().Index) {
		return fmt.Errorf("create %s %s: %w (another interface has the name)", l.Type(), l.Attrs().Name, err)
	}
	if mtu := l.Attrs().MTU; mtu > 0 {
		if err := netlink.LinkSetMTU(old, mtu); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", mtu, l.Attrs().Name, err)
		}
	}
	return nil
}

// hasPorts reports whether any interface has the link index as its master.
func hasPorts(index int) bool {
	links, err := netlink.LinkList()
	if err != nil {
		return true
	}
	for _, l := range links {
		if l.Attrs().MasterIndex == index {
			return true
		}
	}
	return false
}

func createBond(d Netdev) error {
	la := netlink.NewLinkAttrs()
	la.Name, la.MTU = d.Name, d.MTU
	// The options go through sysfs below; the link is made with the driver's defaults.
	if err := addLink(&netlink.GenericLink{LinkAttrs: la, LinkType: "bond"}, true); err != nil {
		return err
	}
	// mode first: the driver takes it only while the bond has no slave.
	opts := sortBondOptions(d)
	for _, o := range opts {
		if o.name == "primary" {
			continue // names a slave: after they are enslaved
		}
		if err := writeBondOption(d.Name, o); err != nil {
			return err
		}
	}
	for _, s := range d.Ports {
		l, err := netlink.LinkByName(s)
		if err != nil {
			return fmt.Errorf("find slave %s: %w", s, err)
		}
		// The bonding driver refuses a slave that is up.
		if err := netlink.LinkSetDown(l); err != nil {
			return fmt.Errorf("set %s down to enslave it: %w", s, err)
		}
		if err := netlink.LinkSetMasterByIndex(l, bondIndex(d.Name)); err != nil {
			return fmt.Errorf("enslave %s to %s: %w", s, d.Name, err)
		}
	}
	for _, o := range opts {
		if o.name == "primary" {
			if err := writeBondOption(d.Name, o); err != nil {
				return err
			}
		}
	}
	removeStrayBond0(d.Name)
	return nil
}

func bondIndex(name string) int {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}

// bondOpt is one sysfs write: value to /sys/class/net/BOND/bonding/name.
type bondOpt struct{ name, value string }

// sortBondOptions puts mode first and expands arp_ip_target into one "+ADDRESS" write each
// (the attribute adds one target per write).
func sortBondOptions(d Netdev) []bondOpt {
	var out []bondOpt
	for _, o := range d.BondOptions {
		if o.Name == "mode" {
			out = append(out, bondOpt{o.Name, o.Value})
		}
	}
	for _, o := range d.BondOptions {
		switch o.Name {
		case "mode":
		case "arp_ip_target":
			for _, a := range strings.Split(o.Value, ";") {
				out = append(out, bondOpt{o.Name, "+" + a})
			}
		default:
			out = append(out, bondOpt{o.Name, o.Value})
		}
	}
	return out
}

func writeBondOption(bond string, o bondOpt) error {
	path := filepath.Join(sysClassNet, bond, "bonding", o.name)
	if err := os.WriteFile(path, []byte(o.value), 0); err != nil {
		return fmt.Errorf("bonding option %s=%s: %w", o.name, o.value, err)
	}
	return nil
}

// removeStrayBond0 deletes the bond0 the bonding driver makes when it loads (its max_bonds
// defaults to 1) when the command line asked for another name, and bond0 is unused: down,
// without slaves or addresses. Nothing else could have made it in the initramfs.
func removeStrayBond0(made string) {
	if made == "bond0" {
		return
	}
	l, err := netlink.LinkByName("bond0")
	if err != nil || l.Type() != "bond" || l.Attrs().Flags&net.FlagUp != 0 || hasPorts(l.Attrs().Index) {
		return
	}
	if addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL); err != nil || len(addrs) > 0 {
		return
	}
	netlink.LinkDel(l)
}

func createVLAN(d Netdev) error {
	parent, err := netlink.LinkByName(d.Parent)
	if err != nil {
		return fmt.Errorf("find %s: %w", d.Parent, err)
	}
	la := netlink.NewLinkAttrs()
	la.Name, la.ParentIndex = d.Name, parent.Attrs().Index
	if err := addLink(&netlink.Vlan{LinkAttrs: la, VlanId: d.VLANID, VlanProtocol: netlink.VLAN_PROTOCOL_8021Q}, false); err != nil {
		return err
	}
	// The VLAN carries traffic only while its parent is up.
	if err := netlink.LinkSetUp(parent); err != nil {
		return fmt.Errorf("set %s up: %w", d.Parent, err)
	}
	return nil
}

func createBridge(d Netdev) error {
	la := netlink.NewLinkAttrs()
	la.Name = d.Name
	if err := addLink(&netlink.Bridge{LinkAttrs: la}, false); err != nil {
		return err
	}
	// No spanning tree (the default) and no forward delay: a thin client's bridge has no
	// loop to protect against, and the DHCP exchange must not wait 30 s for learning.
	if err := os.WriteFile(filepath.Join(sysClassNet, d.Name, "bridge", "forward_delay"), []byte("0"), 0); err != nil {
		return fmt.Errorf("bridge %s: forward delay 0: %w", d.Name, err)
	}
	br, err := netlink.LinkByName(d.Name)
	if err != nil {
		return fmt.Errorf("find %s: %w", d.Name, err)
	}
	for _, p := range d.Ports {
		l, err := netlink.LinkByName(p)
		if err != nil {
			return fmt.Errorf("find port %s: %w", p, err)
		}
		if err := netlink.LinkSetMaster(l, br); err != nil {
			return fmt.Errorf("add %s to %s: %w", p, d.Name, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", p, err)
		}
	}
	return nil
}

// AddRoute implements Network.
func (linuxNet) AddRoute(r Route, dev string) error {
	route := &netlink.Route{Dst: &net.IPNet{IP: r.Dst.IP, Mask: r.Dst.Mask}, Gw: r.Gateway}
	if dev != "" {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("find %s: %w", dev, err)
		}
		route.LinkIndex = l.Attrs().Index
	}
	if r.Gateway == nil {
		route.Scope = netlink.SCOPE_LINK
	}
	return netlink.RouteReplace(route)
}
