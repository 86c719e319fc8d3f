package bootparam

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/nbdroot/nbdroot/nbd"
)

// ignoreExplain drops the explanation fields from comparisons: the tables below check the
// decisions; TestPrecedence and TestSources check where they came from.
var ignoreExplain = cmpopts.IgnoreFields(Plan{}, "Sources", "Notes")

// Shorthands for the expected plans.
var (
	dhcpIP    = []IPConfig{{Mode: ModeDHCP, Autoconf: "dhcp"}}
	defaultIP = []IPConfig{{Mode: ModeDHCP}} // no ip=: DHCP
)

func server(host string, port int) NBD {
	return NBD{Host: host, Port: port, Device: DefaultDevice, Servers: []Server{{Host: host, Port: port}}}
}

func withExport(n NBD, export string) NBD { n.Export = export; return n }
func withDevice(n NBD, dev string) NBD    { n.Device = dev; return n }
func withClientID(n NBD, id string) NBD   { n.ClientID = id; return n }

func fromDHCP(export, dev string) NBD {
	return NBD{Port: nbd.DefaultPort, Export: export, Device: dev, FromDHCP: true}
}

func plan(ip []IPConfig, n NBD, root Root) *Plan {
	return &Plan{IP: ip, NBD: n, Root: root, Init: DefaultInit}
}

