package kernelcfg

// Option is one kernel config symbol and, when it is tristate, the module it builds.
type Option struct {
	// Name is the symbol without its CONFIG_ prefix.
	Name string
	// Module is the module the symbol builds when set to m (as modules.order spells it; '-' and
	// '_' are the same to modprobe), or "" for a bool symbol that can only be built in.
	Module string
}

// Requirement is one thing a hook needs from the kernel. It is met by any one of its options,
// or, for a requirement no config symbol expresses, by a kernel version.
type Requirement struct {
	// Hook is the hooks.Catalog name of the hook that needs it.
	Hook string
	// AnyOf lists the options that each meet the requirement on their own, preferred first
	// (the fragment sets one of them). Empty for a MinVersion requirement.
	AnyOf []Option
	// MinVersion is the lowest kernel version ("4.12") that has what is needed, when that is a
	// feature of the code rather than a config symbol.
	MinVersion string
	// NeededFor says what breaks without it.
	NeededFor string
	// Compression restricts the requirement to images compressed with it ("" = always).
	Compression string
	// IfModules restricts the requirement to kernels where some other requirement checked is
	// met by a module (CONFIG_MODULES is pointless when everything is built in).
	IfModules bool
	// Optional requirements are reported but do not make a check fail: the hook works without
	// them, in a narrower set of cases the NeededFor text names.
	Optional bool
}

// Hook describes what one hook needs: its requirements and notes on what it does not need.
type Hook struct {
	Name         string
	Requirements []Requirement
	// Notes say what a reader might expect the hook to need but it does not, and why.
	Notes []string
}

// Compressions lists the initramfs compressions the builder offers, default first, with the
// config symbol that lets the kernel unpack each ("" for none).
var Compressions = []struct{ Name, Option string }{
	{"zstd", "RD_ZSTD"},
	{"gzip", "RD_GZIP"},
	{"xz", "RD_XZ"},
	{"lz4", "RD_LZ4"},
	{"none", ""},
}

// DefaultCompression is the compression of the default image.
const DefaultCompression = "zstd"

// nicDrivers are the Ethernet drivers the net hook accepts as "a network card": virtio and the
// NICs of QEMU, VMware and Hyper-V, then common Intel, Realtek, Broadcom and Atheros chips.
// A kernel whose only NIC driver is another one fails this check wrongly; the docs say so.
var nicDrivers = []Option{
	{"VIRTIO_NET", "virtio_net"}, {"E1000", "e1000"}, {"E1000E", "e1000e"},
	{"VMXNET3", "vmxnet3"}, {"HYPERV_NET", "hv_netvsc"},
	{"IGB", "igb"}, {"IGC", "igc"}, {"IXGBE", "ixgbe"},
	{"R8169", "r8169"}, {"8139CP", "8139cp"}, {"8139TOO", "8139too"},
	{"TIGON3", "tg3"}, {"BNX2", "bnx2"}, {"ATL1C", "atl1c"}, {"ALX", "alx"},
}

// usbKeyboard is what a USB keyboard needs: the HID class driver, the generic HID driver and
// one host controller driver.
func usbKeyboard(hook string) []Requirement {
	return []Requirement{
		{Hook: hook, AnyOf: []Option{{"USB_HID", "usbhid"}}, Optional: true,
			NeededFor: "USB keyboards (HID class driver)"},
		{Hook: hook, AnyOf: []Option{{"HID_GENERIC", "hid_generic"}}, Optional: true,
			NeededFor: "USB keyboards (generic HID driver)"},
		{Hook: hook, Optional: true, NeededFor: "a USB host controller (xHCI, EHCI, OHCI or UHCI)",
			AnyOf: []Option{{"USB_XHCI_PCI", "xhci_pci"}, {"USB_EHCI_PCI", "ehci_pci"},
				{"USB_OHCI_HCD_PCI", "ohci_pci"}, {"USB_UHCI_HCD", "uhci_hcd"}}},
	}
}

