// Package catalog is the one table of nbdroot's boot hooks: per hook, whether it runs at
// boot (a stage of the init), the kernel modules the image carries for it, and what it needs
// from the kernel (config options with the module each builds, or a kernel version).
// Everything else reads it: the image builder picks modules from it, kernelcfg checks a
// kernel against it, bootparam takes its break points from it and the init accepts the
// image's hook names and maps the stages to their code by it.
//
// It imports nothing of nbdroot's, so the host tool does not link the init and the init
// does not link the builder.
package catalog

// Spec declares one boot hook.
type Spec struct {
	// Name is the mkinitcpio-style hook name (base, udev, net, nbd, encrypt, filesystems…).
	Name string
	// Summary says in a few words what the hook does at boot.
	Summary string
	// Runs is false for hooks accepted for mkinitcpio compatibility that do nothing at boot in
	// nbdroot (their work is part of another hook, or not needed on a thin client); the hooks
	// that run are the init's stages.
	Runs bool
	// Modules are module names or aliases the hook needs; the builder resolves each with its
	// depends= and softdep= and fails when one is missing and not built in.
	Modules []string
	// OptionalModules are included when the kernel has them and skipped silently otherwise
	// (hardware drivers, accelerated cipher variants).
	OptionalModules []string
	// OnDemandModules are included like OptionalModules but never loaded by the hook: the
	// kernel asks for them (request_module, answered by the init's modprobe) when a feature
	// needs them — rtnl-link-bond when the net hook creates a bond. Loading the bonding
	// driver on every boot would give every client a bond0.
	OnDemandModules []string
	// NICs marks the hook that needs network drivers: the builder adds them according to its
	// NIC policy (host-only or universal).
	NICs bool
	// Kernel is what the hook needs from the kernel; kernelcfg checks a kernel against it and
	// its fragment (kernelcfg/nbdroot.config) follows it.
	Kernel []Requirement
	// KernelNotes say what a reader might expect the hook to need from the kernel but it does
	// not, and why.
	KernelNotes []string
	// MapsTo names the hooks this one stands for: mkinitcpio's systemd-based hooks (systemd,
	// sd-vconsole, sd-encrypt) do in a systemd initramfs what these nbdroot hooks do. The
	// builder replaces the name with them; a hook that maps does nothing of its own.
	MapsTo []string
	// AutodetectDirs are directories of the module tree ("kernel/drivers/gpu/drm/") holding
	// the drivers of the hook's device class. With autodetect and a client's module list,
	// the client's modules from them join the hook's optional modules: mkinitcpio's
	// add_checked_modules of the same class.
	AutodetectDirs []string
}

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
	// Hook is the name of the hook that needs it (Catalog fills it in).
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

// SwitchRoot is the init's last stage: not a hook of the image's list (every image ends
// with it), but a point the boot can be stopped before (rd.break).
const SwitchRoot = "switch_root"

// Default is the hook list of the default image: the seed's encrypted HOOKS line minus the
// input and keymap hooks, which a serial-console thin client does not need.
var Default = []string{"base", "udev", "net", "nbd", "encrypt", "filesystems"}

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

// keyboardDirs hold the drivers of keyboards: HID (USB keyboards), input/keyboard and serio
// (PS/2), and the USB host controllers they hang off.
var keyboardDirs = []string{"kernel/drivers/hid/", "kernel/drivers/input/keyboard/", "kernel/drivers/input/serio/", "kernel/drivers/usb/host/"}

// usbKeyboard is what a USB keyboard needs from the kernel: the HID class driver, the generic
// HID driver and one host controller driver.
func usbKeyboard() []Requirement {
	return []Requirement{
		{AnyOf: []Option{{"USB_HID", "usbhid"}}, Optional: true, NeededFor: "USB keyboards (HID class driver)"},
		{AnyOf: []Option{{"HID_GENERIC", "hid_generic"}}, Optional: true, NeededFor: "USB keyboards (generic HID driver)"},
		{Optional: true, NeededFor: "a USB host controller (xHCI, EHCI, OHCI or UHCI)",
			AnyOf: []Option{{"USB_XHCI_PCI", "xhci_pci"}, {"USB_EHCI_PCI", "ehci_pci"},
				{"USB_OHCI_HCD_PCI", "ohci_pci"}, {"USB_UHCI_HCD", "uhci_hcd"}}},
	}
}