func TestParse(t *testing.T) {
	seed := server("192.168.0.1", 10809)
	rootNBD0 := Root{Device: "/dev/nbd0"}
	tests := []struct {
		name    string
		cmdline string
		want    *Plan
	}{
		// The seed (Arch wiki, mkinitcpio-nbd era).
		{"seed", "initrd=kernel26.img ip=::::::dhcp nbd_server=192.168.0.1:10809 root=/dev/nbd0",
			plan(dhcpIP, seed, rootNBD0)},
		{"seed encrypted", "initrd=kernel26.img ip=::::::dhcp nbd_server=192.168.0.1:10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt",
			&Plan{IP: dhcpIP, NBD: seed, Crypt: &Crypt{Device: "/dev/nbd0", Name: "nbdcrypt"},
				Root: Root{Device: "/dev/mapper/nbdcrypt"}, Init: DefaultInit}},

		// nbd_server= forms.
		{"nbd_server default port", "ip=dhcp nbd_server=192.168.0.1 root=/dev/nbd0",
			plan(dhcpIP, seed, rootNBD0)},
		{"nbd_server IPv6 with port", "ip=dhcp nbd_server=[fd00::1]:10810 root=/dev/nbd0",
			plan(dhcpIP, server("fd00::1", 10810), rootNBD0)},
		{"nbd_server bare IPv6", "ip=dhcp nbd_server=fd00::1 root=/dev/nbd0",
			plan(dhcpIP, server("fd00::1", 10809), rootNBD0)},
		{"nbd_server DNS name and export", "ip=dhcp nbd_server=nbd.example.com:10809 nbd_export=root root=/dev/nbd0",
			plan(dhcpIP, withExport(server("nbd.example.com", 10809), "root"), rootNBD0)},
		{"nbd_server failover list", "ip=dhcp nbd_server=10.0.0.1,10.0.0.2:10900,[fd00::1]:10809 root=/dev/nbd0",
			plan(dhcpIP, NBD{Host: "10.0.0.1", Port: 10809, Device: DefaultDevice,
				Servers: []Server{{"10.0.0.1", 10809}, {"10.0.0.2", 10900}, {"fd00::1", 10809}}}, rootNBD0)},
		{"nbd_export alone waits for DHCP", "ip=dhcp nbd_export=root root=/dev/nbd0",
			plan(dhcpIP, fromDHCP("root", DefaultDevice), rootNBD0)},
		{"no server at all waits for DHCP", "ip=dhcp root=/dev/nbd0",
			plan(dhcpIP, fromDHCP("", DefaultDevice), rootNBD0)},

		// mkinitcpio-nbd.
		{"mkinitcpio-nbd", "ip=dhcp nbd_host=10.0.0.1 nbd_name=root root=/dev/nbd0",
			plan(dhcpIP, withExport(server("10.0.0.1", 10809), "root"), rootNBD0)},
		{"mkinitcpio-nbd with port", "ip=dhcp nbd_host=10.0.0.1 nbd_name=root nbd_port=10900 root=/dev/nbd0",
			plan(dhcpIP, withExport(server("10.0.0.1", 10900), "root"), rootNBD0)},
		{"mkinitcpio-nbd IPv6", "nbd_host=fd00::1 nbd_name=root root=/dev/nbd0",
			plan(defaultIP, withExport(server("fd00::1", 10809), "root"), rootNBD0)},
		{"mkinitcpio-nbd IPv6 in brackets", "nbd_host=[fd00::1] nbd_name=root root=/dev/nbd0",
			plan(defaultIP, withExport(server("fd00::1", 10809), "root"), rootNBD0)},
		{"mkinitcpio-nbd without name", "ip=dhcp nbd_host=nbd.lan root=/dev/nbd0",
			plan(dhcpIP, server("nbd.lan", 10809), rootNBD0)},

		// dracut.
		{"dracut root=nbd: port", "ip=dhcp root=nbd:10.0.0.1:10809",
			plan(dhcpIP, server("10.0.0.1", 10809), rootNBD0)},
		{"dracut non-numeric port is a name", "root=nbd:10.0.0.1:rootexp:ext4",
			plan(defaultIP, withExport(server("10.0.0.1", 10809), "rootexp"), Root{Device: "/dev/nbd0", FSType: "ext4"})},
		{"dracut every field", "rd.neednet=1 ip=dhcp root=nbd:10.0.0.1:10900:ext4:ro,noatime,discard:bs=4096,timeout=30,persist",
			&Plan{IP: dhcpIP, NBD: NBD{Host: "10.0.0.1", Port: 10900, Device: DefaultDevice, Servers: []Server{{"10.0.0.1", 10900}},
				BlockSize: 4096, Timeout: 30 * time.Second},
				Root: Root{Device: "/dev/nbd0", FSType: "ext4", Flags: "noatime,discard"}, Init: DefaultInit}},
		{"dracut rw in ROOTFLAGS, ro on the cmdline wins", "root=nbd:10.0.0.1:10809:ext4:rw ro",
			plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "/dev/nbd0", FSType: "ext4"})},
		{"dracut rw in ROOTFLAGS", "root=nbd:10.0.0.1:10809:auto:rw",
			plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "/dev/nbd0", RW: true})},
		{"dracut IPv6 and PORT/NAME", "root=nbd:[fd00::1]:10809/root:xfs",
			plan(defaultIP, withExport(server("fd00::1", 10809), "root"), Root{Device: "/dev/nbd0", FSType: "xfs"})},
		{"dracut server only", "root=nbd:nbd.lan",
			plan(defaultIP, server("nbd.lan", 10809), rootNBD0)},
		{"dracut netroot with a partition root", "ip=dhcp netroot=nbd:10.0.0.1:root root=/dev/nbd0p1",
			plan(dhcpIP, withExport(server("10.0.0.1", 10809), "root"), Root{Device: "/dev/nbd0p1"})},
		{"dracut netroot alone mounts the device", "netroot=nbd:10.0.0.1:root",
			plan(defaultIP, withExport(server("10.0.0.1", 10809), "root"), rootNBD0)},
		{"dracut root=dhcp", "ip=dhcp root=dhcp",
			plan(dhcpIP, fromDHCP("", DefaultDevice), rootNBD0)},
		{"dracut netroot=dhcp", "ip=dhcp netroot=dhcp root=/dev/nbd0",
			plan(dhcpIP, fromDHCP("", DefaultDevice), rootNBD0)},
		{"dracut first netroot=nbd: counts", "netroot=iscsi:10.0.0.9::::iqn.x netroot=nbd:10.0.0.1:root netroot=nbd:10.0.0.2:other",
			plan(defaultIP, withExport(server("10.0.0.1", 10809), "root"), rootNBD0)},

		// Debian initramfs-tools.
		{"debian three fields, no root=", "ip=dhcp nbdroot=192.168.1.1,export,nbd0",
			plan(dhcpIP, withExport(server("192.168.1.1", 10809), "export"), rootNBD0)},
		{"debian three fields with /dev/", "nbdroot=192.168.1.1,export,/dev/nbd1 root=/dev/nbd1",
			plan(defaultIP, withDevice(withExport(server("192.168.1.1", 10809), "export"), "/dev/nbd1"), Root{Device: "/dev/nbd1"})},
		{"debian numeric second field is a port", "nbdroot=192.168.1.1,2000 root=/dev/nbd0",
			plan(defaultIP, server("192.168.1.1", 2000), rootNBD0)},
		{"debian SRV:PORT/NAME with partition", "nbdroot=192.168.1.1:10809/root root=/dev/nbd0p2",
			plan(defaultIP, withExport(server("192.168.1.1", 10809), "root"), Root{Device: "/dev/nbd0p2"})},
		{"debian SRV:/NAME", "nbdroot=192.168.1.1:/root root=/dev/nbd0",
			plan(defaultIP, withExport(server("192.168.1.1", 10809), "root"), rootNBD0)},
		{"debian [V6]:PORT/NAME", "nbdroot=[fd00::1]:10900/root root=/dev/nbd0",
			plan(defaultIP, withExport(server("fd00::1", 10900), "root"), rootNBD0)},
		{"debian [V6]:/NAME", "nbdroot=[fd00::1]:/root root=/dev/nbd0",
			plan(defaultIP, withExport(server("fd00::1", 10809), "root"), rootNBD0)},
		{"debian [V6],NAME", "nbdroot=[fd00::1],root root=/dev/nbd0",
			plan(defaultIP, withExport(server("fd00::1", 10809), "root"), rootNBD0)},
		{"debian dhcp", "ip=dhcp nbdroot=dhcp root=/dev/nbd0",
			plan(dhcpIP, fromDHCP("", DefaultDevice), rootNBD0)},
		{"debian empty", "ip=dhcp nbdroot= root=/dev/nbd0",
			plan(dhcpIP, fromDHCP("", DefaultDevice), rootNBD0)},
		{"debian empty server keeps name and device", "ip=dhcp nbdroot=,root,nbd2",
			plan(dhcpIP, fromDHCP("root", "/dev/nbd2"), Root{Device: "/dev/nbd2"})},
		{"debian dhcp server with name", "ip=dhcp nbdroot=dhcp,root root=/dev/nbd0",
			plan(dhcpIP, fromDHCP("root", DefaultDevice), rootNBD0)},
		{"debian dhcp server with port", "nbdroot=dhcp,10900 root=/dev/nbd0",
			plan(defaultIP, NBD{Port: 10900, Device: DefaultDevice, FromDHCP: true}, rootNBD0)},
		{"LTSP SRV:NAME", "ro init=/sbin/init-ltsp root=/dev/nbd0 nbdroot=147.26.100.51:ltsp_ubuntu",
			&Plan{IP: defaultIP, NBD: withExport(server("147.26.100.51", 10809), "ltsp_ubuntu"), Root: rootNBD0, Init: "/sbin/init-ltsp"}},
		{"LTSP :NAME from DHCP", "root=/dev/nbd0 nbdroot=:schoolimage",
			plan(defaultIP, fromDHCP("schoolimage", DefaultDevice), rootNBD0)},
		{"raspberry pi SRV/NAME", "ip=dhcp nbdroot=server/image root=/dev/nbd0p2",
			plan(dhcpIP, withExport(server("server", 10809), "image"), Root{Device: "/dev/nbd0p2"})},
		{"debian nbddev= names device and root", "nbddev=nbd3 nbdroot=10.0.0.1,root",
			plan(defaultIP, withDevice(withExport(server("10.0.0.1", 10809), "root"), "/dev/nbd3"), Root{Device: "/dev/nbd3"})},
		{"old ubuntu nbdport=", "nbdroot=192.168.2.15 nbdport=2000 ip=dhcp root=/dev/nbd0",
			plan(dhcpIP, server("192.168.2.15", 2000), rootNBD0)},
		{"old ubuntu nbdport= name", "nbdroot=192.168.2.15 nbdport=root root=/dev/nbd0",
			plan(defaultIP, withExport(server("192.168.2.15", 10809), "root"), rootNBD0)},
		{"debian root= overrides the third field", "nbdroot=10.0.0.1,root,nbd0 root=/dev/nbd1",
			plan(defaultIP, withDevice(withExport(server("10.0.0.1", 10809), "root"), "/dev/nbd1"), Root{Device: "/dev/nbd1"})},

		// root= forms.
		{"root UUID", "nbd_server=10.0.0.1 root=UUID=3f1c-42", plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "UUID=3f1c-42"})},
		{"root LABEL", "nbd_server=10.0.0.1 root=LABEL=thin root", plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "LABEL=thin"})},
		{"root quoted LABEL", `nbd_server=10.0.0.1 root="LABEL=thin root"`, plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "LABEL=thin root"})},
		{"root PARTUUID", "nbd_server=10.0.0.1 root=PARTUUID=0e1f-02", plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "PARTUUID=0e1f-02"})},
		{"root PARTLABEL", "nbd_server=10.0.0.1 root=PARTLABEL=root", plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "PARTLABEL=root"})},
		{"root partition picks base device", "nbd_server=10.0.0.1 root=/dev/nbd4p12",
			plan(defaultIP, withDevice(server("10.0.0.1", 10809), "/dev/nbd4"), Root{Device: "/dev/nbd4p12"})},
		{"root nbd5", "nbd_server=10.0.0.1 root=/dev/nbd5",
			plan(defaultIP, withDevice(server("10.0.0.1", 10809), "/dev/nbd5"), Root{Device: "/dev/nbd5"})},

		// Mount parameters.
		{"rootfstype and rootflags with rw", "nbd_server=10.0.0.1 root=/dev/nbd0 rootfstype=ext4 rootflags=noatime,rw,data=ordered",
			plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "/dev/nbd0", FSType: "ext4", Flags: "noatime,data=ordered", RW: true})},
		{"ro word beats rootflags rw", "nbd_server=10.0.0.1 root=/dev/nbd0 rootflags=rw ro",
			plan(defaultIP, server("10.0.0.1", 10809), rootNBD0)},
		{"last of ro/rw wins", "nbd_server=10.0.0.1 root=/dev/nbd0 ro rw",
			plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "/dev/nbd0", RW: true})},
		{"ro= with a value is not ro", "nbd_server=10.0.0.1 root=/dev/nbd0 rw ro=1",
			plan(defaultIP, server("10.0.0.1", 10809), Root{Device: "/dev/nbd0", RW: true})},
		{"init and rootdelay", "nbd_server=10.0.0.1 root=/dev/nbd0 init=/bin/sh rootdelay=5",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: "/bin/sh", RootDelay: 5 * time.Second}},

		// cryptdevice= and cryptkey=.
		{"crypt by UUID with options and rootfs key",
			"nbd_server=10.0.0.1 cryptdevice=UUID=abcd-ef:root:allow-discards,discard,perf-no_read_workqueue,no-write-workqueue,sector-size=4096 cryptkey=rootfs:/crypto_keyfile.bin root=/dev/mapper/root",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: Root{Device: "/dev/mapper/root"}, Init: DefaultInit,
				Crypt: &Crypt{Device: "UUID=abcd-ef", Name: "root",
					Options: []string{"allow-discards", "no-read-workqueue", "no-write-workqueue", "sector-size=4096"},
					Key:     &CryptKey{Kind: "rootfs", Path: "/crypto_keyfile.bin"}}}},
		{"crypt on a partition, key file on another",
			"nbd_server=10.0.0.1 cryptdevice=/dev/nbd1p2:croot cryptkey=/dev/nbd1p1:vfat:/keys/root.key root=/dev/mapper/croot",
			&Plan{IP: defaultIP, NBD: withDevice(server("10.0.0.1", 10809), "/dev/nbd1"), Root: Root{Device: "/dev/mapper/croot"}, Init: DefaultInit,
				Crypt: &Crypt{Device: "/dev/nbd1p2", Name: "croot",
					Key: &CryptKey{Kind: "file", Device: "/dev/nbd1p1", FSType: "vfat", Path: "/keys/root.key"}}}},
		{"crypt raw key",
			"nbd_server=10.0.0.1 cryptdevice=/dev/nbd0p2:c cryptkey=LABEL=keys:1048576:512 root=/dev/mapper/c",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: Root{Device: "/dev/mapper/c"}, Init: DefaultInit,
				Crypt: &Crypt{Device: "/dev/nbd0p2", Name: "c",
					Key: &CryptKey{Kind: "raw", Device: "LABEL=keys", Offset: 1048576, Size: 512}}}},
		{"crypt with an unknown option", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c:bogus root=/dev/mapper/c",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: Root{Device: "/dev/mapper/c"}, Init: DefaultInit,
				Crypt: &Crypt{Device: "/dev/nbd0", Name: "c"}}},

		// Knobs, breaks, BOOTIF, several ip=, init arguments.
		{"knobs", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connections=4 nbdroot.timeout=30 nbdroot.deadconn=2m nbdroot.debug",
			&Plan{IP: defaultIP, NBD: NBD{Host: "10.0.0.1", Port: 10809, Device: DefaultDevice, Servers: []Server{{"10.0.0.1", 10809}},
				Connections: 4, Timeout: 30 * time.Second, DeadConnTimeout: 2 * time.Minute}, Root: rootNBD0, Init: DefaultInit, Debug: true}},
		{"connect budget and tries", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connect=5 nbdroot.tries=5",
			&Plan{IP: defaultIP, NBD: NBD{Host: "10.0.0.1", Port: 10809, Device: DefaultDevice, Servers: []Server{{"10.0.0.1", 10809}},
				ConnectTimeout: 5 * time.Second}, Root: rootNBD0, Init: DefaultInit, Tries: 5}},
		{"debug off", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.debug=0", plan(defaultIP, server("10.0.0.1", 10809), rootNBD0)},
		{"rd.break", "nbd_server=10.0.0.1 root=/dev/nbd0 rd.break",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Break: "switch_root"}},
		{"rd.break=pre-mount", "nbd_server=10.0.0.1 root=/dev/nbd0 rd.break=pre-mount",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Break: "filesystems"}},
		{"rd.break=initqueue", "nbd_server=10.0.0.1 root=/dev/nbd0 rd.break=initqueue",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Break: "net"}},
		{"nbdroot.shell", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.shell",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Break: "switch_root"}},
		{"nbdroot.shell=0 keeps rd.break", "nbd_server=10.0.0.1 root=/dev/nbd0 rd.break=pre-udev nbdroot.shell=0",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Break: "udev"}},
		{"nbdroot.break beats rd.break", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.break=nbd rd.break nbdroot.shell",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Break: "nbd"}},
		{"BOOTIF", "ip=dhcp BOOTIF=01-52-54-00-12-34-56 nbd_server=10.0.0.1 root=/dev/nbd0",
			&Plan{IP: dhcpIP, BootIF: "52:54:00:12:34:56", NBD: withClientID(server("10.0.0.1", 10809), "52:54:00:12:34:56"), Root: rootNBD0, Init: DefaultInit}},
		// The fleet knobs: identity and client-side overlays.
		{"nbdroot.id wins over BOOTIF", "BOOTIF=01-52-54-00-12-34-56 nbdroot.id=lab-07.pc_3 nbd_server=10.0.0.1 root=/dev/nbd0",
			&Plan{IP: defaultIP, BootIF: "52:54:00:12:34:56", NBD: withClientID(server("10.0.0.1", 10809), "lab-07.pc_3"), Root: rootNBD0, Init: DefaultInit}},
		{"overlay tmpfs", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Overlay: &Overlay{Kind: OverlayTmpfs}}},
		{"overlay tmpfs with a size, rw ignored", "nbd_server=10.0.0.1 root=/dev/nbd0 rw nbdroot.overlay=tmpfs:512M",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: Root{Device: "/dev/nbd0", RW: true}, Init: DefaultInit,
				Overlay: &Overlay{Kind: OverlayTmpfs, Size: "512m"}}},
		{"overlay tmpfs percent", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:25%",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Overlay: &Overlay{Kind: OverlayTmpfs, Size: "25%"}}},
		{"overlay on a disk", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=/dev/vda",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Overlay: &Overlay{Kind: OverlayDevice, Device: "/dev/vda"}}},
		{"overlay on a labelled disk", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=LABEL=scratch",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, Overlay: &Overlay{Kind: OverlayDevice, Device: "LABEL=scratch"}}},
		{"several ip=", "ip=eth0:dhcp ip=10.0.0.5::10.0.0.1:255.255.255.0::eth1:off nbd_server=10.0.0.1 root=/dev/nbd0",
			plan([]IPConfig{{Mode: ModeDHCP, Device: "eth0", Autoconf: "dhcp"},
				{Mode: ModeStatic, Address: "10.0.0.5", Gateway: "10.0.0.1", Netmask: "255.255.255.0", Device: "eth1", Autoconf: "off"}},
				server("10.0.0.1", 10809), rootNBD0)},
		{"static ip= SERVER field names the server", "ip=10.0.0.5:10.0.0.1::255.255.255.0::eth0:off nbdroot=,root root=/dev/nbd0",
			plan([]IPConfig{{Mode: ModeStatic, Address: "10.0.0.5", Server: "10.0.0.1", Netmask: "255.255.255.0", Device: "eth0", Autoconf: "off"}},
				withExport(server("10.0.0.1", 10809), "root"), rootNBD0)},
		{"static ip= without a server field but nbd_server", "ip=10.0.0.5:::255.255.255.0::eth0:off nbd_server=10.0.0.1 root=/dev/nbd0",
			plan([]IPConfig{{Mode: ModeStatic, Address: "10.0.0.5", Netmask: "255.255.255.0", Device: "eth0", Autoconf: "off"}},
				server("10.0.0.1", 10809), rootNBD0)},
		{"init arguments after --", "nbd_server=10.0.0.1 root=/dev/nbd0 -- single emergency",
			&Plan{IP: defaultIP, NBD: server("10.0.0.1", 10809), Root: rootNBD0, Init: DefaultInit, InitArgs: []string{"single", "emergency"}}},
		{"unknown parameters are ignored", "quiet splash console=ttyS0,115200 foo.bar=1 rd.luks=0 nbd_server=10.0.0.1 root=/dev/nbd0 loglevel",
			plan(defaultIP, server("10.0.0.1", 10809), rootNBD0)},
		{"the last repeated parameter wins", "nbd_server=10.0.0.1 nbd_server=10.0.0.2 root=/dev/nbd1 root=/dev/nbd0",
			plan(defaultIP, server("10.0.0.2", 10809), rootNBD0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.cmdline, err)
			}
			if diff := cmp.Diff(tt.want, got, ignoreExplain); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.cmdline, diff)
			}
			// Every plan Parse returns passes the same checks Validate runs later, except
			// for a server still to come from DHCP.
			if err := got.Validate(); err != nil && !got.NBD.FromDHCP {
				t.Errorf("Validate() on the parsed plan: %v", err)
			}
		})
	}
}

