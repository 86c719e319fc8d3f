package lvm

import (
	"bytes"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// VG is a volume group as its metadata describes it (LVM2's text format, written by
// lib/format_text/export.c): its physical volumes and logical volumes. Sizes and
// offsets in the metadata are in 512-byte sectors; extents are ExtentSize sectors.
type VG struct {
	Name string
	// UUID is the VG's id, as the metadata writes it (6-4-4-4-4-4-6 characters with
	// dashes).
	UUID string
	// Seqno is the metadata's sequence number: every change writes the whole metadata
	// again with Seqno+1, so the highest copy is the current one.
	Seqno uint64
	// Status and Flags are the VG's status and flags lists (RESIZEABLE, READ, WRITE,
	// EXPORTED, …).
	Status, Flags []string
	// ExtentSize is the size of an extent in sectors.
	ExtentSize uint64
	// SystemID is set when the VG belongs to one host (lvmsystemid(7)); nbdroot does not
	// enforce it.
	SystemID string
	// PVs are the physical volumes, in metadata order.
	PVs []*PVInfo
	// LVs are the logical volumes, in metadata order.
	LVs []*LV
}

// PVInfo is a physical volume as the VG's metadata describes it.
type PVInfo struct {
	// Name is its key in the metadata ("pv0"), by which segments refer to it.
	Name string
	// UUID is the PV's id with dashes, as in the metadata; PV.UUID matches it.
	UUID string
	// DeviceHint is the device path LVM last saw it on: a hint only.
	DeviceHint string
	Status     []string
	// DevSize is the device size in sectors; PEStart is the first extent's sector;
	// PECount the number of extents.
	DevSize, PEStart, PECount uint64
	// Device is where Assemble found the PV ("/dev/nbd0"); empty when not found.
	Device string
	// Duplicates are further devices carrying the same PV UUID (a cloned disk, a second
	// path): LVs on this PV are not activated while it is ambiguous.
	Duplicates []string
}

// LV is a logical volume.
type LV struct {
	Name string
	// UUID is the LV's id with dashes.
	UUID   string
	Status []string
	Flags  []string
	// Segments in logical order, contiguous from extent 0.
	Segments []Segment
}

// Visible reports whether the LV is one a user names (status VISIBLE); hidden LVs are
// parts of others (raid images, thin pool data, snapshot stores).
func (lv *LV) Visible() bool { return slices.Contains(lv.Status, "VISIBLE") }

// Writable reports whether the LV's status allows writing.
func (lv *LV) Writable() bool { return slices.Contains(lv.Status, "WRITE") }

// Extents is the LV's size in extents.
func (lv *LV) Extents() uint64 {
	var n uint64
	for _, s := range lv.Segments {
		n += s.ExtentCount
	}
	return n
}

// Segment is a run of an LV's logical extents mapped one way.
type Segment struct {
	// StartExtent and ExtentCount place the segment in the LV.
	StartExtent, ExtentCount uint64
	// Type is the segment type: "striped" (linear when there is one stripe) or another
	// LVM segment type (thin, raid1, mirror, snapshot, cache, …) that is kept for the
	// error saying it cannot be activated.
	Type string
	// StripeSize is the chunk size of a striped segment of more than one stripe, in
	// sectors.
	StripeSize uint64
	// Stripes are the areas of a striped segment: each ExtentCount/len(Stripes) extents
	// of one PV.
	Stripes []Stripe
	// Origin is the LV a snapshot segment keeps the old data of, and CowStore the LV
	// holding its copy-on-write store: the one the user named when creating the
	// snapshot, a plain linear LV in the metadata.
	Origin, CowStore string
}

// Stripe is one area of a striped segment.
type Stripe struct {
	// PV is the physical volume's metadata name ("pv0").
	PV string
	// StartExtent is the first physical extent on it.
	StartExtent uint64
}

// ParseMetadata parses the text of an LVM2 metadata area (one volume group). Trailing NUL
// bytes (LVM stores the text NUL-terminated) are ignored. Names are checked as LVM
// checks them (lib/misc/lvm-string.c validate_name), so they are safe in device-mapper
// names and paths.
func ParseMetadata(text []byte) (*VG, error) {
	text = bytes.TrimRight(text, "\x00")
	items, err := parseConfig(string(text))
	if err != nil {
		return nil, err
	}
	top := &section{name: "metadata", line: 1, items: items}
	if v := top.assignment("version", kindInt, false); v != nil && v.num != 1 {
		return nil, &SyntaxError{Line: 1, Msg: fmt.Sprintf("metadata version %d (want 1)", v.num)}
	}
	if c := top.str("contents", false); c != "" && c != "Text Format Volume Group" {
		return nil, &SyntaxError{Line: 1, Msg: fmt.Sprintf("contents %q is not a volume group", truncate(c, 40))}
	}
	if top.err != nil {
		return nil, top.err
	}
	var vgs []*section
	for _, s := range top.subsections() {
		vgs = append(vgs, s)
	}
	if len(vgs) != 1 {
		return nil, &SyntaxError{Line: 1, Msg: fmt.Sprintf("%d volume group sections, want 1", len(vgs))}
	}
	s := vgs[0]
	s.name = strings.TrimPrefix(s.name, "metadata/")
	vg := &VG{
		Name:       s.name,
		UUID:       s.str("id", true),
		Seqno:      s.uint("seqno", true),
		Status:     s.strings("status"),
		Flags:      s.strings("flags"),
		ExtentSize: s.uint("extent_size", true),
		SystemID:   s.str("system_id", false),
	}
	if s.err != nil {
		return nil, s.err
	}
	if err := checkName("volume group", vg.Name); err != nil {
		return nil, err
	}
	if vg.ExtentSize == 0 {
		return nil, &SyntaxError{Line: s.line, Msg: vg.Name + ": extent_size 0"}
	}
	if err := vg.parsePVs(s); err != nil {
		return nil, err
	}
	if err := vg.parseLVs(s); err != nil {
		return nil, err
	}
	return vg, nil
}

func (vg *VG) parsePVs(s *section) error {
	pvs := s.sub("physical_volumes", true)
	if s.err != nil {
		return s.err
	}
	seen := map[string]bool{}
	for _, p := range pvs.subsections() {
		pv := &PVInfo{
			Name:       strings.TrimPrefix(p.name, pvs.name+"/"),
			UUID:       p.str("id", true),
			DeviceHint: p.str("device", false),
			Status:     p.strings("status"),
			DevSize:    p.uint("dev_size", false),
			PEStart:    p.uint("pe_start", true),
			PECount:    p.uint("pe_count", true),
		}
		if p.err != nil {
			return p.err
		}
		if id := normUUID(pv.UUID); len(id) != uuidLen || seen[id] {
			return &SyntaxError{Line: p.line, Msg: fmt.Sprintf("%s: id %q is not a PV UUID or is given twice", p.name, truncate(pv.UUID, 40))}
		}
		seen[normUUID(pv.UUID)] = true
		vg.PVs = append(vg.PVs, pv)
	}
	return pvs.err
}

func (vg *VG) parseLVs(s *section) error {
	lvs := s.sub("logical_volumes", false)
	if s.err != nil {
		return s.err
	}
	if lvs == nil {
		return nil // a VG without LVs has no such section
	}
	for _, l := range lvs.subsections() {
		lv := &LV{
			Name:   strings.TrimPrefix(l.name, lvs.name+"/"),
			UUID:   l.str("id", true),
			Status: l.strings("status"),
			Flags:  l.strings("flags"),
		}
		count := l.uint("segment_count", true)
		if l.err != nil {
			return l.err
		}
		if err := checkName("logical volume", lv.Name); err != nil {
			return err
		}
		for _, seg := range l.subsections() {
			if !strings.HasPrefix(strings.TrimPrefix(seg.name, l.name+"/"), "segment") {
				continue // not a segment: nothing LVM writes today, skipped as LVM would
			}
			sg, err := vg.parseSegment(seg)
			if err != nil {
				return err
			}
			lv.Segments = append(lv.Segments, sg)
		}
		if uint64(len(lv.Segments)) != count {
			return &SyntaxError{Line: l.line, Msg: fmt.Sprintf("%s: segment_count %d, but %d segments", l.name, count, len(lv.Segments))}
		}
		sort.SliceStable(lv.Segments, func(i, j int) bool { return lv.Segments[i].StartExtent < lv.Segments[j].StartExtent })
		var next uint64
		for _, sg := range lv.Segments {
			if sg.StartExtent != next {
				return &SyntaxError{Line: l.line, Msg: fmt.Sprintf("%s: segment at extent %d, want %d (segments must be contiguous)", l.name, sg.StartExtent, next)}
			}
			if next+sg.ExtentCount < next {
				return &SyntaxError{Line: l.line, Msg: l.name + ": extent count overflows"}
			}
			next += sg.ExtentCount
		}
		vg.LVs = append(vg.LVs, lv)
	}
	return lvs.err
}

// parseSegment reads one segmentN section. Every type has start_extent, extent_count and
// type; only striped segments are read further (the others cannot be activated here).
func (vg *VG) parseSegment(s *section) (Segment, error) {
	sg := Segment{
		StartExtent: s.uint("start_extent", true),
		ExtentCount: s.uint("extent_count", true),
		Type:        s.str("type", true),
	}
	if s.err != nil {
		return sg, s.err
	}
	if sg.ExtentCount == 0 {
		return sg, &SyntaxError{Line: s.line, Msg: s.name + ": extent_count 0"}
	}
	switch sg.Type {
	case "striped", "linear":
		n := s.uint("stripe_count", true)
		sg.StripeSize = s.uint("stripe_size", false)
		v := s.assignment("stripes", kindList, true)
		if s.err != nil {
			return sg, s.err
		}
		if n == 0 || uint64(len(v.list)) != 2*n {
			return sg, &SyntaxError{Line: s.line, Msg: fmt.Sprintf("%s: stripe_count %d, but %d stripes values", s.name, n, len(v.list))}
		}
		for i := 0; i < len(v.list); i += 2 {
			name, start := v.list[i], v.list[i+1]
			if name.kind != kindString || start.kind != kindInt || start.num < 0 {
				return sg, &SyntaxError{Line: s.line, Msg: s.name + `: stripes must be "pvN", extent pairs`}
			}
			sg.Stripes = append(sg.Stripes, Stripe{PV: name.str, StartExtent: uint64(start.num)})
		}
		if n > 1 && (sg.StripeSize == 0 || sg.StripeSize&(sg.StripeSize-1) != 0) {
			return sg, &SyntaxError{Line: s.line, Msg: fmt.Sprintf("%s: stripe_size %d is not a power of two", s.name, sg.StripeSize)}
		}
		if sg.ExtentCount%n != 0 {
			return sg, &SyntaxError{Line: s.line, Msg: fmt.Sprintf("%s: %d extents do not divide into %d stripes", s.name, sg.ExtentCount, n)}
		}
	case "snapshot":
		sg.Origin = s.str("origin", false)
		sg.CowStore = s.str("cow_store", false)
	}
	return sg, s.err
}

// uuidLen is the length of an LVM UUID without its dashes (lib/uuid/uuid.h ID_LEN).
const uuidLen = 32

// normUUID returns an LVM UUID without dashes, the form of the PV label and of
// device-mapper UUIDs.
func normUUID(s string) string { return strings.ReplaceAll(s, "-", "") }

// formatUUID adds the dashes of LVM's printed form (6-4-4-4-4-4-6) to a 32-character id.
func formatUUID(id string) string {
	if len(id) != uuidLen {
		return id
	}
	var b strings.Builder
	for i, n := range []int{6, 4, 4, 4, 4, 4, 6} {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(id[:n])
		id = id[n:]
	}
	return b.String()
}

// NameError is a VG or LV name LVM would not have written.
type NameError struct {
	What, Name string
}

func (e *NameError) Error() string {
	return fmt.Sprintf("%s name %q is not a valid LVM name (letters, digits and +_.- only, not starting with '-', at most 127 bytes)", e.What, truncate(e.Name, 40))
}

// checkName applies LVM's validate_name: 1 to 127 bytes of [a-zA-Z0-9+_.-], not starting
// with '-', not "." or "..".
func checkName(what, name string) error {
	if name == "" || len(name) > 127 || name[0] == '-' || name == "." || name == ".." {
		return &NameError{What: what, Name: name}
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '_' || c == '.' || c == '-') {
			return &NameError{What: what, Name: name}
		}
	}
	return nil
}

// PV returns the physical volume the metadata calls name ("pv0").
func (vg *VG) PV(name string) (*PVInfo, bool) {
	for _, p := range vg.PVs {
		if p.Name == name {
			return p, true
		}
	}
	return nil, false
}

// LV returns the logical volume name.
func (vg *VG) LV(name string) (*LV, bool) {
	for _, l := range vg.LVs {
		if l.Name == name {
			return l, true
		}
	}
	return nil, false
}
