package lvm

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/dm"
)

// unsupportedTypes are the LVM segment types nbdroot does not activate, with what they
// are, for the error message. Their device-mapper tables need more than a table line
// (thin pools and caches keep their own metadata LVs, raid and mirror repair and resync,
// snapshots copy on write), which lvm2 itself must run.
var unsupportedTypes = map[string]string{
	"thin":       "thin volume",
	"thin-pool":  "thin pool",
	"raid0":      "RAID0 (raid0 segment type)",
	"raid0_meta": "RAID0 with metadata",
	"raid1":      "RAID1",
	"raid4":      "RAID4",
	"raid5":      "RAID5",
	"raid5_la":   "RAID5",
	"raid5_ls":   "RAID5",
	"raid5_ra":   "RAID5",
	"raid5_rs":   "RAID5",
	"raid5_n":    "RAID5",
	"raid6":      "RAID6",
	"raid6_zr":   "RAID6",
	"raid6_nr":   "RAID6",
	"raid6_nc":   "RAID6",
	"raid10":     "RAID10",
	"mirror":     "mirror (or pvmove in progress)",
	"snapshot":   "snapshot",
	"cache":      "cached volume",
	"cache-pool": "cache pool",
	"writecache": "writecache",
	"vdo":        "VDO volume",
	"vdo-pool":   "VDO pool",
	"integrity":  "integrity layer",
	"zero":       "zero volume",
	"error":      "error volume",
	"free":       "free space",
	"unknown":    "segment of a missing PV (unknown)",
}

// UnsupportedError is an LV nbdroot cannot activate: a segment type other than linear
// and striped, a snapshot's origin, a hidden LV.
type UnsupportedError struct {
	// VG and LV name the logical volume.
	VG, LV string
	// Type is the segment type ("thin", "raid1", …) or "snapshot origin", "hidden".
	Type string
	// What says it in words.
	What string
}

func (e *UnsupportedError) Error() string {
	return fmt.Sprintf("lvm: %s/%s is a %s (%s): nbdroot activates linear and striped logical volumes only", e.VG, e.LV, e.What, e.Type)
}

// MissingPVError is an LV one of whose physical volumes was not found (or found twice).
type MissingPVError struct {
	VG, LV string
	// PV is the metadata name ("pv1"), UUID its id, Hint the device LVM last saw it on.
	PV, UUID, Hint string
	// Duplicates lists the devices that all carry it, when it was found more than once.
	Duplicates []string
}

func (e *MissingPVError) Error() string {
	if len(e.Duplicates) > 0 {
		return fmt.Sprintf("lvm: %s/%s: physical volume %s (%s) is on several devices (%s): refusing to guess", e.VG, e.LV, e.PV, e.UUID, strings.Join(e.Duplicates, ", "))
	}
	return fmt.Sprintf("lvm: %s/%s needs physical volume %s (%s, last seen on %s), which was not found", e.VG, e.LV, e.PV, e.UUID, e.Hint)
}

// ErrNoLV means the volume group has no logical volume of that name.
var ErrNoLV = errors.New("no such logical volume")

