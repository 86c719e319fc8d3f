// Package lvm activates LVM2 logical volumes in pure Go, for a root filesystem on an LV
// (on the NBD device, or inside a LUKS container once it is unlocked): it reads physical
// volume labels and the text metadata of their metadata areas, assembles volume groups
// across PVs, and turns linear and striped LVs into device-mapper tables that package dm
// loads. No lvm2 binary, no libdevmapper, no udev.
//
// The on-disk format is LVM2's (lib/label, lib/format_text in the lvm2 sources): a label
// in one of the first four sectors, a PV header listing data and metadata areas, and in
// each metadata area a header pointing into a circular buffer of text metadata. The text
// grammar is lvm.conf's (libdm-config.c); ParseMetadata parses it into a VG.
//
// A boot hook uses it like this:
//
//	var pvs []*lvm.PV
//	for _, dev := range candidates {            // /dev/nbd0, /dev/mapper/nbdcrypt, …
//		pv, err := lvm.ReadPVFile(dev)          // errors.Is(err, lvm.ErrNoLabel): not a PV
//		…
//		pvs = append(pvs, pv)
//	}
//	vgs, err := lvm.Assemble(pvs)
//	vgName, lvName, ok := lvm.ParsePath(root)  // /dev/VG/LV or /dev/mapper/VG-LV
//	vg, ok := lvm.Find(vgs, vgName)
//	c, err := dm.Open()
//	dev, err := vg.Activate(c, lvName, lvm.ActivateOptions{})  // dev.Path: /dev/mapper/VG-LV
//
// What the package owns, and what it must never do:
//   - It never writes to a physical volume: metadata repair, locking, backups and
//     archives are lvm2's, in the booted system.
//   - It activates linear and striped LVs only. Every other segment type (thin, thin-pool,
//     raid*, mirror, snapshot, cache, writecache, vdo, integrity) and the origin of a
//     snapshot are refused with an UnsupportedError naming the type: mapping a snapshot's
//     origin linearly would write around its copy-on-write; the others need lvm2's own
//     activation (metadata LVs, resync, repair).
//   - An LV whose PVs are not all found, or one of whose PVs is found on two devices (a
//     cloned disk), is refused with a MissingPVError; the other LVs of the VG still
//     activate. Two VGs of one name are refused.
//   - Everything read from a device is bounded before it is allocated (a metadata text is
//     at most maxMetadataText), checked against its checksum, and every sector number is
//     computed with overflow checks: the metadata comes from the NBD server.
//
// Names: DMName builds lvm2's device-mapper name ("my-vg"/"root" → "my--vg-root"),
// SplitDMName and ParsePath go back; DMUUID is lvm2's "LVM-<vg id><lv id>", so that the
// booted system's lvm2 and udev see the LV as active and theirs.
package lvm
