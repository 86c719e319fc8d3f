package hooks

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/lvm"
)

// LVM2 activates LVM2 logical volumes — on the NBD device, its partitions, or inside the
// unlocked LUKS volume — in Go: it reads the physical volumes' labels and metadata
// (package lvm), assembles the volume groups and loads the linear and striped tables of
// the volumes the boot needs (the root's, resume='s, rd.lvm.lv='s) through device-mapper,
// with lvm2's names and UUIDs and the /dev/VG/LV links udev would make. Other volumes of
// the root's volume group (or of rd.lvm.vg=, or of every volume group found when nothing
// names one) are activated as well when they can be — a swap volume, a /home — and
// skipped with a note when not (thin, raid…). Nothing is ever written to a PV.
type LVM2 struct {
	// Wait bounds how long the needed volume groups may take to appear (partitions are
	// scanned when the NBD device is first opened); 0 is rootdelay=, else 10 s.
	Wait time.Duration
}

// Name implements Hook.
func (LVM2) Name() string { return "lvm2" }

// lvmCandidates are the block devices that may be physical volumes: the NBD device, its
// partitions, and the unlocked LUKS mapping.
func lvmCandidates(s *State) []string {
	var out []string
	add := func(d string) {
		if d != "" && !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	nbdDev := s.Plan.NBD.Device
	if s.NBD != nil {
		nbdDev = s.NBD.Device
	}
	add(nbdDev)
	if parts, err := s.Sys.Blocks.Partitions(nbdDev); err == nil {
		for _, p := range parts {
			add(p)
		}
	}
	add(s.CryptDevice)
	return out
}

// readPVs reads every candidate that is a physical volume. Devices that are not (no LVM
// label) are skipped; one that cannot be read or holds damaged metadata is reported in
// problems and skipped: the volume groups the boot needs may be elsewhere.
func readPVs(s *State, devs []string) (pvs []*lvm.PV, problems []string) {
	for _, d := range devs {
		f, err := s.Sys.Blocks.OpenDevice(d)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", d, err))
			continue
		}
		pv, err := lvm.ReadPV(f)
		f.Close()
		switch {
		case errors.Is(err, lvm.ErrNoLabel):
			continue
		case err != nil:
			problems = append(problems, fmt.Sprintf("%s: %v", d, err))
			continue
		}
		pv.Device = d
		pvs = append(pvs, pv)
	}
	return pvs, problems
}

// Run implements Hook.
func (h LVM2) Run(ctx context.Context, s *State) error {
	plan := s.Plan.LVM
	param := s.Plan.Sources["lvm"]
	if plan != nil && plan.Off {
		s.lvmSummary = "rd.lvm=0: no volume group activated"
		return nil
	}
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "lvm2"); err != nil {
			return fail("lvm2", param, "load device-mapper (dm_mod)", err)
		}
	}
	var needLVs, allOf []string
	if plan != nil {
		needLVs, allOf = plan.LVs, plan.VGs
	}
	wait := h.Wait
	if wait <= 0 {
		wait = s.Plan.RootDelay
	}
	if wait <= 0 {
		wait = 10 * time.Second
	}
	// The volume groups the boot needs may take a moment: the kernel scans the NBD
	// device's partitions when it is first opened, and reading it here is that first open.
	deadline := time.Now().Add(wait)
	var vgs []*lvm.VG
	var devs, problems []string
	for {
		devs = lvmCandidates(s)
		var pvs []*lvm.PV
		pvs, problems = readPVs(s, devs)
		var err error
		if vgs, err = lvm.Assemble(pvs); err != nil {
			return fail("lvm2", param, "assemble the volume groups on "+strings.Join(devs, ", "), err)
		}
		missing := missingLVs(vgs, needLVs)
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fail("lvm2", param, "find the volume groups of "+strings.Join(missing, ", "),
				fmt.Errorf("not on %s within %s (volume groups found: %s)%s", strings.Join(devs, ", "), wait, vgNames(vgs), problemText(problems)))
		}
		select {
		case <-ctx.Done():
			return fail("lvm2", param, "find the volume groups", ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, p := range problems {
		s.Log.Printf("lvm2: skipped %s", p)
	}
	ro := s.NBD != nil && s.NBD.ReadOnly()
	activate := func(vg *lvm.VG, lv string) (string, error) {
		for _, a := range s.LVs {
			if a == "/dev/mapper/"+lvm.DMName(vg.Name, lv) {
				return a, nil
			}
		}
		path, err := s.Sys.Mapper.ActivateLV(vg, lv, ro)
		if err == nil {
			s.LVs = append(s.LVs, path)
		}
		return path, err
	}
	for _, name := range needLVs {
		vgName, lvName, _ := strings.Cut(name, "/")
		vg, _ := lvm.Find(vgs, vgName)
		if _, ok := vg.LV(lvName); !ok {
			return fail("lvm2", param, "activate "+name, fmt.Errorf("volume group %s has no logical volume %s (it has: %s)", vgName, lvName, lvNames(vg)))
		}
		if _, err := activate(vg, lvName); err != nil {
			return fail("lvm2", param, "activate "+name, err)
		}
	}
	// The rest: every volume of the named groups (all groups when nothing names any), as
	// far as nbdroot can map them.
	for _, vg := range vgs {
		if plan != nil && !slices.Contains(allOf, vg.Name) {
			continue
		}
		for _, lv := range vg.LVs {
			if !lv.Visible() {
				continue // a raid image, a thin pool's metadata: lvm2's internals
			}
			if _, err := activate(vg, lv.Name); err != nil {
				s.lvmSkipped = append(s.lvmSkipped, vg.Name+"/"+lv.Name)
				s.Log.Printf("lvm2: %s/%s not activated: %v", vg.Name, lv.Name, err)
			}
		}
	}
	if len(s.LVs) == 0 {
		s.lvmSummary = "no logical volume on " + strings.Join(devs, ", ")
	}
	return nil
}

// missingLVs are the needed volumes (VG/LV) whose volume group is not assembled, or misses
// physical volumes the volume needs: they may still be coming.
func missingLVs(vgs []*lvm.VG, need []string) []string {
	var out []string
	for _, name := range need {
		vgName, lvName, _ := strings.Cut(name, "/")
		vg, ok := lvm.Find(vgs, vgName)
		if !ok {
			out = append(out, name)
			continue
		}
		var mp *lvm.MissingPVError
		if _, err := vg.Table(lvName); errors.As(err, &mp) && len(mp.Duplicates) == 0 {
			out = append(out, name)
		}
	}
	return out
}

func vgNames(vgs []*lvm.VG) string {
	if len(vgs) == 0 {
		return "none"
	}
	var n []string
	for _, vg := range vgs {
		n = append(n, vg.Name)
	}
	return strings.Join(n, ", ")
}

func lvNames(vg *lvm.VG) string {
	var n []string
	for _, lv := range vg.LVs {
		if lv.Visible() {
			n = append(n, lv.Name)
		}
	}
	if len(n) == 0 {
		return "none"
	}
	return strings.Join(n, ", ")
}

func problemText(p []string) string {
	if len(p) == 0 {
		return ""
	}
	return "; unreadable: " + strings.Join(p, "; ")
}

// Summary implements Summarizer.
func (LVM2) Summary(s *State) string {
	if s.lvmSummary != "" {
		return s.lvmSummary
	}
	out := strings.Join(s.LVs, " ") + " active"
	if len(s.lvmSkipped) > 0 {
		out += "; not activated: " + strings.Join(s.lvmSkipped, " ")
	}
	return out
}
