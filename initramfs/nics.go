package initramfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// The named NIC policies: which network drivers an image carries for the hooks that need
// the network (catalog.Spec.NICs).
const (
	// NICsCommon is a curated list of the Ethernet drivers of client-class machines
	// (CommonNICs): thin clients, desktops, laptops and virtual machines.
	NICsCommon = "common"
	// NICsHostOnly is the drivers of this machine's Ethernet NICs: right when the image is
	// built on the client it boots, wrong on a PXE server building for other machines.
	NICsHostOnly = "host-only"
	// NICsUniversal is every Ethernet driver of the kernel (drivers/net/ethernet) plus
	// virtio_net: boots anything, at several times the image size.
	NICsUniversal = "universal"
)

// DefaultNICs is the NIC policy of an image built without --nics. It is "common" rather
// than host-only because `make initramfs` typically runs on the PXE server, whose own NIC
// says nothing about the clients; and rather than universal because every Ethernet driver
// of a distribution kernel (34 MB of modules, 8 MiB compressed, for Debian's 6.1) would
// triple the image.
const DefaultNICs = NICsCommon

// CommonNICs are the drivers of the common policy: virtual machines (virtio_pci exposes
// the virtio devices virtio_net binds to; e1000 is QEMU's and many hypervisors' default
// NIC) and the Ethernet chips found in most client machines: Intel's desktop and laptop
// PHYs (e1000e: I217/I218/I219 and 82574/82579; igc: I225/I226) and Realtek's RTL8111/8168
// family (r8169), which most thin clients (HP t-series, Dell Wyse, Fujitsu Futro, IGEL)
// carry. The list is short on purpose: each driver costs image size (e1000e 140 KiB, r8169
// with its PHY library 120 KiB compressed) and the default image must stay within 5 MiB;
// docs/initramfs.md lists the cost of the others (igb, tg3, …) for --nics common,igb.
var CommonNICs = []string{"virtio_pci", "virtio_net", "e1000", "e1000e", "igc", "r8169"}

// nicRequests turns a NIC policy into module requests. policy is a named policy, or a
// comma list of driver names and named policies (common,ixgbe). Drivers of named
// policies are optional (a custom kernel without one still builds); drivers named
// explicitly are required. sysClassNet is /sys/class/net, for host-only.
func nicRequests(policy string, d *depmod.Dir, sysClassNet string) ([]depmod.Request, []string, error) {
	if policy == "" {
		policy = DefaultNICs
	}
	var reqs []depmod.Request
	var notes []string
	for _, item := range strings.Split(policy, ",") {
		item = strings.TrimSpace(item)
		by := "NIC policy " + item
		switch item {
		case "":
			continue
		case NICsCommon:
			for _, n := range CommonNICs {
				reqs = append(reqs, depmod.Request{Name: n, Optional: true, By: by})
			}
		case NICsUniversal:
			for _, n := range universalNICs(d) {
				reqs = append(reqs, depmod.Request{Name: n, Optional: true, By: by})
			}
		case NICsHostOnly:
			mods, err := HostNICDrivers(sysClassNet)
			if err != nil {
				return nil, nil, err
			}
			if len(mods) == 0 {
				notes = append(notes, "NIC policy host-only: this machine has no Ethernet NIC with a modular driver")
			}
			for _, n := range mods {
				reqs = append(reqs, depmod.Request{Name: n, By: by})
			}
		default:
			reqs = append(reqs, depmod.Request{Name: item, By: "--nics"})
		}
	}
	return reqs, notes, nil
}

// universalNICs lists every module under kernel/drivers/net/ethernet/, plus virtio_net and
// virtio_pci (virtual machines' NIC, which lives in drivers/net/).
func universalNICs(d *depmod.Dir) []string {
	out := []string{"virtio_pci", "virtio_net"}
	for _, n := range d.Names() {
		if f, _ := d.File(n); strings.HasPrefix(f, "kernel/drivers/net/ethernet/") {
			out = append(out, n)
		}
	}
	return out
}

// HostNICDrivers returns the modules driving this machine's Ethernet NICs: for every
// interface under sysClassNet (normally /sys/class/net) of type Ethernet (type 1) that is
// backed by a device and is not wireless, the module of its driver
// (device/driver/module → /sys/module/NAME). Built-in drivers have no module link and are
// skipped: the kernel has them anyway.
func HostNICDrivers(sysClassNet string) ([]string, error) {
	ents, err := os.ReadDir(sysClassNet)
	if err != nil {
		return nil, fmt.Errorf("NIC policy host-only: %w", err)
	}
	seen := map[string]bool{}
	for _, e := range ents {
		dir := filepath.Join(sysClassNet, e.Name())
		if t, err := os.ReadFile(filepath.Join(dir, "type")); err != nil || strings.TrimSpace(string(t)) != "1" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "wireless")); err == nil {
			continue
		}
		link, err := os.Readlink(filepath.Join(dir, "device", "driver", "module"))
		if err != nil {
			continue
		}
		seen[depmod.Normalize(filepath.Base(link))] = true
	}
	out := make([]string, 0, len(seen))
	for m := range seen {
		out = append(out, m)
	}
	sort.Strings(out)
	return out, nil
}
