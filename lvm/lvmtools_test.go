package lvm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/dm/dmtest"
	"github.com/nbdroot/nbdroot/lvm/lvmtest"
)

// These tests make volume groups with the real lvm2 tools on loop devices (no
// device-mapper needed: lvcreate --driverloaded n -an -Zn writes metadata only), read them
// with this package, and compare every table with what lvm2 reports (lvs --segments,
// pvs pe_start, vgs extent size) and the names and UUIDs with lvm2's own (lv_dm_path,
// lv_uuid, vg_uuid). LVM inside a LUKS container is the same reading on the unlocked
// device; the host has no device-mapper to unlock one, so that combination runs in the
// QEMU boot tests.

// lvmTools is an isolated lvm2 for one test (lvmtest.Tools) over its loop devices.
type lvmTools struct {
	*lvmtest.Tools
	t     *testing.T
	loops []string
}

// newLVMTools makes n sparse images of size bytes on loop devices and returns the tools,
// or skips the test (fails it under NBDROOT_REQUIRE_PEERS=1) without root, lvm2 or loop
// devices.
func newLVMTools(t *testing.T, n int, size int64) *lvmTools {
	t.Helper()
	lt := lvmtest.New(t, n, size)
	return &lvmTools{Tools: lt, t: t, loops: lt.Loops}
}

// run runs an lvm command (driverloaded n: no device-mapper) and returns its stdout.
func (l *lvmTools) run(cmd string, args ...string) string {
	l.t.Helper()
	return l.Run(cmd, args...)
}

// report runs an lvm reporting command with JSON output and returns its rows.
func (l *lvmTools) report(cmd, key string, args ...string) []map[string]string {
	l.t.Helper()
	return l.Report(cmd, key, args...)
}

// expectedTables builds, from lvm2's own reports only, the table lvm2 would load for each
// LV of vg: "start length linear DEV OFFSET" or "… striped N CHUNK DEV OFFSET …" per
// segment, OFFSET = pe_start(DEV) + first extent × extent size.
func (l *lvmTools) expectedTables(vg string) map[string][]string {
	l.t.Helper()
	peStart := map[string]uint64{}
	for _, r := range l.report("pvs", "pv", "-o", "pv_name,pe_start") {
		peStart[r["pv_name"]] = mustUint(l.t, r["pe_start"])
	}
	extent := mustUint(l.t, l.report("vgs", "vg", "-o", "vg_extent_size", vg)[0]["vg_extent_size"])
	devRe := regexp.MustCompile(`^(.+)\((\d+)\)$`)
	out := map[string][]string{}
	for _, r := range l.report("lvs", "seg", "--segments", "-o", "lv_name,seg_start,seg_size,segtype,stripes,stripe_size,devices", vg) {
		if r["segtype"] != "linear" && r["segtype"] != "striped" {
			continue // no table of ours to compare with
		}
		var parts []string
		for _, d := range strings.Split(r["devices"], ",") {
			m := devRe.FindStringSubmatch(d)
			if m == nil {
				l.t.Fatalf("lvs devices %q", r["devices"])
			}
			parts = append(parts, fmt.Sprintf("%s %d", m[1], peStart[m[1]]+mustUint(l.t, m[2])*extent))
		}
		params := strings.Join(parts, " ")
		typ := "linear"
		if n := mustUint(l.t, r["stripes"]); n > 1 {
			typ = "striped"
			params = fmt.Sprintf("%d %s %s", n, r["stripe_size"], params)
		}
		out[r["lv_name"]] = append(out[r["lv_name"]], fmt.Sprintf("%s %s %s %s", r["seg_start"], r["seg_size"], typ, params))
	}
	return out
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("lvm report number %q: %v", s, err)
	}
	return n
}

// readAll reads every loop device as a PV and assembles them.
func (l *lvmTools) readAll() ([]*PV, []*VG) {
	l.t.Helper()
	var pvs []*PV
	for _, lp := range l.loops {
		pv, err := ReadPVFile(lp)
		if errors.Is(err, ErrNoLabel) {
			continue
		}
		if err != nil {
			l.t.Fatal(err)
		}
		pvs = append(pvs, pv)
	}
	vgs, err := Assemble(pvs)
	if err != nil {
		l.t.Fatal(err)
	}
	return pvs, vgs
}

