package bootparam

import (
	"strings"

	"github.com/nbdroot/nbdroot/lvm"
)

// LVM is what the lvm2 hook activates: LVM2 logical volumes on the NBD device or inside the
// unlocked LUKS volume (dracut's rd.lvm.* and a root= naming a logical volume).
type LVM struct {
	// Off is rd.lvm=0: no volume group is activated.
	Off bool `json:"off,omitempty"`
	// LVs are the volumes the boot needs, as VG/LV: the root's, resume='s, rd.lvm.lv='s. One
	// that cannot be activated fails the hook.
	LVs []string `json:"lvs,omitempty"`
	// VGs are volume groups whose every logical volume is activated (rd.lvm.vg=, or the
	// root's volume group when no rd.lvm.* narrows it, as lvm2's `vgchange -ay` does in
	// mkinitcpio's hook). A volume of a type nbdroot cannot map (thin, raid…) is skipped with
	// a note unless LVs needs it.
	VGs []string `json:"vgs,omitempty"`
}

// formLVM is the form of dracut's LVM parameters.
const formLVM = "rd.lvm.lv=VG/LV | rd.lvm.vg=VG | rd.lvm=0"

// lvPath parses VG/LV, /dev/VG/LV or /dev/mapper/VG-LV into "VG/LV".
func lvPath(s string) (string, bool) {
	vg, lv, ok := lvm.ParsePath(s)
	if !ok {
		return "", false
	}
	return vg + "/" + lv, true
}

// buildLVM reads rd.lvm=, rd.lvm.vg= and rd.lvm.lv= (each repeatable, dracut.cmdline(7)),
// resume= when it names a logical volume, and the root's logical volume.
func (b *builder) buildLVM() error {
	l := &LVM{}
	var sources []string
	if p, ok := b.get("rd.lvm"); ok {
		on, err := parseBool(p)
		if err != nil {
			return err
		}
		if !on {
			l.Off = true
			sources = append(sources, p.String())
		}
	}
	rootLV := ""
	if r := b.root; r != nil && r.vg != "" && (r.kind == rootLVM || r.kind == rootMapper && !b.cryptNames(r.mapperName)) {
		rootLV = r.vg + "/" + r.lv
	}
	if l.Off {
		if rootLV != "" {
			return perr("rd.lvm", "0", "turns LVM off, but root="+b.root.device+" is a logical volume", "root=… not on LVM, or no rd.lvm=0")
		}
		b.plan.LVM = l
		b.src("lvm", strings.Join(sources, " "))
		return nil
	}
	add := func(list *[]string, v string) {
		for _, have := range *list {
			if have == v {
				return
			}
		}
		*list = append(*list, v)
	}
	if rootLV != "" {
		add(&l.LVs, rootLV)
		sources = append(sources, b.last["root"].String())
	}
	if p, ok := b.get("resume"); ok {
		if lv, ok := lvPath(p.Value); ok && strings.HasPrefix(p.Value, "/dev/") {
			add(&l.LVs, lv)
			sources = append(sources, p.String())
		}
	}
	for _, p := range b.lists["rd.lvm.lv"] {
		lv, ok := lvPath(p.Value)
		if !ok {
			return perr(p.Name, p.Value, "not a logical volume (VG/LV)", formLVM)
		}
		add(&l.LVs, lv)
		sources = append(sources, p.String())
	}
	for _, p := range b.lists["rd.lvm.vg"] {
		if _, ok := lvPath(p.Value + "/x"); !ok || strings.Contains(p.Value, "/") {
			return perr(p.Name, p.Value, "not a volume group name", formLVM)
		}
		add(&l.VGs, p.Value)
		sources = append(sources, p.String())
	}
	if rootLV != "" && len(b.lists["rd.lvm.lv"]) == 0 && len(b.lists["rd.lvm.vg"]) == 0 {
		vg, _, _ := strings.Cut(rootLV, "/")
		add(&l.VGs, vg)
	}
	if len(l.LVs) == 0 && len(l.VGs) == 0 {
		return nil
	}
	b.plan.LVM = l
	b.src("lvm", strings.Join(sources, " "))
	return nil
}

// cryptNames reports whether name is the mapping the Plan's LUKS device opens.
func (b *builder) cryptNames(name string) bool {
	return b.plan.Crypt != nil && b.plan.Crypt.Name == name
}
