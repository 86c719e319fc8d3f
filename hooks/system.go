package hooks

import (
	"context"
	"net"
	"os"
	"time"

	"github.com/nbdroot/nbdroot/luks"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// System is everything the stages do to the kernel. The real one (NewSystem, Linux only)
// makes syscalls and netlink requests; tests pass a fake and check what the stages asked for.
type System interface {
	// Mount and MkdirAll act on the live filesystem tree.
	Mount(source, target, fstype string, flags uintptr, data string) error
	MkdirAll(path string, perm os.FileMode) error
	WriteFile(path string, data []byte, perm os.FileMode) error

	// NICs lists the Ethernet interfaces present now.
	NICs() ([]NIC, error)
	// LinkUp sets the interface up and waits until it has carrier or ctx ends.
	LinkUp(ctx context.Context, name string) error
	// DHCP asks for a DHCPv4 lease on the interface (which is up).
	DHCP(ctx context.Context, name string, req DHCPRequest) (*Lease, error)
	// Configure applies an address, a default route and the MTU to the interface. It never
	// flushes what is there: the configuration must survive switch_root.
	Configure(name string, c *NetConfig) error
	// SetHostname sets the kernel's hostname.
	SetHostname(name string) error

	// DialNBD connects to an NBD server and negotiates an export.
	DialNBD(ctx context.Context, addr, export string) (*nbdclient.Conn, error)
	// AttachNBD hands negotiated sockets to the kernel (NBD_CMD_CONNECT).
	AttachNBD(dev nbdclient.Device, socks []*os.File) (int, error)

	// BlockDeviceReady reports whether path is a block device the kernel gave a size.
	BlockDeviceReady(path string) (bool, error)
	// FindBlockDevice returns the device answering to UUID=, LABEL=, PARTUUID= or PARTLABEL=.
	FindBlockDevice(spec string) (string, error)
	// OpenDevice opens a block device (or, in tests, an image file) for reading.
	OpenDevice(path string) (*os.File, error)
	// Unmount detaches the filesystem mounted on target.
	Unmount(target string) error

	// AskPassphrase asks for a secret on every console, with echo off. The caller wipes it.
	AskPassphrase(ctx context.Context, prompt string) ([]byte, error)
	// ActivateCrypt maps a dm-crypt table as /dev/mapper/NAME and returns that path.
	ActivateCrypt(name string, table *luks.Table) (string, error)

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
}
