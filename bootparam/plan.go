// Package bootparam turns a kernel command line into a Plan: one typed, validated description
// of how this machine boots from NBD. Every boot stage reads the Plan; none of them reads the
// command line again.
//
// Parse reads every dialect a PXE fleet uses (the seed's nbd_server=, dracut's root=nbd:,
// Debian's nbdroot=, mkinitcpio-nbd's nbd_host=, the kernel's ip=, mkinitcpio's
// cryptdevice=, …) and settles conflicts with one precedence (docs/cmdline.md). The Plan is
// never changed after Parse: a plan whose server comes from DHCP gives, with the lease,
// a Target ((*Plan).Resolve, which reads the root-path, option 17, with ParseRootPath). Every
// problem is a *ParamError whose message is one line naming the parameter, its value and
// the expected form. ParseServer is the one parser of the SERVER[:PORT] syntax.
//
// It parses and validates; it never touches the network, devices or the filesystem.
package bootparam

import "time"

// Plan is everything the init needs to know from the command line.
type Plan struct {
	// IP holds one entry per ip= parameter (several for several NICs). Parse adds one DHCP
	// entry when there is no ip=: the root is on the network, so the network is needed.
	IP []IPConfig `json:"ip"`
	// BootIF is the MAC address pxelinux put in BOOTIF= (IPAPPEND 2), lower case with colons,
	// or empty. It names the NIC that PXE-booted.
	BootIF string `json:"bootif,omitempty"`
	// IfNames, Bonds, VLANs and Bridges are the interfaces the net hook renames or creates
	// before it configures the ip= entries (dracut's ifname=, bond=, vlan=, bridge=), in
	// command line order; Routes are rd.route=, added once the interfaces are configured.
	IfNames []IfName      `json:"ifnames,omitempty"`
	Bonds   []Bond        `json:"bonds,omitempty"`
	VLANs   []VLAN        `json:"vlans,omitempty"`
	Bridges []Bridge      `json:"bridges,omitempty"`
	Routes  []StaticRoute `json:"routes,omitempty"`
	NBD     NBD           `json:"nbd"`
	// Crypt is nil unless cryptdevice= asks for a LUKS device to be opened.
	Crypt *Crypt `json:"crypt,omitempty"`
	Root  Root   `json:"root"`
	// Overlay is nil unless nbdroot.overlay= asks for a client-side overlay: the root is
	// then mounted read-only (whatever Root.RW says) under a writable overlayfs.
	Overlay *Overlay `json:"overlay,omitempty"`
	// LVM is nil unless the root or rd.lvm.* name LVM2 logical volumes to activate.
	LVM *LVM `json:"lvm,omitempty"`
	// Init is the program run as PID 1 after switch_root (init=, default /sbin/init).
	Init string `json:"init"`
	// RootDelay is how long to wait for the root device (rootdelay=).
	RootDelay time.Duration `json:"rootdelay,omitempty"`
	// Break names the point where the init stops and opens a rescue shell on purpose
	// (nbdroot.break=, nbdroot.shell, rd.break): "" for none, otherwise the name of the hook
	// before which it stops (base, udev, net, nbd, encrypt, filesystems) or "switch_root".
	Break string `json:"break,omitempty"`
	// Tries is how many passphrases the encrypt hook asks for before it gives up
	// (nbdroot.tries); zero means the default.
	Tries int `json:"tries,omitempty"`
	// Debug makes every hook log its details (nbdroot.debug).
	Debug bool `json:"debug,omitempty"`
	// InitArgs are the words after a bare `--` on the command line: the kernel hands them to
	// init as arguments, so the init passes them on to Init. They are kept byte for byte
	// (JSON shows invalid UTF-8 as U+FFFD).
	InitArgs []string `json:"init_args,omitempty"`
	// Sources says which parameter set each decision, for `nbdroot cmdline` and error
	// messages. Keys are the JSON paths of the fields ("nbd.host", "root.rw", "ip[0]", …);
	// values are the parameter as written ("nbd_server=10.0.0.1"), or start with "default"
	// when no parameter set the field.
	Sources map[string]string `json:"sources,omitempty"`
	// Notes explain parameters that were accepted but did not decide anything: a dialect that
	// lost to a higher one, a repeated parameter, an option nbdroot does not use.
	Notes []string `json:"notes,omitempty"`
}

// IPConfig is one ip= parameter (kernel nfsroot form or dracut's ip=IFACE:MODE).
type IPConfig struct {
	// Mode is ModeDHCP, ModeStatic or ModeOff. With DHCP, the fields given explicitly
	// (Hostname, Gateway, DNS) win over the lease, as with the kernel's ip=.
	Mode string `json:"mode"`
	// Address is the client's IPv4 address (CLIENT); set exactly when Mode is static.
	Address string `json:"address,omitempty"`
	// Netmask is a dotted quad; for a static entry without NETMASK, the classful default.
	Netmask string `json:"netmask,omitempty"`
	// Gateway is the default gateway (GW).
	Gateway string `json:"gateway,omitempty"`
	// Server is the SERVER field: the kernel's root server, used as the NBD server when a
	// static network leaves the server open.
	Server string `json:"server,omitempty"`
	// Hostname is HOSTNAME, possibly with a domain (name.domain).
	Hostname string `json:"hostname,omitempty"`
	// Device is the interface name; empty means any.
	Device string `json:"device,omitempty"`
	// DNS holds DNS0 and DNS1, in order, when given.
	DNS []string `json:"dns,omitempty"`
	// NTP is NTP0.
	NTP string `json:"ntp,omitempty"`
	// MTU is dracut's MTU field; 0 keeps the interface's (or DHCP's) MTU.
	MTU int `json:"mtu,omitempty"`
	// Autoconf is the autoconf field as written (dhcp, bootp, on, any, …), for display.
	Autoconf string `json:"autoconf,omitempty"`
}