// TestPrecedence checks which dialect wins, the Sources it records and the notes about the
// losers.
func TestPrecedence(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		nbd     NBD
		sources map[string]string // a subset of Plan.Sources
		notes   []string          // substrings, each of some note
	}{
		{"nbd_server beats every dialect",
			"nbd_server=10.0.0.1 root=nbd:10.0.0.2:a netroot=nbd:10.0.0.3:b nbdroot=10.0.0.4,c nbd_host=10.0.0.5 nbd_name=d",
			server("10.0.0.1", 10809),
			map[string]string{"nbd.host": "nbd_server=10.0.0.1", "nbd.export": "default: no export name, the server's default export"},
			[]string{"root=nbd:10.0.0.2:a is ignored: nbd_server=10.0.0.1 takes precedence",
				"netroot=nbd:10.0.0.3:b is ignored", "nbdroot=10.0.0.4,c is ignored", "nbd_host=10.0.0.5 nbd_name=d is ignored"}},
		{"dracut root= beats netroot=", "root=nbd:10.0.0.2:a netroot=nbd:10.0.0.3:b",
			withExport(server("10.0.0.2", 10809), "a"),
			map[string]string{"nbd.host": "root=nbd:10.0.0.2:a", "nbd.export": "root=nbd:10.0.0.2:a", "root.device": "root=nbd:10.0.0.2:a (the NBD device)"},
			[]string{"netroot=nbd:10.0.0.3:b is ignored: root=nbd:10.0.0.2:a takes precedence"}},
		{"dracut netroot= beats Debian", "netroot=nbd:10.0.0.3:b nbdroot=10.0.0.4,c root=/dev/nbd0",
			withExport(server("10.0.0.3", 10809), "b"),
			map[string]string{"nbd.host": "netroot=nbd:10.0.0.3:b"},
			[]string{"nbdroot=10.0.0.4,c is ignored: netroot=nbd:10.0.0.3:b takes precedence"}},
		{"Debian beats mkinitcpio-nbd", "nbdroot=10.0.0.4,c nbd_host=10.0.0.5 nbd_name=d nbd_port=1 root=/dev/nbd0",
			withExport(server("10.0.0.4", 10809), "c"),
			map[string]string{"nbd.host": "nbdroot=10.0.0.4,c"},
			[]string{"nbd_host=10.0.0.5 nbd_port=1 nbd_name=d is ignored: nbdroot=10.0.0.4,c takes precedence"}},
		{"Debian dhcp beats mkinitcpio-nbd", "ip=dhcp nbdroot=dhcp nbd_host=10.0.0.5 root=/dev/nbd0",
			fromDHCP("", DefaultDevice),
			map[string]string{"nbd.host": "nbdroot=dhcp (server from DHCP)"},
			[]string{"nbd_host=10.0.0.5 is ignored"}},
		{"nbd_export overrides the winner's export", "root=nbd:10.0.0.2:a nbd_export=mine",
			withExport(server("10.0.0.2", 10809), "mine"),
			map[string]string{"nbd.export": "nbd_export=mine", "nbd.host": "root=nbd:10.0.0.2:a"},
			[]string{`nbd_export=mine overrides the export "a" of root=nbd:10.0.0.2:a`}},
		{"a losing export does not travel", "nbd_server=10.0.0.1 nbdroot=10.0.0.4,c root=/dev/nbd0",
			server("10.0.0.1", 10809), nil, nil},
		{"our timeout beats dracut's", "root=nbd:10.0.0.2:a:::timeout=10 nbdroot.timeout=20",
			NBD{Host: "10.0.0.2", Port: 10809, Export: "a", Device: DefaultDevice, Servers: []Server{{"10.0.0.2", 10809}}, Timeout: 20 * time.Second},
			map[string]string{"nbd.timeout": "nbdroot.timeout=20"}, nil},
		{"dracut NBDOPTS that nbd-client alone uses are noted", "root=nbd:10.0.0.2:a:::persist,-swap",
			withExport(server("10.0.0.2", 10809), "a"), nil,
			[]string{`NBD option "persist"`, `NBD option "-swap"`}},
		{"repeated parameter note names the winner", "nbd_server=10.0.0.1 nbd_server=10.0.0.2 root=/dev/nbd0",
			server("10.0.0.2", 10809), map[string]string{"nbd.host": "nbd_server=10.0.0.2"},
			[]string{"nbd_server is given more than once; the last one (nbd_server=10.0.0.2) wins"}},
		{"root= device beats Debian's third field", "nbdroot=10.0.0.1,root,nbd0 root=/dev/nbd1",
			withDevice(withExport(server("10.0.0.1", 10809), "root"), "/dev/nbd1"),
			map[string]string{"nbd.device": "root=/dev/nbd1"},
			[]string{"device /dev/nbd0 of nbdroot=10.0.0.1,root,nbd0 is overridden by root=/dev/nbd1"}},
		{"cryptdevice= picks the device when root= is a mapping", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd2:c root=/dev/mapper/c",
			withDevice(server("10.0.0.1", 10809), "/dev/nbd2"),
			map[string]string{"nbd.device": "cryptdevice=/dev/nbd2:c", "crypt": "cryptdevice=/dev/nbd2:c"}, nil},
		{"non-NBD netroot is noted", "netroot=iscsi:x nbd_server=10.0.0.1 root=/dev/nbd0",
			server("10.0.0.1", 10809), nil, []string{"netroot=iscsi:x is not an NBD root"}},
		{"cryptkey without cryptdevice is noted", "nbd_server=10.0.0.1 root=/dev/nbd0 cryptkey=rootfs:/k",
			server("10.0.0.1", 10809), nil, []string{"cryptkey=rootfs:/k is ignored without cryptdevice="}},
		{"defaults say why", "nbd_server=10.0.0.1 root=/dev/nbd0",
			server("10.0.0.1", 10809),
			map[string]string{"root.rw": "default: the kernel mounts the root read-only unless rw",
				"ip[0]": "default: no ip=, DHCP (the root is on the network)", "nbd.port": "nbd_server=10.0.0.1",
				"init": "default: no init=", "root.fstype": "default: no rootfstype="}, nil},
		{"static netmask default is explained", "ip=10.0.0.5::::::off nbd_server=10.0.0.1 root=/dev/nbd0",
			server("10.0.0.1", 10809),
			map[string]string{"ip[0].netmask": "default: classful netmask of 10.0.0.5 (kernel ic_defaults)", "ip[0]": "ip=10.0.0.5::::::off"}, nil},
		{"static SERVER field source", "ip=10.0.0.5:10.0.0.1::255.255.255.0::eth0:off nbdroot=,root root=/dev/nbd0",
			withExport(server("10.0.0.1", 10809), "root"),
			map[string]string{"nbd.host": "ip=10.0.0.5:10.0.0.1::255.255.255.0::eth0:off (its SERVER field: the network is static, so no DHCP root-path can name the server)",
				"nbd.export": "nbdroot=,root"}, nil},
		{"ro/rw sources", "root=nbd:10.0.0.2:a:ext4:rw rootflags=ro",
			withExport(server("10.0.0.2", 10809), "a"),
			map[string]string{"root.rw": "rootflags=ro", "root.fstype": "root=nbd:10.0.0.2:a:ext4:rw"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.cmdline, err)
			}
			if diff := cmp.Diff(tt.nbd, got.NBD); diff != "" {
				t.Errorf("NBD (-want +got):\n%s", diff)
			}
			for k, want := range tt.sources {
				if got.Sources[k] != want {
					t.Errorf("Sources[%q] = %q, want %q", k, got.Sources[k], want)
				}
			}
			for _, want := range tt.notes {
				found := false
				for _, n := range got.Notes {
					found = found || strings.Contains(n, want)
				}
				if !found {
					t.Errorf("no note contains %q; notes:\n%s", want, strings.Join(got.Notes, "\n"))
				}
			}
			if len(tt.notes) == 0 && len(got.Notes) != 0 && tt.name != "a losing export does not travel" {
				t.Errorf("unexpected notes:\n%s", strings.Join(got.Notes, "\n"))
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	long := strings.Repeat("x", 4097)
	tests := []struct {
		name    string
		cmdline string
		param   string
		reason  string // substring of Reason
		missing bool
	}{
		{"port out of range", "nbd_server=10.0.0.1:99999 root=/dev/nbd0", "nbd_server", "port must be 1-65535", false},
		{"port zero", "nbd_server=10.0.0.1:0 root=/dev/nbd0", "nbd_server", "port must be 1-65535", false},
		{"port not a number", "nbd_server=10.0.0.1:nbd root=/dev/nbd0", "nbd_server", `port "nbd" is not a number`, false},
		{"colon without port", "nbd_server=10.0.0.1: root=/dev/nbd0", "nbd_server", "':' without a port", false},
		{"empty nbd_server", "nbd_server= root=/dev/nbd0", "nbd_server", "no server given", false},
		{"empty list entry", "nbd_server=10.0.0.1,,10.0.0.2 root=/dev/nbd0", "nbd_server", "empty entry", false},
		{"bad entry in list", "nbd_server=10.0.0.1,10.0.0.2:70000 root=/dev/nbd0", "nbd_server", `"10.0.0.2:70000": port must be 1-65535`, false},
		{"bad IPv4", "nbd_server=10.0.0.256 root=/dev/nbd0", "nbd_server", "not a valid IPv4 address", false},
		{"bad host name", "nbd_server=nbd_server.lan root=/dev/nbd0", "nbd_server", "neither an IP address nor a DNS name", false},
		{"unspecified IPv6", "root=nbd:[::]", "root", "unspecified address", false},
		{"unspecified IPv4", "nbd_server=0.0.0.0 root=/dev/nbd0", "nbd_server", "unspecified address", false},
		{"multicast", "nbd_server=224.0.0.1 root=/dev/nbd0", "nbd_server", "multicast", false},
		{"broadcast", "nbd_server=255.255.255.255 root=/dev/nbd0", "nbd_server", "broadcast", false},
		{"value not UTF-8", "ip=dhcp ip=\xd2:off nbd_server=10.0.0.1 root=/dev/nbd0", "ip", "not valid UTF-8", false},
		{"unclosed bracket", "nbd_server=[fd00::1:10809 root=/dev/nbd0", "nbd_server", "'[' without ']'", false},
		{"junk after bracket", "nbd_server=[fd00::1]x root=/dev/nbd0", "nbd_server", "after ']'", false},
		{"not IPv6 in brackets", "nbd_server=[host]:1 root=/dev/nbd0", "nbd_server", "only an IPv6 address goes in brackets", false},
		{"IPv4 in brackets", "nbd_server=[10.0.0.1]:1 root=/dev/nbd0", "nbd_server", "only an IPv6 address goes in brackets", false},
		{"bad bare IPv6", "nbd_server=fd00::1::2 root=/dev/nbd0", "nbd_server", "[ADDR]:PORT", false},
		{"export too long", "nbd_server=10.0.0.1 nbd_export=" + long + " root=/dev/nbd0", "nbd_export", "longer than 4096 bytes", false},
		{"export not UTF-8", "nbd_server=10.0.0.1 nbd_export=\xff root=/dev/nbd0", "nbd_export", "not valid UTF-8", false},
		{"no root", "ip=dhcp nbd_server=10.0.0.1", "root", "nothing names the root file system", true},
		{"root not on NBD", "nbd_server=10.0.0.1 root=/dev/sda1", "root", "the root is not on NBD", false},
		{"root=/dev/nfs", "nbd_server=10.0.0.1 root=/dev/nfs", "root", "the root is not on NBD", false},
		{"root nbd leading zero", "nbd_server=10.0.0.1 root=/dev/nbd01", "root", "not an NBD device or partition name", false},
		{"root nbd partition 0", "nbd_server=10.0.0.1 root=/dev/nbd0p0", "root", "not an NBD device or partition name", false},
		{"root empty UUID", "nbd_server=10.0.0.1 root=UUID=", "root", "UUID is empty", false},
		{"mapping without cryptdevice", "nbd_server=10.0.0.1 root=/dev/mapper/root", "root", "needs cryptdevice=DEVICE:root", false},
		{"mapping name mismatch", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:a root=/dev/mapper/b", "root", "names mapping b but cryptdevice= opens a", false},
		{"device conflict nbddev/root", "nbd_server=10.0.0.1 nbddev=nbd2 root=/dev/nbd1", "nbddev", "needs /dev/nbd2 but root=/dev/nbd1 needs /dev/nbd1", false},
		{"device conflict cryptdevice/nbddev", "nbd_server=10.0.0.1 nbddev=nbd0 cryptdevice=/dev/nbd1:c root=/dev/mapper/c", "cryptdevice", "needs /dev/nbd1 but nbddev=nbd0", false},
		{"bad nbddev", "nbd_server=10.0.0.1 nbddev=sda root=/dev/nbd0", "nbddev", "not an NBD device", false},
		{"cryptdevice without name", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0 root=/dev/nbd0", "cryptdevice", "no ':NAME'", false},
		{"cryptdevice empty name", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0: root=/dev/nbd0", "cryptdevice", "device-mapper name is empty", false},
		{"cryptdevice bad device", "nbd_server=10.0.0.1 cryptdevice=nbd0:c root=/dev/mapper/c", "cryptdevice", "neither a /dev/ path nor UUID=", false},
		{"cryptdevice bad nbd name", "nbd_server=10.0.0.1 cryptdevice=/dev/nbdx:c root=/dev/mapper/c", "cryptdevice", "not an NBD device or partition name", false},
		{"cryptdevice bad sector size", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c:sector-size=1000 root=/dev/mapper/c", "cryptdevice", "sector-size", false},
		{"cryptkey relative", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c cryptkey=rootfs:key root=/dev/mapper/c", "cryptkey", "must be absolute", false},
		{"cryptkey two fields", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c cryptkey=/dev/nbd0p1:ext4 root=/dev/mapper/c", "cryptkey", "three", false},
		{"cryptkey zero size", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c cryptkey=/dev/nbd0p1:0:0 root=/dev/mapper/c", "cryptkey", "key size must be", false},
		{"cryptkey empty path", "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c cryptkey=/dev/nbd0p1:ext4: root=/dev/mapper/c", "cryptkey", "path is empty", false},
		{"network off", "ip=off nbd_server=10.0.0.1 root=/dev/nbd0", "ip", "the network is off but the root is on NBD", false},
		{"static without server", "ip=10.0.0.5:::255.255.255.0::eth0:off root=/dev/nbd0", "nbd_server", "ip= is static", true},
		{"static with Debian dhcp", "ip=10.0.0.5:::255.255.255.0::eth0:off nbdroot=dhcp root=/dev/nbd0", "nbd_server", "ip= is static", true},
		{"same device twice", "ip=eth0:dhcp ip=eth0:off nbd_server=10.0.0.1 root=/dev/nbd0", "ip", "interface eth0 is configured twice", false},
		{"two ip= without device", "ip=dhcp ip=::::::dhcp nbd_server=10.0.0.1 root=/dev/nbd0", "ip", "several ip= leave the device empty", false},
		{"bad ip=", "ip=dhpc nbd_server=10.0.0.1 root=/dev/nbd0", "ip", "neither an autoconf word", false},
		{"bad BOOTIF", "BOOTIF=xx nbd_server=10.0.0.1 root=/dev/nbd0", "BOOTIF", "hex digits", false},
		{"identity with a slash", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.id=lab/pc1", "nbdroot.id", `contains '/'`, false},
		{"identity dot-dot", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.id=..", "nbdroot.id", "is a path element", false},
		{"identity too long", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.id=" + strings.Repeat("a", 65), "nbdroot.id", "65 bytes (at most 64)", false},
		{"identity empty", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.id=", "nbdroot.id", "empty", false},
		{"identity with a space", "nbd_server=10.0.0.1 root=/dev/nbd0 \"nbdroot.id=a b\"", "nbdroot.id", `contains ' '`, false},
		{"overlay empty", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=", "nbdroot.overlay", "empty", false},
		{"overlay tmpfs without size", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:", "nbdroot.overlay", "no size", false},
		{"overlay tmpfs bad size", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:lots", "nbdroot.overlay", "not a number", false},
		{"overlay tmpfs zero", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:0", "nbdroot.overlay", "no room", false},
		{"overlay tmpfs bytes", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:512", "nbdroot.overlay", "less than 1 MiB", false},
		{"overlay tmpfs percent", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=tmpfs:150%", "nbdroot.overlay", "more than all of the RAM", false},
		{"overlay not a device", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=ram", "nbdroot.overlay", "neither a /dev/ path", false},
		{"overlay on the root's device", "nbd_server=10.0.0.1 root=/dev/nbd0p1 nbdroot.overlay=/dev/nbd0p2", "nbdroot.overlay", "NBD device of the root", false},
		{"connections zero", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connections=0", "nbdroot.connections", "must be 1-64", false},
		{"connections too many", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connections=65", "nbdroot.connections", "must be 1-64", false},
		{"connections not a number", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connections=four", "nbdroot.connections", "not a number", false},
		{"timeout zero", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.timeout=0", "nbdroot.timeout", "at least 1s", false},
		{"timeout fraction", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.timeout=1.5s", "nbdroot.timeout", "whole seconds", false},
		{"timeout garbage", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.timeout=soon", "nbdroot.timeout", "neither seconds nor a duration", false},
		{"timeout too long", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.deadconn=25h", "nbdroot.deadconn", "at most 24h", false},
		{"timeout huge number", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.timeout=99999999999999999999", "nbdroot.timeout", "at most 24h", false},
		{"timeout negative", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.timeout=-5s", "nbdroot.timeout", "at least 1s", false},
		{"tries zero", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.tries=0", "nbdroot.tries", "1 to 99", false},
		{"tries garbage", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.tries=many", "nbdroot.tries", "1 to 99", false},
		{"connect zero", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connect=0", "nbdroot.connect", "at least 1s", false},
		{"unknown knob", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.conections=4", "nbdroot.conections", "unknown nbdroot knob", false},
		{"unknown break", "nbd_server=10.0.0.1 root=/dev/nbd0 rd.break=pre-shutdown", "rd.break", "unknown break point", false},
		{"empty nbdroot.break", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.break=", "nbdroot.break", "no hook named", false},
		{"bad debug value", "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.debug=maybe", "nbdroot.debug", "not a yes/no value", false},
		{"relative init", "nbd_server=10.0.0.1 root=/dev/nbd0 init=sbin/init", "init", "absolute path", false},
		{"rootdelay not a number", "nbd_server=10.0.0.1 root=/dev/nbd0 rootdelay=5s", "rootdelay", "whole number of seconds", false},
		{"rootdelay too long", "nbd_server=10.0.0.1 root=/dev/nbd0 rootdelay=90000", "rootdelay", "at most 24h", false},
		{"bad rootfstype", "nbd_server=10.0.0.1 root=/dev/nbd0 rootfstype=ext4;x", "rootfstype", "not a file system name", false},
		{"dracut bad port", "root=nbd:10.0.0.1:99999", "root", "port must be 1-65535", false},
		{"dracut bad block size", "root=nbd:10.0.0.1:10809:ext4::bs=3000", "root", "block size", false},
		{"dracut bad timeout", "root=nbd:10.0.0.1:10809:ext4::timeout=x", "root", "timeout:", false},
		{"dracut bad fstype", "root=nbd:10.0.0.1:10809:e/x", "root", "not a file system name", false},
		{"dracut bad host", "root=nbd::10809", "root", "host is empty", false},
		{"dracut bad bracket", "root=nbd:[fd00::1", "root", "'[' without ']'", false},
		{"dracut IPv4 in brackets", "root=nbd:[10.0.0.1]:10809", "root", "only an IPv6 address goes in brackets", false},
		{"debian name in brackets", "nbdroot=[srv]:/root root=/dev/nbd0", "nbdroot", "only an IPv6 address goes in brackets", false},
		{"debian comma half bracket", "nbdroot=[fd00::1,root root=/dev/nbd0", "nbdroot", "only an IPv6 address goes in brackets", false},
		{"netroot bad", "netroot=nbd:10.0.0.1:0", "netroot", "port must be 1-65535", false},
		{"debian four fields", "nbdroot=a,b,c,d root=/dev/nbd0", "nbdroot", "more than 3", false},
		{"debian bad device", "nbdroot=10.0.0.1,root,sda root=/dev/nbd0", "nbdroot", "is not an NBD device", false},
		{"debian empty second field", "nbdroot=10.0.0.1, root=/dev/nbd0", "nbdroot", "second field", false},
		{"debian colon without port", "nbdroot=10.0.0.1: root=/dev/nbd0", "nbdroot", "without a port or export name", false},
		{"debian bare IPv6", "nbdroot=fe80::1:10809/root root=/dev/nbd0", "nbdroot", "[ADDR]", false},
		{"debian bad port", "nbdroot=10.0.0.1,99999 root=/dev/nbd0", "nbdroot", "port must be 1-65535", false},
		{"debian empty name", "nbdroot=10.0.0.1:10809/ root=/dev/nbd0", "nbdroot", "export name is empty", false},
		{"debian bad host", "nbdroot=bad_host,root root=/dev/nbd0", "nbdroot", "neither an IP address", false},
		{"nbdport bad", "nbdroot=10.0.0.1 nbdport=99999 root=/dev/nbd0", "nbdport", "port must be 1-65535", false},
		{"nbd_name without nbd_host", "nbd_name=root root=/dev/nbd0", "nbd_host", "nbd_name=root needs nbd_host=", true},
		{"nbd_port without nbd_host", "nbd_port=10809 root=/dev/nbd0", "nbd_host", "nbd_port=10809 needs nbd_host=", true},
		{"nbd_port bad", "nbd_host=10.0.0.1 nbd_port=x root=/dev/nbd0", "nbd_port", "not a number", false},
		{"nbd_host bad bracket", "nbd_host=[fd00::1 root=/dev/nbd0", "nbd_host", "only an IPv6 address goes in brackets", false},
		{"nbd_host bad", "nbd_host=-x root=/dev/nbd0", "nbd_host", "label starting or ending with '-'", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.cmdline)
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("Parse(%q) = %+v, %v; want a *ParamError", tt.cmdline, got, err)
			}
			if pe.Param != tt.param || pe.Missing != tt.missing {
				t.Errorf("error names %q (missing %v), want %q (missing %v): %v", pe.Param, pe.Missing, tt.param, tt.missing, err)
			}
			if !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("reason %q does not contain %q", pe.Reason, tt.reason)
			}
			if pe.Expected == "" {
				t.Errorf("error %v gives no expected form", err)
			}
			msg := err.Error()
			if strings.ContainsAny(msg, "\r\n") {
				t.Errorf("message is not one line: %q", msg)
			}
			if !strings.HasPrefix(msg, tt.param+"=") {
				t.Errorf("message %q does not start with %s=", msg, tt.param)
			}
		})
	}
}

// TestErrorMessages pins the exact one-line messages of representative errors: the format
// users and scripts see on the console.
func TestErrorMessages(t *testing.T) {
	for _, tt := range []struct{ cmdline, want string }{
		{"ip=::::::dhcp nbd_server=10.0.0.1:99999 root=/dev/nbd0",
			`nbd_server="10.0.0.1:99999": port must be 1-65535 (form: HOST[:PORT], [IPV6]:PORT; several separated by commas)`},
		{"ip=dhcp nbd_server=10.0.0.1",
			`root= is missing: nothing names the root file system (form: root=/dev/nbdN | /dev/nbdNpM | /dev/mapper/NAME | /dev/VG/LV | UUID=… | LABEL=… | PARTUUID=… | PARTLABEL=… | nbd:… (dracut))`},
		{"ip=10.0.0.5:::255.255.255.0::eth0:off root=/dev/nbd0",
			`nbd_server= is missing: no NBD server is named and ip= is static, so no DHCP root-path can name one (form: nbd_server=HOST[:PORT] | root=nbd:SERVER:PORT | nbdroot=SERVER,NAME | nbd_host=HOST | ip=…:SERVER:… (static))`},
		{"nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.timeout=1.5s",
			`nbdroot.timeout="1.5s": must be whole seconds (form: nbdroot.timeout=SECONDS or a duration (30, 30s, 2m))`},
		{"nbd_server=10.0.0.1 cryptdevice=/dev/nbd0 root=/dev/nbd0",
			`cryptdevice="/dev/nbd0": no ':NAME' after the device (form: cryptdevice=DEVICE:NAME[:OPTIONS] with DEVICE /dev/… | UUID=… | LABEL=… | PARTUUID=… | PARTLABEL=…)`},
		{"ip=off nbd_server=10.0.0.1 root=/dev/nbd0",
			`ip="off": the network is off but the root is on NBD (form: ip=off|none|on|any|dhcp|bootp|both|dhcp6|auto6 | ip=CLIENT:SERVER:GW:NETMASK:HOSTNAME:DEVICE:AUTOCONF:DNS0:DNS1:NTP0 (IPv6 in brackets) | ip=DEVICE:dhcp|dhcp6|auto6[:MTU])`},
	} {
		_, err := Parse(tt.cmdline)
		if err == nil {
			t.Errorf("Parse(%q) succeeded, want %s", tt.cmdline, tt.want)
			continue
		}
		if got := err.Error(); got != tt.want {
			t.Errorf("Parse(%q) error:\n got %s\nwant %s", tt.cmdline, got, tt.want)
		}
	}
}

func TestParamErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		err  *ParamError
		want string
	}{
		{&ParamError{Param: "ip", Value: "a\nb", Reason: "bad", Expected: "x"}, `ip="a\nb": bad (form: x)`},
		{&ParamError{Param: "p", Value: strings.Repeat("v", 200), Reason: "r"}, `p="` + strings.Repeat("v", 120) + `…": r`},
		{&ParamError{Param: "root", Missing: true, Reason: "r\nx", Expected: "f"}, `root= is missing: r\nx (form: f)`},
		{&ParamError{Param: "p", Value: "\x00\x1b"}, `p="\x00\x1b"`},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	inner := errors.New("inner")
	if e := (&ParamError{Param: "p", Err: inner}); !errors.Is(e, inner) {
		t.Errorf("ParamError does not unwrap to its Err")
	}
}