// Table returns the device-mapper table of the logical volume lv: one target per segment,
// "linear DEV OFFSET" or "striped N CHUNK DEV OFFSET …" (the lines lvm2's
// lib/activate/dev_manager.c loads), with DEV the device each PV was found on (Assemble
// sets it) and OFFSET in sectors: pe_start plus the first extent times the extent size.
// Every number is checked against the PV's extents and for overflow.
func (vg *VG) Table(lv string) ([]dm.Target, error) {
	l, ok := vg.LV(lv)
	if !ok {
		return nil, fmt.Errorf("lvm: %s/%s: %w", vg.Name, lv, ErrNoLV)
	}
	for _, o := range vg.LVs {
		for _, s := range o.Segments {
			if s.Type != "snapshot" {
				continue
			}
			switch lv {
			case s.Origin:
				// Mapping the origin linearly would write around the snapshot's
				// copy-on-write and corrupt the snapshot.
				return nil, &UnsupportedError{VG: vg.Name, LV: lv, Type: "snapshot origin", What: "snapshot's origin (" + o.Name + ")"}
			case s.CowStore:
				// The LV the user calls the snapshot is, in the metadata, a linear LV
				// holding the exception store: mapped as such it would show that
				// store, not the snapshot's data.
				return nil, &UnsupportedError{VG: vg.Name, LV: lv, Type: "snapshot", What: "snapshot of " + s.Origin}
			}
		}
	}
	if !l.Visible() {
		return nil, &UnsupportedError{VG: vg.Name, LV: lv, Type: "hidden", What: "hidden sub-volume of another LV"}
	}
	var out []dm.Target
	for i, s := range l.Segments {
		if s.Type != "striped" && s.Type != "linear" {
			what := unsupportedTypes[s.Type]
			if what == "" {
				what = "volume of an unknown segment type"
			}
			return nil, &UnsupportedError{VG: vg.Name, LV: lv, Type: s.Type, What: what}
		}
		t, err := vg.segmentTarget(l, s)
		if err != nil {
			return nil, fmt.Errorf("lvm: %s/%s segment %d: %w", vg.Name, lv, i+1, err)
		}
		out = append(out, t)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("lvm: %s/%s has no segments", vg.Name, lv)
	}
	return out, nil
}

// mul returns a*b, or an error when it overflows.
func mul(a, b uint64) (uint64, error) {
	hi, lo := bits.Mul64(a, b)
	if hi != 0 {
		return 0, errors.New("sector arithmetic overflows")
	}
	return lo, nil
}

// add returns a+b, or an error when it overflows.
func add(a, b uint64) (uint64, error) {
	s, carry := bits.Add64(a, b, 0)
	if carry != 0 {
		return 0, errors.New("sector arithmetic overflows")
	}
	return s, nil
}

func (vg *VG) segmentTarget(l *LV, s Segment) (dm.Target, error) {
	start, err := mul(s.StartExtent, vg.ExtentSize)
	if err != nil {
		return dm.Target{}, err
	}
	length, err := mul(s.ExtentCount, vg.ExtentSize)
	if err != nil {
		return dm.Target{}, err
	}
	if _, err := add(start, length); err != nil {
		return dm.Target{}, err
	}
	n := uint64(len(s.Stripes))
	if n == 0 {
		return dm.Target{}, errors.New("no stripes")
	}
	area := s.ExtentCount / n // parseSegment checked that n divides it
	var params []byte
	if n > 1 {
		params = strconv.AppendUint(params, n, 10)
		params = append(params, ' ')
		params = strconv.AppendUint(params, s.StripeSize, 10)
	}
	for _, st := range s.Stripes {
		pv, ok := vg.PV(st.PV)
		if !ok {
			return dm.Target{}, fmt.Errorf("stripe on %q, which is not a physical volume of the VG (stacked LVs are not supported)", st.PV)
		}
		if pv.Device == "" {
			return dm.Target{}, &MissingPVError{VG: vg.Name, LV: l.Name, PV: pv.Name, UUID: pv.UUID, Hint: pv.DeviceHint}
		}
		if len(pv.Duplicates) > 0 {
			return dm.Target{}, &MissingPVError{VG: vg.Name, LV: l.Name, PV: pv.Name, UUID: pv.UUID, Hint: pv.DeviceHint,
				Duplicates: append([]string{pv.Device}, pv.Duplicates...)}
		}
		if end, err := add(st.StartExtent, area); err != nil || end > pv.PECount {
			return dm.Target{}, fmt.Errorf("%d extents from extent %d are past the %d extents of %s", area, st.StartExtent, pv.PECount, pv.Name)
		}
		first, err := mul(st.StartExtent, vg.ExtentSize)
		if err != nil {
			return dm.Target{}, err
		}
		off, err := add(pv.PEStart, first)
		if err != nil {
			return dm.Target{}, err
		}
		if strings.ContainsAny(pv.Device, " \t\n\x00") {
			return dm.Target{}, fmt.Errorf("device path %q has white space", pv.Device)
		}
		if len(params) > 0 {
			params = append(params, ' ')
		}
		params = append(params, pv.Device...)
		params = append(params, ' ')
		params = strconv.AppendUint(params, off, 10)
	}
	typ := "linear"
	if n > 1 {
		typ = "striped"
	}
	return dm.Target{Start: start, Length: length, Type: typ, Params: params}, nil
}