// Server is one NBD server address.
type Server struct {
	// Host is an IPv4 or IPv6 address (without brackets) or a DNS name; join it with the
	// port through net.JoinHostPort.
	Host string `json:"host"`
	// Port is a TCP port, 1-65535.
	Port int `json:"port"`
}

// NBD is the NBD connection the root lives on.
type NBD struct {
	// Host and Port are the first (preferred) server; Servers lists all of them in failover
	// order (nbd_server=a:10809,b:10809), Servers[0] being Host:Port.
	Host    string   `json:"host"`
	Port    int      `json:"port"`
	Servers []Server `json:"servers,omitempty"`
	// Export is the export name; empty asks the server for its default export.
	Export string `json:"export"`
	// Device is the kernel device to attach, e.g. /dev/nbd0.
	Device string `json:"device"`
	// FromDHCP is true when the server comes from DHCP: the root-path (option 17), else the
	// DHCP server's address. Host is empty then: (*Plan).Resolve fills it in the Target it
	// makes with the lease.
	FromDHCP bool `json:"from_dhcp,omitempty"`
	// Connections is the number of sockets handed to the kernel (nbdroot.connections);
	// 0 means the default.
	Connections int `json:"connections,omitempty"`
	// Timeout is the kernel's per-request timeout; DeadConnTimeout how long I/O waits for the
	// keeper to reconnect a dead socket. Zero means the default.
	Timeout         time.Duration `json:"timeout,omitempty"`
	DeadConnTimeout time.Duration `json:"dead_conn_timeout,omitempty"`
	// ConnectTimeout bounds how long the init keeps trying the servers before it reports
	// the failure (nbdroot.connect); zero means the default.
	ConnectTimeout time.Duration `json:"connect_timeout,omitempty"`
	// BlockSize is the block size asked of the kernel (dracut's bs=); 0 means negotiate.
	BlockSize int `json:"block_size,omitempty"`
	// ClientID is the client identity presented to the server (nbdroot.id=, else the
	// BOOTIF MAC address); empty leaves it to the boot: the MAC of the NIC the net stage
	// configured.
	ClientID string `json:"client_id,omitempty"`
	// TLS is nbdroot.tls: TLSRequire, TLSOn or TLSOff; "" when not given, and then the
	// init requires TLS when the image carries a CA (it was built for TLS), else uses none.
	TLS string `json:"tls,omitempty"`
	// TLSName is the name the server's certificate must carry (nbdroot.tlsname); ""
	// means the server as given (a name, or an address matched against IP SANs).
	TLSName string `json:"tls_name,omitempty"`
	// NoKernelTLS keeps the records out of the kernel: the keeper relays them
	// (nbdroot.ktls=0).
	NoKernelTLS bool `json:"no_ktls,omitempty"`
}

// Crypt is a LUKS device to open before the root is mounted (cryptdevice=).
type Crypt struct {
	// Device is the LUKS device: a /dev/ path or UUID=, LABEL=, PARTUUID=, PARTLABEL=.
	Device string `json:"device"`
	// Name is the mapping's name: the unlocked device is /dev/mapper/Name.
	Name string `json:"name"`
	// Options are the canonical names of the options given: allow-discards,
	// no-read-workqueue, no-write-workqueue, sector-size=N.
	Options []string `json:"options,omitempty"`
	// Key is nil when the passphrase is asked on the console.
	Key *CryptKey `json:"key,omitempty"`
}

// CryptKey says where a keyfile comes from (cryptkey=).
type CryptKey struct {
	// Kind is "rootfs" (a file inside the initramfs), "file" (a file on a device) or "raw"
	// (bytes at an offset of a device).
	Kind string `json:"kind"`
	// Device holds the key ("file" and "raw"); FSType is its file system ("file").
	Device string `json:"device,omitempty"`
	FSType string `json:"fstype,omitempty"`
	// Path is the key file: inside the initramfs ("rootfs") or on Device ("file").
	Path string `json:"path,omitempty"`
	// Offset and Size locate the key bytes on Device ("raw").
	Offset int64 `json:"offset,omitempty"`
	Size   int64 `json:"size,omitempty"`
}

// Root is the root filesystem to mount.
type Root struct {
	// Device is root= as written: /dev/nbd0, /dev/nbd0p1, /dev/mapper/NAME, UUID=…, LABEL=…,
	// PARTUUID=….
	Device string `json:"device"`
	// FSType is rootfstype=; empty means probe.
	FSType string `json:"fstype,omitempty"`
	// Flags is rootflags=: comma-separated mount options without ro/rw.
	Flags string `json:"flags,omitempty"`
	// RW is true when the root is mounted read-write.
	RW bool `json:"rw"`
}