// Hooks returns, in hooks.Catalog order, what every hook nbdroot knows needs from the kernel.
// This is the one table of kernel requirements: the check, the docs and the fragment
// (nbdroot.config, kept in agreement by a test) all follow it.
//
// Module names are those of Linux 6.1 (checked against Debian's kernel by a test); version
// facts come from the kernel's git history (NBD netlink: 4.12, "nbd: add a basic netlink
// interface"; NBD_ATTR_BACKEND_IDENTIFIER: 5.14; the essiv template: 5.4).
func Hooks() []Hook {
	return []Hook{
		{Name: "base", Requirements: []Requirement{
			{Hook: "base", AnyOf: []Option{{"BLK_DEV_INITRD", ""}}, NeededFor: "the kernel unpacks the initramfs"},
			{Hook: "base", AnyOf: []Option{{"RD_ZSTD", ""}}, Compression: "zstd", NeededFor: "unpack a zstd-compressed initramfs"},
			{Hook: "base", AnyOf: []Option{{"RD_GZIP", ""}}, Compression: "gzip", NeededFor: "unpack a gzip-compressed initramfs"},
			{Hook: "base", AnyOf: []Option{{"RD_XZ", ""}}, Compression: "xz", NeededFor: "unpack an xz-compressed initramfs"},
			{Hook: "base", AnyOf: []Option{{"RD_LZ4", ""}}, Compression: "lz4", NeededFor: "unpack an lz4-compressed initramfs"},
			{Hook: "base", AnyOf: []Option{{"BINFMT_ELF", ""}}, NeededFor: "run /init, a static ELF binary"},
			{Hook: "base", AnyOf: []Option{{"FUTEX", ""}}, NeededFor: "the Go runtime of /init (futex)"},
			{Hook: "base", AnyOf: []Option{{"EPOLL", ""}}, NeededFor: "the Go runtime of /init (netpoller)"},
			{Hook: "base", AnyOf: []Option{{"DEVTMPFS", ""}}, NeededFor: "/dev, populated by the kernel (devtmpfs)"},
			{Hook: "base", AnyOf: []Option{{"PROC_FS", ""}}, NeededFor: "/proc"},
			{Hook: "base", AnyOf: []Option{{"SYSFS", ""}}, NeededFor: "/sys: devices, modaliases, block devices"},
			{Hook: "base", AnyOf: []Option{{"TMPFS", ""}}, NeededFor: "/run (tmpfs), carried over switch_root"},
		}, Notes: []string{
			"DEVTMPFS_MOUNT is not needed: the init mounts /dev itself.",
		}},
		{Name: "udev", Requirements: []Requirement{
			{Hook: "udev", AnyOf: []Option{{"MODULES", ""}}, IfModules: true,
				NeededFor: "load the modules the image carries (finit_module)"},
			{Hook: "udev", AnyOf: []Option{{"VIRTIO_PCI", "virtio_pci"}}, Optional: true,
				NeededFor: "virtio devices (NIC, disk) of virtual machines"},
		}, Notes: []string{
			"UEVENT_HELPER is not needed: coldplug reads modalias files from /sys.",
		}},
		{Name: "net", Requirements: []Requirement{
			{Hook: "net", AnyOf: []Option{{"INET", ""}}, NeededFor: "IPv4 and TCP to the NBD server"},
			{Hook: "net", AnyOf: []Option{{"PACKET", "af_packet"}}, NeededFor: "DHCP (raw sockets before the link has an address)"},
			{Hook: "net", AnyOf: nicDrivers, NeededFor: "a network card driver (any one)"},
		}, Notes: []string{
			"IP_PNP (the kernel's own ip= autoconfiguration) is not needed: nbdroot runs DHCP and applies ip= in userspace.",
		}},
		{Name: "nbd", Requirements: []Requirement{
			{Hook: "nbd", AnyOf: []Option{{"BLK_DEV_NBD", "nbd"}}, NeededFor: "/dev/nbdN, the NBD block device"},
			{Hook: "nbd", MinVersion: "4.12", Optional: true,
				NeededFor: "NBD netlink: the keeper's reconnect (older: ioctl attach only)"},
			{Hook: "nbd", MinVersion: "5.14", Optional: true,
				NeededFor: "the export's name in /sys/block/nbdN/backend"},
		}},
		{Name: "usbinput", Requirements: usbKeyboard("usbinput")},
		{Name: "keyboard", Requirements: append(usbKeyboard("keyboard"),
			Requirement{Hook: "keyboard", AnyOf: []Option{{"SERIO_I8042", "i8042"}}, Optional: true,
				NeededFor: "PS/2 keyboards (i8042 controller)"},
			Requirement{Hook: "keyboard", AnyOf: []Option{{"KEYBOARD_ATKBD", "atkbd"}}, Optional: true,
				NeededFor: "PS/2 keyboards (AT keyboard driver)"},
		)},
		{Name: "keymap", Notes: []string{
			"keymap needs nothing from the kernel: nbdroot accepts it for mkinitcpio compatibility and loads no keymap.",
		}},
		{Name: "encrypt", Requirements: []Requirement{
			{Hook: "encrypt", AnyOf: []Option{{"BLK_DEV_DM", "dm_mod"}}, NeededFor: "device-mapper (/dev/mapper/NAME)"},
			{Hook: "encrypt", AnyOf: []Option{{"DM_CRYPT", "dm_crypt"}}, NeededFor: "the crypt target that maps the unlocked LUKS volume"},
			{Hook: "encrypt", AnyOf: []Option{{"CRYPTO_AES", "aes_generic"}, {"CRYPTO_AES_NI_INTEL", "aesni_intel"}, {"CRYPTO_AES_TI", "aes_ti"}},
				NeededFor: "the AES cipher (LUKS default)"},
			{Hook: "encrypt", AnyOf: []Option{{"CRYPTO_XTS", "xts"}}, NeededFor: "the xts mode of aes-xts-plain64 (LUKS default)"},
			{Hook: "encrypt", AnyOf: []Option{{"CRYPTO_ECB", "ecb"}}, NeededFor: "xts runs over ecb (xts: softdep pre: ecb)"},
			{Hook: "encrypt", AnyOf: []Option{{"CRYPTO_CBC", "cbc"}}, Optional: true, NeededFor: "aes-cbc-essiv:sha256 volumes (old LUKS1 default)"},
			{Hook: "encrypt", AnyOf: []Option{{"CRYPTO_ESSIV", "essiv"}}, Optional: true, NeededFor: "aes-cbc-essiv:sha256 volumes (kernels from 5.4)"},
			{Hook: "encrypt", AnyOf: []Option{{"CRYPTO_SHA256", "sha256_generic"}, {"CRYPTO_SHA256_SSSE3", "sha256_ssse3"}}, Optional: true,
				NeededFor: "aes-cbc-essiv:sha256 volumes (the essiv hash)"},
		}, Notes: []string{
			"No kernel hash or KDF is needed to unlock: nbdroot runs PBKDF2/Argon2 and the key check in userspace and hands dm-crypt the volume key.",
		}},
		{Name: "lvm2", Notes: []string{
			"lvm2 needs nothing from the kernel: nbdroot accepts it for mkinitcpio compatibility and activates no LVM.",
		}},
		{Name: "filesystems", Requirements: []Requirement{
			{Hook: "filesystems", AnyOf: []Option{{"EXT4_FS", "ext4"}}, NeededFor: "mount an ext4 (or ext2/ext3) root"},
			{Hook: "filesystems", AnyOf: []Option{{"CRYPTO_CRC32C", "crc32c_generic"}, {"CRYPTO_CRC32C_INTEL", "crc32c_intel"}},
				NeededFor: "ext4 metadata checksums (ext4: softdep pre: crypto-crc32c)"},
		}, Notes: []string{
			"JBD2, FS_MBCACHE and CRC16 come with EXT4_FS (Kconfig select); the initramfs builder resolves the modules' depends=.",
		}},
	}
}