// DMName is the device-mapper name lvm2 gives LV lv of VG vg: "VG-LV" with every '-' in
// either name doubled (lib/misc/lvm-string.c build_dm_name), so "my-vg"/"root" is
// "my--vg-root" and /dev/mapper/my--vg-root.
func DMName(vg, lv string) string {
	return strings.ReplaceAll(vg, "-", "--") + "-" + strings.ReplaceAll(lv, "-", "--")
}

// SplitDMName splits a device-mapper name made by DMName back into VG and LV: the split
// is at the one '-' that is not doubled. ok is false for a name that has no such '-'
// (a LUKS mapping's name) or more than one.
func SplitDMName(name string) (vg, lv string, ok bool) {
	cut := -1
	for i := 0; i < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		if i+1 < len(name) && name[i+1] == '-' {
			i++ // an escaped dash
			continue
		}
		if cut >= 0 {
			return "", "", false
		}
		cut = i
	}
	if cut <= 0 || cut == len(name)-1 {
		return "", "", false
	}
	vg = strings.ReplaceAll(name[:cut], "--", "-")
	lv = strings.ReplaceAll(name[cut+1:], "--", "-")
	if checkName("volume group", vg) != nil || checkName("logical volume", lv) != nil {
		return "", "", false
	}
	return vg, lv, true
}

// ParsePath recognises the paths a root= names an LV by: /dev/VG/LV, /dev/mapper/VG-LV,
// and the bare VG/LV of dracut's rd.lvm.lv=. ok is false for anything else, including
// /dev/mapper names without an LVM split (LUKS mappings) — whether the VG exists is for
// the caller to find out.
func ParsePath(p string) (vg, lv string, ok bool) {
	if name, found := strings.CutPrefix(p, "/dev/mapper/"); found {
		if strings.Contains(name, "/") {
			return "", "", false
		}
		return SplitDMName(name)
	}
	rest := strings.TrimPrefix(p, "/dev/")
	if rest == p && strings.HasPrefix(p, "/") {
		return "", "", false
	}
	vg, lv, found := strings.Cut(rest, "/")
	if !found || strings.Contains(lv, "/") || vg == "mapper" || vg == "disk" {
		return "", "", false
	}
	if checkName("volume group", vg) != nil || checkName("logical volume", lv) != nil {
		return "", "", false
	}
	return vg, lv, true
}

// DMUUID is the device-mapper UUID lvm2 gives an LV: "LVM-" then the VG's and the LV's
// ids without dashes (lib/activate/dev_manager.c build_dm_uuid), by which udev rules and
// lvm2 in the booted system recognise the active LV as theirs.
func DMUUID(vg *VG, lv *LV) string {
	return "LVM-" + normUUID(vg.UUID) + normUUID(lv.UUID)
}

// ActivateOptions tune Activate.
type ActivateOptions struct {
	// ReadOnly maps the LV read-only (it is anyway when its status lacks WRITE).
	ReadOnly bool
}

// Activate loads the LV's table through c as device DMName(VG, LV) with lvm2's UUID, and
// returns the device (/dev/mapper/VG-LV). The LV must be linear or striped, on PVs
// Assemble found.
func (vg *VG) Activate(c *dm.Client, lv string, opts ActivateOptions) (dm.Device, error) {
	table, err := vg.Table(lv)
	if err != nil {
		return dm.Device{}, err
	}
	l, _ := vg.LV(lv)
	var flags dm.Flags
	if opts.ReadOnly || !l.Writable() || !slices.Contains(vg.Status, "WRITE") {
		flags |= dm.ReadOnly
	}
	dev, err := c.Create(DMName(vg.Name, lv), DMUUID(vg, l), flags, table)
	if err != nil {
		return dm.Device{}, fmt.Errorf("lvm: activate %s/%s: %w", vg.Name, lv, err)
	}
	return dev, nil
}
