package hooks

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/nbdroot/nbdroot/keymap"
	"github.com/nbdroot/nbdroot/luks"
	"github.com/nbdroot/nbdroot/lvm"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// System is everything the stages do to the machine, one small interface per concern. The
// real one (NewSystem, Linux only) makes syscalls and netlink requests; the tests fill it with
// in-memory fakes (fake_test.go) and check what the stages asked for.
type System struct {
	Files   Files
	Net     Network
	NBD     Attacher
	Blocks  BlockDevices
	Console Console
	Mapper  Mapper
	Machine Machine
}

// Files acts on the live filesystem tree.
type Files interface {
	Mount(source, target, fstype string, flags uintptr, data string) error
	// Unmount detaches the filesystem mounted on target.
	Unmount(target string) error
	MkdirAll(path string, perm os.FileMode) error
	WriteFile(path string, data []byte, perm os.FileMode) error
	// RemoveAll removes path and what is below it (nothing when it does not exist).
	RemoveAll(path string) error
}

// Network brings up links and configures them.
type Network interface {
	// NICs lists the Ethernet interfaces present now.
	NICs() ([]NIC, error)
	// LinkUp sets the interface up and waits until it has carrier or ctx ends.
	LinkUp(ctx context.Context, name string) error
	// DHCP asks for a DHCPv4 lease on the interface (which is up).
	DHCP(ctx context.Context, name string, req DHCPRequest) (*Lease, error)
	// DHCP6 asks for an IPv6 address by DHCPv6 on the interface (which is up). The address
	// comes with prefix length 128: the on-link prefix and the routes are the router
	// advertisements' (RFC 8415 section 21.6), which the kernel applies.
	DHCP6(ctx context.Context, name string, req DHCPRequest) (*Lease, error)
	// Autoconf6 waits for the address the kernel makes from a router advertisement (SLAAC,
	// RFC 4862) on the interface (which is up) and returns it with the advertisement's name
	// servers; when the router says DHCPv6 has more (its O or M flag), it asks (stateless).
	Autoconf6(ctx context.Context, name string, req DHCPRequest) (*Lease, error)
	// Configure applies an address, a default route and the MTU to the interface. It never
	// flushes what is there: the configuration must survive switch_root.
	Configure(name string, c *NetConfig) error
	// SetHostname sets the kernel's hostname.
	SetHostname(name string) error
	// RouteTo returns the interface the kernel sends packets for dst through.
	RouteTo(dst net.IP) (string, error)
	// RenameLink renames an interface (which is down, as the kernel requires).
	RenameLink(name, newName string) error
	// CreateLink creates a bond, VLAN or bridge, makes its ports part of it, sets the ports
	// (a VLAN's parent) up and returns the new interface, still down. An interface of the
	// same kind and name that exists without ports is taken over: the bonding driver
	// makes bond0 itself when the kernel loads it for the first bond.
	CreateLink(d Netdev) (NIC, error)
	// AddRoute adds a static route through dev ("": the kernel picks the interface that
	// reaches the gateway).
	AddRoute(r Route, dev string) error
}

// Attacher attaches an NBD export to a device: NBDAttacher (nbdclient.Attach), or a fake.
type Attacher interface {
	Attach(ctx context.Context, r nbdclient.Request) (*nbdclient.Attached, error)
}

// NBDAttacher is the real Attacher.
type NBDAttacher struct{}

var _ Attacher = NBDAttacher{}

// Attach implements Attacher with nbdclient.Attach.
func (NBDAttacher) Attach(ctx context.Context, r nbdclient.Request) (*nbdclient.Attached, error) {
	return nbdclient.Attach(ctx, r)
}

// BlockDevices finds and opens block devices.
type BlockDevices interface {
	// BlockDeviceReady reports whether path is a block device the kernel gave a size.
	BlockDeviceReady(path string) (bool, error)
	// FindBlockDevice returns the device answering to UUID=, LABEL=, PARTUUID= or PARTLABEL=.
	FindBlockDevice(spec string) (string, error)
	// OpenDevice opens a block device (or, in tests, an image file) for reading.
	OpenDevice(path string) (*os.File, error)
	// Partitions lists the partitions the kernel found on the block device dev (/dev/nbd0
	// → /dev/nbd0p1 …), none when it has no partition table.
	Partitions(dev string) ([]string, error)
}