// checkVG compares the tables, names and UUIDs of every LV of vgName with lvm2's.
func (l *lvmTools) checkVG(vgs []*VG, vgName string) {
	l.t.Helper()
	vg, ok := Find(vgs, vgName)
	if !ok {
		l.t.Fatalf("VG %s not assembled (have %d VGs)", vgName, len(vgs))
	}
	want := l.expectedTables(vgName)
	got := map[string][]string{}
	for _, lv := range vg.LVs {
		table, err := vg.Table(lv.Name)
		if err != nil {
			l.t.Errorf("Table(%s): %v", lv.Name, err)
			continue
		}
		got[lv.Name] = tableLines(table)
	}
	if len(want) == 0 {
		l.t.Fatalf("lvs reported no segments for %s", vgName)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		l.t.Errorf("tables: lvm2 (-) vs ours (+):\n%s", diff)
	}
	for _, r := range l.report("lvs", "lv", "-o", "lv_name,lv_uuid,vg_uuid,lv_dm_path", vgName) {
		lv, ok := vg.LV(r["lv_name"])
		if !ok {
			l.t.Errorf("LV %s missing", r["lv_name"])
			continue
		}
		if got := "/dev/mapper/" + DMName(vg.Name, lv.Name); got != r["lv_dm_path"] {
			l.t.Errorf("%s: dm path %s, lvm2 says %s", lv.Name, got, r["lv_dm_path"])
		}
		if got, want := DMUUID(vg, lv), "LVM-"+normUUID(r["vg_uuid"])+normUUID(r["lv_uuid"]); got != want {
			l.t.Errorf("%s: dm uuid %s, want %s", lv.Name, got, want)
		}
		if p, ok := vgPathOf(r["lv_dm_path"]); ok && (p[0] != vg.Name || p[1] != lv.Name) {
			l.t.Errorf("ParsePath(%s) = %v", r["lv_dm_path"], p)
		}
	}
}

func vgPathOf(p string) ([2]string, bool) {
	vg, lv, ok := ParsePath(p)
	return [2]string{vg, lv}, ok
}

