// Package catalog declares nbdroot's boot hooks: their names, what each does and the kernel
// modules it needs. The image builder reads it to pick modules; the init reads it to accept
// the hook names of an image. It depends on nothing, so the host tool does not link the init.
package catalog

// Spec declares what one boot stage needs inside the image: the builder reads it to pick
// modules and files; the init reads the image's list of specs to run the stages in order.
type Spec struct {
	// Name is the mkinitcpio-style hook name (base, udev, net, nbd, encrypt, filesystems…).
	Name string
	// Summary says in a few words what the hook does at boot.
	Summary string
	// Modules are module names or aliases the hook needs; the builder resolves each with its
	// depends= and softdep= and fails when one is missing and not built in.
	Modules []string
	// OptionalModules are included when the kernel has them and skipped silently otherwise
	// (hardware drivers, accelerated cipher variants).
	OptionalModules []string
	// NICs marks the hook that needs network drivers: the builder adds them according to its
	// NIC policy (host-only or universal).
	NICs bool
	// Runs is false for hooks accepted for mkinitcpio compatibility that do nothing at boot in
	// nbdroot (their work is part of another hook, or not needed on a thin client).
	Runs bool
}

// Default is the hook list of the default image: the seed's encrypted HOOKS line minus the
// input and keymap hooks, which a serial-console thin client does not need.
var Default = []string{"base", "udev", "net", "nbd", "encrypt", "filesystems"}

// Catalog returns the specs of every hook nbdroot knows, in canonical boot order.
func Catalog() []Spec {
	return []Spec{
		{Name: "base", Summary: "mount /proc /sys /dev /run, console, logging", Runs: true},
		{Name: "udev", Summary: "load the modules the image carries, coldplug devices by modalias", Runs: true,
			// virtio_pci exposes the virtio devices (NIC, disk) of virtual machines.
			OptionalModules: []string{"virtio_pci"}},
		{Name: "net", Summary: "bring up the network: DHCPv4 or static ip=", Runs: true, NICs: true,
			// af_packet is needed by DHCP when CONFIG_PACKET is a module.
			OptionalModules: []string{"af_packet"}},
		{Name: "nbd", Summary: "negotiate with the NBD server and attach /dev/nbdN", Runs: true,
			Modules: []string{"nbd"}},
		{Name: "usbinput", Summary: "USB keyboards for the passphrase prompt",
			OptionalModules: []string{"usbhid", "hid_generic", "xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd"}},
		{Name: "keyboard", Summary: "keyboards for the passphrase prompt",
			OptionalModules: []string{"usbhid", "hid_generic", "xhci_pci", "ehci_pci", "atkbd", "i8042"}},
		{Name: "keymap", Summary: "accepted for mkinitcpio compatibility (console keymaps are not loaded)"},
		{Name: "encrypt", Summary: "unlock LUKS1/LUKS2 (cryptdevice=) with dm-crypt", Runs: true,
			Modules: []string{"dm_mod", "dm_crypt", "xts", "ecb"},
			// sha512/essiv are needed by some LUKS1 images; aesni accelerates AES on x86.
			OptionalModules: []string{"aesni_intel", "essiv", "sha512_generic", "cbc", "sha256_generic"}},
		{Name: "lvm2", Summary: "accepted for mkinitcpio compatibility (LVM is not activated)"},
		{Name: "filesystems", Summary: "mount the root filesystem", Runs: true,
			Modules: []string{"ext4"}},
	}
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