// Console talks to the person at the console.
type Console interface {
	// AskPassphrase asks for a secret on every console, with echo off. The caller wipes it.
	AskPassphrase(ctx context.Context, prompt string) ([]byte, error)
	// LoadKeymap loads a console keymap into the kernel (the virtual terminals' keyboard).
	LoadKeymap(km *keymap.Keymap) (keymap.Applied, error)
}

// Mapper creates device-mapper devices.
type Mapper interface {
	// ActivateCrypt maps a dm-crypt table as /dev/mapper/NAME and returns that path.
	ActivateCrypt(name string, table *luks.Table) (string, error)
	// ActivateLV maps logical volume lv of vg (lvm.VG.Activate) as /dev/mapper/VG-LV, makes
	// the /dev/VG/LV link, and returns the /dev/mapper path.
	ActivateLV(vg *lvm.VG, lv string, readOnly bool) (string, error)
}

// Machine is what the kernel says about the machine.
type Machine interface {
	// Uptime is the time since the kernel started.
	Uptime() time.Duration
	// MemAvailableKiB is the memory the kernel says is available (MemAvailable), 0 if unknown.
	MemAvailableKiB() uint32
}

// NIC is a network interface candidate for the net hook.
type NIC struct {
	Name    string
	MAC     string // lower case, colon separated
	Carrier bool
	// Index is the kernel's interface index (0 when unknown): NetworkManager's runtime
	// state names a device by it (nmFiles).
	Index int
}

// DHCPRequest is what the net hook asks of a DHCP server.
type DHCPRequest struct {
	Hostname string        // sent as option 12 when set
	Timeout  time.Duration // per attempt
	Retries  int
}

// Lease is what a DHCP server answered.
type Lease struct {
	Address    net.IPNet
	Gateway    net.IP
	DNS        []net.IP
	Domain     string
	Hostname   string
	MTU        int
	ServerID   net.IP
	NextServer net.IP
	RootPath   string
	LeaseTime  time.Duration
	// Broadcast is option 28, nil when the server gave none.
	Broadcast net.IP
	// Search is the domain search list (option 119, RFC 3397), without final dots.
	Search []string
	// NISDomain is option 40; BootFile is option 67, else the BOOTP file field. Neither is
	// used by the boot; they are recorded for the root (klibc's NISDOMAIN and filename).
	NISDomain string
	BootFile  string
	// RenewalTime and RebindingTime are T1 and T2 (options 58 and 59), zero when the server
	// left them to the client (RFC 2131 section 4.4.5: half and seven eighths of the lease).
	RenewalTime   time.Duration
	RebindingTime time.Duration
	// Routes are the classless static routes (option 121, else 249; RFC 3442) other than the
	// default route, which is Gateway.
	Routes []Route
	// Refused are the options that were malformed or unusable and were left out; Notes
	// other things the console should say about the answer.
	Refused []Refusal
	Notes   []string
	// Requested is when the request that got this answer went out, as time since boot (the
	// lease runs from then, RFC 2131 section 4.4.1), and SentHostname the host name it
	// carried (option 12): the keeper renews the lease the same way. The net hook sets both.
	Requested    time.Duration
	SentHostname string
}

// Route is one static route: to Dst via Gateway, or on the link when Gateway is nil.
type Route struct {
	Dst     net.IPNet
	Gateway net.IP
}

// Refusal is an option of a DHCP answer the init did not use: it would have had to alter or
// guess its value.
type Refusal struct {
	// Option is the option code; Name says what it holds ("root-path").
	Option int
	Name   string
	Reason string
	// RootPath marks the option that names the NBD root: DHCPv4's root-path (17), DHCPv6's
	// boot file URL (59).
	RootPath bool
}

func (r Refusal) String() string {
	return fmt.Sprintf("option %d (%s) refused: %s", r.Option, r.Name, r.Reason)
}
