package lvm

import (
	"fmt"
	"sort"
)

// Assemble groups physical volumes into their volume groups: for each VG the newest
// metadata any of its PVs carries (the highest seqno — an interrupted update leaves older
// copies on some PVs, which lvm2 would repair), with every PV of the metadata matched by
// UUID to the device it was read from (PVInfo.Device). PVs without metadata areas are
// matched the same way. A PV the metadata lists but no device carries keeps an empty
// Device, and a PV UUID seen on two devices is recorded in Duplicates: Table refuses the
// LVs on either, and the others still activate. The VGs are sorted by name.
func Assemble(pvs []*PV) ([]*VG, error) {
	newest := map[string]*VG{} // by normalised VG UUID
	for _, pv := range pvs {
		if pv.VG == nil {
			continue
		}
		id := normUUID(pv.VG.UUID)
		if cur := newest[id]; cur == nil || pv.VG.Seqno > cur.Seqno {
			newest[id] = pv.VG
		}
	}
	byUUID := map[string][]*PV{}
	for _, pv := range pvs {
		byUUID[normUUID(pv.UUID)] = append(byUUID[normUUID(pv.UUID)], pv)
	}
	names := map[string]string{}
	var out []*VG
	for _, src := range newest {
		if other, dup := names[src.Name]; dup {
			return nil, fmt.Errorf("lvm: two volume groups are named %s (ids %s and %s): rename one with vgrename", src.Name, other, src.UUID)
		}
		names[src.Name] = src.UUID
		vg := src.clone()
		for _, info := range vg.PVs {
			found := byUUID[normUUID(info.UUID)]
			if len(found) == 0 {
				continue
			}
			info.Device = found[0].Device
			for _, d := range found[1:] {
				info.Duplicates = append(info.Duplicates, d.Device)
			}
		}
		out = append(out, vg)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// clone copies vg deep enough that Assemble can fill in devices without changing the VG
// a PV holds.
func (vg *VG) clone() *VG {
	c := *vg
	c.PVs = make([]*PVInfo, len(vg.PVs))
	for i, p := range vg.PVs {
		cp := *p
		cp.Duplicates = nil
		c.PVs[i] = &cp
	}
	return &c
}

// Find returns the VG named name among vgs.
func Find(vgs []*VG, name string) (*VG, bool) {
	for _, vg := range vgs {
		if vg.Name == name {
			return vg, true
		}
	}
	return nil, false
}