func TestRealLVMLinearStriped(t *testing.T) {
	l := newLVMTools(t, 3, 64<<20)
	vg := fmt.Sprintf("nbd-test-%d", os.Getpid()) // a dash: dm names double it
	// pv0 as usual; pv1 labelled in sector 3 with a second metadata area at its end;
	// pv2 without any metadata area (its VG membership is only in the others' metadata).
	l.run("pvcreate", "-q", l.loops[0])
	l.run("pvcreate", "-q", "--labelsector", "3", "--pvmetadatacopies", "2", l.loops[1])
	l.run("pvcreate", "-q", "--pvmetadatacopies", "0", l.loops[2])
	l.run("vgcreate", "-q", "-s", "4m", vg, l.loops[0], l.loops[1], l.loops[2])
	t.Cleanup(func() { l.run("vgremove", "-q", "-f", vg) })
	lv := func(args ...string) { l.run("lvcreate", append([]string{"-q", "-an", "-Zn", "-y"}, args...)...) }
	lv("-L", "16m", "-n", "root-fs", vg, l.loops[0])
	lv("-i2", "-I64k", "-L", "24m", "-n", "data", vg, l.loops[0], l.loops[1])
	lv("-i3", "-I128k", "-L", "12m", "-n", "wide", vg)
	lv("-L", "8m", "-n", "swap", vg, l.loops[1])
	// A second segment on another PV.
	l.run("lvextend", "-q", "-L", "+8m", vg+"/swap", l.loops[2])

	pvs, vgs := l.readAll()
	sectors := map[string]int{}
	for _, pv := range pvs {
		sectors[pv.Device] = pv.LabelSector
	}
	if sectors[l.loops[1]] != 3 || sectors[l.loops[0]] != 1 {
		t.Errorf("label sectors %v, want pv1 in sector 3", sectors)
	}
	if len(pvs) != 3 || pvs[2].VG != nil {
		t.Errorf("want 3 PVs, the one without metadata area without a VG; got %d", len(pvs))
	}
	l.checkVG(vgs, vg)
	v, _ := Find(vgs, vg)
	if swap, _ := v.LV("swap"); len(swap.Segments) != 2 {
		t.Errorf("swap has %d segments, want 2 (lvextend onto another PV)", len(swap.Segments))
	}

	// Activation through the fake device-mapper: the name lvm2 would use.
	f := dmtest.New()
	dev, err := v.Activate(f.Client(), "root-fs", ActivateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "/dev/mapper/" + strings.ReplaceAll(vg, "-", "--") + "-root--fs"; dev.Path != want {
		t.Errorf("activated as %s, want %s", dev.Path, want)
	}

	// A PV gone: LVs on it are refused naming it, the others still map.
	_, missing := l.readAllExcept(t, l.loops[2])
	mv, _ := Find(missing, vg)
	var me *MissingPVError
	if _, err := mv.Table("swap"); !errors.As(err, &me) {
		t.Errorf("swap without its second PV: %v", err)
	}
	if _, err := mv.Table("root-fs"); err != nil {
		t.Errorf("root-fs with every PV of its own: %v", err)
	}
}

// readAllExcept is readAll without the PV on loop skip.
func (l *lvmTools) readAllExcept(t *testing.T, skip string) ([]*PV, []*VG) {
	t.Helper()
	var pvs []*PV
	for _, lp := range l.loops {
		if lp == skip {
			continue
		}
		pv, err := ReadPVFile(lp)
		if errors.Is(err, ErrNoLabel) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		pvs = append(pvs, pv)
	}
	vgs, err := Assemble(pvs)
	if err != nil {
		t.Fatal(err)
	}
	return pvs, vgs
}

// TestRealLVMMetadataWraps changes a VG with a small metadata area until lvm2's text has
// run around the circular buffer, checking the tables after every change.
func TestRealLVMMetadataWraps(t *testing.T) {
	l := newLVMTools(t, 1, 32<<20)
	vg := fmt.Sprintf("nbdwrap%d", os.Getpid())
	l.run("pvcreate", "-q", "--metadatasize", "16k", "--dataalignment", "64k", l.loops[0])
	l.run("vgcreate", "-q", "-s", "1m", vg, l.loops[0])
	t.Cleanup(func() { l.run("vgremove", "-q", "-f", vg) })
	for i := 0; i < 6; i++ {
		l.run("lvcreate", "-q", "-an", "-Zn", "-y", "-L", "1m", "-n", fmt.Sprintf("lv%d", i), vg)
	}
	wrapped := false
	for i := 0; i < 80 && !wrapped; i++ {
		// Each rename writes the whole metadata again, further along the buffer.
		from, to := "lv0", "lv0-renamed"
		if i%2 == 1 {
			from, to = to, from
		}
		l.run("lvrename", "-q", vg, from, to)
		pvs, vgs := l.readAll()
		if pvs[0].wrapped {
			wrapped = true
			l.checkVG(vgs, vg)
			if v, _ := Find(vgs, vg); v == nil || v.Seqno < 8 {
				t.Errorf("VG after %d renames: %+v", i+1, v)
			}
		}
	}
	if !wrapped {
		t.Fatal("the metadata never wrapped around its area: the test tests nothing")
	}
}

// TestRealLVMRefusesOtherTypes writes thin, raid1 and snapshot volumes into a VG's
// metadata with vgcfgrestore (lvcreate cannot make them without device-mapper), checks
// that lvm2 reads them as such (lvs segtype and lv_role), and that this package refuses
// each by its type while the plain LVs still map as lvm2 says.
func TestRealLVMRefusesOtherTypes(t *testing.T) {
	l := newLVMTools(t, 2, 64<<20)
	vg := fmt.Sprintf("nbdtypes%d", os.Getpid())
	l.run("pvcreate", "-q", l.loops[0], l.loops[1])
	l.run("vgcreate", "-q", "-s", "4m", vg, l.loops[0], l.loops[1])
	t.Cleanup(func() { l.run("vgremove", "-q", "-f", vg) })
	l.run("lvcreate", "-q", "-an", "-Zn", "-y", "-L", "16m", "-n", "lin", vg, l.loops[0])
	l.run("lvcreate", "-q", "-an", "-Zn", "-y", "-i2", "-I64k", "-L", "16m", "-n", "str", vg)

	backup := filepath.Join(t.TempDir(), "vg.cfg")
	l.run("vgcfgbackup", "-q", "-f", backup, vg)
	text, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	id := func() string { n++; return fmt.Sprintf("nbdroo-test-0000-0000-0000-0000-%06d", n) }
	linear := func(name string, visible bool, pv string, pe int) string {
		status := `"READ", "WRITE"`
		if visible {
			status += `, "VISIBLE"`
		}
		return fmt.Sprintf(`%s {
id = "%s"
status = [%s]
flags = []
segment_count = 1
segment1 {
start_extent = 0
extent_count = 1
type = "striped"
stripe_count = 1
stripes = ["%s", %d]
}
}
`, name, id(), status, pv, pe)
	}
	other := func(name string, visible bool, extents int, typ, fields string) string {
		status := `"READ", "WRITE"`
		if visible {
			status += `, "VISIBLE"`
		}
		return fmt.Sprintf("%s {\nid = %q\nstatus = [%s]\nflags = []\nsegment_count = 1\nsegment1 {\nstart_extent = 0\nextent_count = %d\ntype = %q\n%s\n}\n}\n",
			name, id(), status, extents, typ, fields)
	}
	// pv0 has extents 0–5 in use (lin, half of str), pv1 0–1: the new LVs go above.
	add := other("pool", true, 1, "thin-pool", `metadata = "pool_tmeta"
pool = "pool_tdata"
transaction_id = 0
chunk_size = 128
discards = "passdown"
zero_new_blocks = 1`) +
		linear("pool_tmeta", false, "pv1", 4) + linear("pool_tdata", false, "pv1", 5) +
		other("thin1", true, 2, "thin", `thin_pool = "pool"
transaction_id = 0
device_id = 1`) +
		other("r1", true, 1, "raid1", `device_count = 2
region_size = 1024
raids = ["r1_rmeta_0", "r1_rimage_0", "r1_rmeta_1", "r1_rimage_1"]`) +
		linear("r1_rmeta_0", false, "pv1", 6) + linear("r1_rimage_0", false, "pv1", 7) +
		linear("r1_rmeta_1", false, "pv0", 10) + linear("r1_rimage_1", false, "pv0", 11) +
		linear("snap", true, "pv1", 8) +
		other("snapshot0", false, 4, "snapshot", `chunk_size = 8
origin = "lin"
cow_store = "snap"`)
	s := string(text)
	at := strings.Index(s, "logical_volumes {")
	if at < 0 {
		t.Fatalf("no logical_volumes in the backup:\n%s", s)
	}
	at += len("logical_volumes {")
	if err := os.WriteFile(backup, []byte(s[:at]+"\n"+add+s[at:]), 0o644); err != nil {
		t.Fatal(err)
	}
	l.run("vgcfgrestore", "-q", "--force", "-f", backup, vg)

	// What lvm2 makes of them.
	roles := map[string]string{}
	for _, r := range l.report("lvs", "lv", "-a", "-o", "lv_name,segtype,lv_role", vg) {
		roles[strings.Trim(r["lv_name"], "[]")] = r["segtype"] + " " + r["lv_role"]
	}
	for lv, want := range map[string]string{"pool": "thin-pool", "thin1": "thin", "r1": "raid1", "snap": "snapshot", "lin": "origin"} {
		if !strings.Contains(roles[lv], want) {
			t.Fatalf("lvm2 sees %s as %q, want %s: the test's metadata is off", lv, roles[lv], want)
		}
	}

	_, vgs := l.readAll()
	v, ok := Find(vgs, vg)
	if !ok {
		t.Fatal("VG not assembled")
	}
	for lv, wantType := range map[string]string{"pool": "thin-pool", "thin1": "thin", "r1": "raid1",
		"snap": "snapshot", "lin": "snapshot origin", "r1_rimage_0": "hidden", "pool_tdata": "hidden"} {
		_, err := v.Table(lv)
		var ue *UnsupportedError
		if !errors.As(err, &ue) || ue.Type != wantType {
			t.Errorf("Table(%s) = %v, want refused as %s", lv, err, wantType)
		}
	}
	want := l.expectedTables(vg)["str"]
	got, err := v.Table("str")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, tableLines(got)); diff != "" || len(want) == 0 {
		t.Errorf("str: lvm2 (-) vs ours (+):\n%s", diff)
	}
}