// Catalog returns the specs of every hook nbdroot knows, in canonical boot order.
//
// Module names are those of Linux 6.1 (checked against Debian's kernel by kernelcfg's tests);
// version facts come from the kernel's git history (NBD netlink: 4.12, "nbd: add a basic
// netlink interface"; NBD_ATTR_BACKEND_IDENTIFIER: 5.14; the essiv template: 5.4).
func Catalog() []Spec {
	specs := []Spec{
		{Name: "base", Summary: "mount /proc /sys /dev /run, console, logging", Runs: true,
			Kernel: []Requirement{
				{AnyOf: []Option{{"BLK_DEV_INITRD", ""}}, NeededFor: "the kernel unpacks the initramfs"},
				{AnyOf: []Option{{"RD_ZSTD", ""}}, Compression: "zstd", NeededFor: "unpack a zstd-compressed initramfs"},
				{AnyOf: []Option{{"RD_GZIP", ""}}, Compression: "gzip", NeededFor: "unpack a gzip-compressed initramfs"},
				{AnyOf: []Option{{"RD_XZ", ""}}, Compression: "xz", NeededFor: "unpack an xz-compressed initramfs"},
				{AnyOf: []Option{{"RD_LZ4", ""}}, Compression: "lz4", NeededFor: "unpack an lz4-compressed initramfs"},
				{AnyOf: []Option{{"BINFMT_ELF", ""}}, NeededFor: "run /init, a static ELF binary"},
				{AnyOf: []Option{{"FUTEX", ""}}, NeededFor: "the Go runtime of /init (futex)"},
				{AnyOf: []Option{{"EPOLL", ""}}, NeededFor: "the Go runtime of /init (netpoller)"},
				{AnyOf: []Option{{"DEVTMPFS", ""}}, NeededFor: "/dev, populated by the kernel (devtmpfs)"},
				{AnyOf: []Option{{"PROC_FS", ""}}, NeededFor: "/proc"},
				{AnyOf: []Option{{"SYSFS", ""}}, NeededFor: "/sys: devices, modaliases, block devices"},
				{AnyOf: []Option{{"TMPFS", ""}}, NeededFor: "/run (tmpfs), carried over switch_root"},
			},
			KernelNotes: []string{"DEVTMPFS_MOUNT is not needed: the init mounts /dev itself."}},
		{Name: "udev", Summary: "load the modules the image carries, coldplug devices by modalias", Runs: true,
			// virtio_pci exposes the virtio devices (NIC, disk) of virtual machines.
			OptionalModules: []string{"virtio_pci"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"MODULES", ""}}, IfModules: true, NeededFor: "load the modules the image carries (finit_module)"},
				{AnyOf: []Option{{"VIRTIO_PCI", "virtio_pci"}}, Optional: true, NeededFor: "virtio devices (NIC, disk) of virtual machines"},
			},
			KernelNotes: []string{"UEVENT_HELPER is not needed: coldplug reads modalias files from /sys."}},
		{Name: "net", Summary: "bring up the network: DHCPv4, DHCPv6, SLAAC or static ip=; VLANs, bonds, bridges", Runs: true, NICs: true,
			// af_packet is needed by DHCP when CONFIG_PACKET is a module.
			OptionalModules: []string{"af_packet"},
			// The kernel asks for it when the hook opens an IPv6 socket (net-pf-10).
			OnDemandModules: []string{"ipv6"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"INET", ""}}, NeededFor: "IPv4 and TCP to the NBD server"},
				{AnyOf: []Option{{"PACKET", "af_packet"}}, NeededFor: "DHCP (raw sockets before the link has an address)"},
				{AnyOf: nicDrivers, NeededFor: "a network card driver (any one)"},
				{AnyOf: []Option{{"IPV6", "ipv6"}}, Optional: true, NeededFor: "ip=dhcp6, ip=auto6, static IPv6 and NBD servers by IPv6 address"},
			},
			KernelNotes: []string{"IP_PNP (the kernel's own ip= autoconfiguration) is not needed: nbdroot runs DHCP and applies ip= in userspace."}},
		{Name: "netdev", Summary: "VLAN, bond and bridge drivers for vlan=, bond=, bridge= (the net hook creates the devices)",
			// Not loaded by the hook: the kernel asks for each (rtnl-link-vlan/-bond/-bridge)
			// when the net hook creates such a device. An image without this hook has none
			// of them (about 350 KiB), and the net hook says so.
			OnDemandModules: []string{"8021q", "bonding", "bridge"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"VLAN_8021Q", "8021q"}}, Optional: true, NeededFor: "vlan= (802.1Q VLAN interfaces)"},
				{AnyOf: []Option{{"BONDING", "bonding"}}, Optional: true, NeededFor: "bond= (bonded NICs)"},
				{AnyOf: []Option{{"BRIDGE", "bridge"}}, Optional: true, NeededFor: "bridge="},
			}},
		{Name: "nbd", Summary: "negotiate with the NBD server and attach /dev/nbdN", Runs: true,
			Modules: []string{"nbd"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"BLK_DEV_NBD", "nbd"}}, NeededFor: "/dev/nbdN, the NBD block device"},
				{MinVersion: "4.12", Optional: true, NeededFor: "NBD netlink: the keeper's reconnect (older: ioctl attach only)"},
				{MinVersion: "5.14", Optional: true, NeededFor: "the export's name in /sys/block/nbdN/backend"},
			}},
		// tls: the nbd hook speaks TLS when the image carries a CA; this hook brings the
		// kernel's side, which is optional because the keeper relays where it is missing.
		// The AEAD templates are requested by name (crypto-gcm(aes), …) when a socket is
		// configured, possibly after switch_root: they are loaded at boot instead.
		{Name: "tls", Summary: "kernel TLS for the NBD connections (the builder adds it with --tls-ca)",
			OptionalModules: []string{"tls", "gcm", "ctr", "ghash_generic", "ghash_clmulni_intel", "aesni_intel",
				"chacha20poly1305", "chacha_generic", "chacha_x86_64", "poly1305_generic", "poly1305_x86_64"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"TLS", "tls"}}, Optional: true,
					NeededFor: "kernel TLS: the nbd driver reads the TLS socket itself (without it the keeper relays every byte in userspace)"},
				{MinVersion: "5.1", Optional: true, NeededFor: "kernel TLS 1.3 (older kernels: the keeper relays)"},
				{AnyOf: []Option{{"CRYPTO_GCM", "gcm"}}, Optional: true, NeededFor: "kernel TLS with the AES-GCM suites"},
				{AnyOf: []Option{{"CRYPTO_CHACHA20POLY1305", "chacha20poly1305"}}, Optional: true,
					NeededFor: "kernel TLS with ChaCha20-Poly1305, which clients without AES instructions negotiate (Linux 5.11+)"},
			},
			KernelNotes: []string{"TLS needs nothing from the kernel to work: the handshake runs in userspace, and where kernel TLS or a cipher is missing the keeper relays the records."}},
		{Name: "usbinput", Summary: "USB keyboards for the passphrase prompt",
			OptionalModules: []string{"usbhid", "hid_generic", "xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd"},
			AutodetectDirs:  keyboardDirs,
			Kernel:          usbKeyboard()},
		{Name: "keyboard", Summary: "keyboards for the passphrase prompt",
			OptionalModules: []string{"usbhid", "hid_generic", "xhci_pci", "ehci_pci", "atkbd", "i8042"},
			AutodetectDirs:  keyboardDirs,
			Kernel: append(usbKeyboard(),
				Requirement{AnyOf: []Option{{"SERIO_I8042", "i8042"}}, Optional: true, NeededFor: "PS/2 keyboards (i8042 controller)"},
				Requirement{AnyOf: []Option{{"KEYBOARD_ATKBD", "atkbd"}}, Optional: true, NeededFor: "PS/2 keyboards (AT keyboard driver)"},
			)},
		{Name: "keymap", Summary: "load the console keymap (KEYMAP= of vconsole.conf, Debian's console-setup) before the passphrase prompt", Runs: true,
			Kernel: []Requirement{
				{AnyOf: []Option{{"VT", ""}}, NeededFor: "virtual terminals: the keymap applies to keyboards typing on a VT (a serial console has no keymap)"},
			},
			KernelNotes: []string{"The keymap is compiled into a table at build time and loaded with the KDSKBENT/KDSKBDIACRUC ioctls, as loadkeys does: no kbd binary or keymap files in the image."}},
		{Name: "consolefont", Summary: "accepted: the console font is not loaded (the kernel's built-in font shows the prompt; the booted system loads FONT=)",
			KernelNotes: []string{"consolefont needs nothing from the kernel: the passphrase prompt is ASCII, and the booted system's systemd-vconsole-setup or setupcon loads the font."}},
		{Name: "encrypt", Summary: "unlock LUKS1/LUKS2 (cryptdevice=, rd.luks.*) with dm-crypt", Runs: true,
			Modules: []string{"dm_mod", "dm_crypt", "xts", "ecb"},
			// sha512/essiv are needed by some LUKS1 images; aesni accelerates AES on x86.
			OptionalModules: []string{"aesni_intel", "essiv", "sha512_generic", "cbc", "sha256_generic"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"BLK_DEV_DM", "dm_mod"}}, NeededFor: "device-mapper (/dev/mapper/NAME)"},
				{AnyOf: []Option{{"DM_CRYPT", "dm_crypt"}}, NeededFor: "the crypt target that maps the unlocked LUKS volume"},
				{AnyOf: []Option{{"CRYPTO_AES", "aes_generic"}, {"CRYPTO_AES_NI_INTEL", "aesni_intel"}, {"CRYPTO_AES_TI", "aes_ti"}},
					NeededFor: "the AES cipher (LUKS default)"},
				{AnyOf: []Option{{"CRYPTO_XTS", "xts"}}, NeededFor: "the xts mode of aes-xts-plain64 (LUKS default)"},
				{AnyOf: []Option{{"CRYPTO_ECB", "ecb"}}, NeededFor: "xts runs over ecb (xts: softdep pre: ecb)"},
				{AnyOf: []Option{{"CRYPTO_CBC", "cbc"}}, Optional: true, NeededFor: "aes-cbc-essiv:sha256 volumes (old LUKS1 default)"},
				{AnyOf: []Option{{"CRYPTO_ESSIV", "essiv"}}, Optional: true, NeededFor: "aes-cbc-essiv:sha256 volumes (kernels from 5.4)"},
				{AnyOf: []Option{{"CRYPTO_SHA256", "sha256_generic"}, {"CRYPTO_SHA256_SSSE3", "sha256_ssse3"}}, Optional: true,
					NeededFor: "aes-cbc-essiv:sha256 volumes (the essiv hash)"},
			},
			KernelNotes: []string{"No kernel hash or KDF is needed to unlock: nbdroot runs PBKDF2/Argon2 and the key check in userspace and hands dm-crypt the volume key."}},
		{Name: "lvm2", Summary: "activate LVM2 logical volumes (linear, striped) on the NBD device or in the unlocked LUKS volume", Runs: true,
			Modules: []string{"dm_mod"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"BLK_DEV_DM", "dm_mod"}}, NeededFor: "device-mapper: the linear and striped targets LVM2 volumes are mapped with (both part of dm_mod)"},
			},
			KernelNotes: []string{"No lvm binary, udev or DM_* target beyond dm_mod: nbdroot reads the LVM2 metadata itself and loads linear and striped tables (thin, raid, cache and snapshot volumes are refused)."}},
		{Name: "filesystems", Summary: "mount the root filesystem", Runs: true,
			Modules: []string{"ext4"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"EXT4_FS", "ext4"}}, NeededFor: "mount an ext4 (or ext2/ext3) root"},
				{AnyOf: []Option{{"CRYPTO_CRC32C", "crc32c_generic"}, {"CRYPTO_CRC32C_INTEL", "crc32c_intel"}},
					NeededFor: "ext4 metadata checksums (ext4: softdep pre: crypto-crc32c)"},
			},
			KernelNotes:    []string{"JBD2, FS_MBCACHE and CRC16 come with EXT4_FS (Kconfig select); the initramfs builder resolves the modules' depends=."},
			AutodetectDirs: []string{"kernel/fs/"}},
		{Name: "overlay", Summary: "a writable / over the read-only root (nbdroot.overlay=): overlayfs on tmpfs or a local disk", Runs: true,
			Modules: []string{"overlay"},
			// The disks of nbdroot.overlay=DEVICE: virtio (virtual machines), SATA (AHCI and
			// the SCSI disk driver it needs) and NVMe.
			OptionalModules: []string{"virtio_blk", "ahci", "sd_mod", "nvme"},
			Kernel: []Requirement{
				{AnyOf: []Option{{"OVERLAY_FS", "overlay"}}, NeededFor: "the writable overlay over the read-only root (nbdroot.overlay=)"},
				{AnyOf: []Option{{"VIRTIO_BLK", "virtio_blk"}, {"BLK_DEV_NVME", "nvme"}, {"SATA_AHCI", "ahci"}}, Optional: true,
					NeededFor: "a local disk for nbdroot.overlay=DEVICE (virtio, NVMe, or SATA with BLK_DEV_SD)"},
			},
			KernelNotes: []string{"nbdroot.overlay=tmpfs needs only TMPFS (the base hook's); a local disk's file system must be one the image carries (ext4 comes with filesystems)."}},
		{Name: "fsck", Summary: "not run at boot: the root is mounted read-only and the booted system checks it (systemd-fsck-root) before remounting it read-write; a shared export is never repaired by a client",
			KernelNotes: []string{"fsck needs nothing from the kernel: nbdroot runs no fsck in the initramfs."}},

		// Build-time hooks of mkinitcpio: they shape the image and do nothing at boot.
		{Name: "autodetect", Summary: "keep only the client's drivers, from its module list (--autodetect-from FILE); without one, nothing is left out: the build host is not the client",
			KernelNotes: []string{"autodetect needs nothing from the kernel: it only chooses which modules go into the image."}},
		{Name: "microcode", Summary: "CPU microcode updates the kernel loads before anything else (an uncompressed cpio with kernel/x86/microcode/*.bin in front of the image)",
			Kernel: []Requirement{
				{AnyOf: []Option{{"MICROCODE", ""}}, Optional: true, NeededFor: "early microcode loading from the initramfs (x86)"},
			}},
		{Name: "modconf", Summary: "module options and blacklists of the root's modprobe.d (options NAME …, blacklist NAME), applied by the init's module loader",
			KernelNotes: []string{"modconf needs nothing from the kernel: the options are passed to finit_module."}},
		{Name: "kms", Summary: "GPU drivers for a native-resolution console: the client's, with autodetect; without it none (the firmware framebuffer shows the prompt)",
			AutodetectDirs: []string{"kernel/drivers/gpu/drm/"},
			KernelNotes:    []string{"kms needs nothing from the kernel: without GPU drivers the console stays on the firmware framebuffer (efifb, simpledrm) or the VGA text mode."}},
		{Name: "block", Summary: "local disk and USB storage drivers (for cryptkey= on a USB stick, local swap); loaded by coldplug when the hardware is there",
			OptionalModules: []string{"sd_mod", "ahci", "nvme", "virtio_blk", "virtio_scsi", "usb_storage", "uas", "xhci_pci", "ehci_pci", "sdhci_pci", "mmc_block"},
			AutodetectDirs: []string{"kernel/drivers/ata/", "kernel/drivers/scsi/", "kernel/drivers/nvme/", "kernel/drivers/block/",
				"kernel/drivers/mmc/", "kernel/drivers/usb/storage/", "kernel/drivers/usb/host/", "kernel/drivers/virtio/"},
			KernelNotes: []string{"block needs nothing from the kernel: the root is on NBD; local disks only hold key files or swap."}},

		// mkinitcpio's systemd-based hooks, mapped to the nbdroot hooks that do their work.
		{Name: "systemd", Summary: "systemd's initramfs: here base and udev (the init is nbdroot's, not systemd)",
			MapsTo: []string{"base", "udev"}},
		{Name: "sd-vconsole", Summary: "systemd's console setup: here keymap and consolefont",
			MapsTo: []string{"keymap", "consolefont"}},
		{Name: "sd-encrypt", Summary: "systemd's LUKS unlocking: here encrypt, which also reads rd.luks.*/luks.* (systemd-cryptsetup-generator's parameters)",
			MapsTo: []string{"encrypt"}},
	}
	for i := range specs {
		for j := range specs[i].Kernel {
			specs[i].Kernel[j].Hook = specs[i].Name
		}
	}
	return specs
}

// Lookup returns the spec of the hook called name.
func Lookup(name string) (Spec, bool) {
	for _, s := range Catalog() {
		if s.Name == name {
			return s, true
		}
	}
	return Spec{}, false
}

// Names returns the names of every hook, in canonical boot order.
func Names() []string {
	var out []string
	for _, s := range Catalog() {
		out = append(out, s.Name)
	}
	return out
}

// Stages returns the init's stages in canonical boot order: the hooks that run, then
// switch_root. They are the points the boot can be stopped before (rd.break).
func Stages() []string {
	var out []string
	for _, s := range Catalog() {
		if s.Runs {
			out = append(out, s.Name)
		}
	}
	return append(out, SwitchRoot)
}
