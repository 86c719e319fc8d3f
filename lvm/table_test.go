package lvm

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/dm"
	"github.com/nbdroot/nbdroot/dm/dmtest"
)

// parsed parses text and places its PVs on /dev/nbd0 and /dev/nbd1, as Assemble would.
func parsed(t *testing.T, text string) *VG {
	t.Helper()
	vg, err := ParseMetadata([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	for i, pv := range vg.PVs {
		pv.Device = "/dev/nbd" + string(rune('0'+i))
	}
	return vg
}

// tableLines renders targets as `dmsetup table` lines.
func tableLines(ts []dm.Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.String())
	}
	return out
}

func TestTableRealMetadata(t *testing.T) {
	vg, err := ParseMetadata(realMetadata(t))
	if err != nil {
		t.Fatal(err)
	}
	vg.PVs[0].Device, vg.PVs[1].Device = "/dev/loop0", "7:1"
	tests := []struct {
		lv   string
		want []string
	}{
		// lvs: lin /dev/loop0:0-3, pe_start 2048, extent 8192 sectors.
		{"lin", []string{"0 32768 linear /dev/loop0 2048"}},
		// lvs: str /dev/loop0:4-7 /dev/loop1:0-3, stripe 128 sectors: 2048+4*8192 = 34816.
		{"str", []string{"0 65536 striped 2 128 /dev/loop0 34816 7:1 2048"}},
	}
	for _, tt := range tests {
		t.Run(tt.lv, func(t *testing.T) {
			ts, err := vg.Table(tt.lv)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, tableLines(ts)); diff != "" {
				t.Errorf("table (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTableSegments(t *testing.T) {
	vg := parsed(t, vgText(linearLV("root", "pv1", 10, 25)+`
		data {
			id = "LVLVLV-0000-1111-2222-3333-4444-data00"
			status = ["READ", "VISIBLE"]
			segment_count = 3
			segment2 {
				start_extent = 5
				extent_count = 4
				type = "striped"
				stripe_count = 2
				stripe_size = 1024
				stripes = ["pv0", 50, "pv1", 60]
			}
			segment1 {
				start_extent = 0
				extent_count = 5
				type = "striped"
				stripe_count = 1
				stripes = ["pv0", 0]
			}
			segment3 {
				start_extent = 9
				extent_count = 1
				type = "linear"
				stripe_count = 1
				stripes = ["pv1", 99]
			}
		}`))
	ts, err := vg.Table("data")
	if err != nil {
		t.Fatal(err)
	}
	// extent = 16384 sectors, pe_start 2048.
	want := []string{
		"0 81920 linear /dev/nbd0 2048",
		"81920 65536 striped 2 1024 /dev/nbd0 821248 /dev/nbd1 985088",
		"147456 16384 linear /dev/nbd1 1624064",
	}
	if diff := cmp.Diff(want, tableLines(ts)); diff != "" {
		t.Errorf("table (-want +got):\n%s", diff)
	}
	root, err := vg.Table("root")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"0 409600 linear /dev/nbd1 165888"}, tableLines(root)); diff != "" {
		t.Errorf("root (-want +got):\n%s", diff)
	}
}

// unsupportedLV is an LV section with one segment of the given type and its fields, as
// lvm2 writes them.
func unsupportedLV(name, status, typ, fields string) string {
	return `
		` + name + ` {
			id = "LVLVLV-0000-1111-2222-3333-4444-555555"
			status = [` + status + `]
			segment_count = 1
			segment1 {
				start_extent = 0
				extent_count = 2
				type = "` + typ + `"
				` + fields + `
			}
		}`
}

func TestTableRefusesOtherSegmentTypes(t *testing.T) {
	visible := `"READ", "WRITE", "VISIBLE"`
	hidden := `"READ", "WRITE"`
	tests := []struct {
		name, lvs, lv, wantType string
	}{
		{"thin", unsupportedLV("thin1", visible, "thin", `thin_pool = "pool"
				transaction_id = 1
				device_id = 1`), "thin1", "thin"},
		{"thin pool", unsupportedLV("pool", visible, "thin-pool", `metadata = "pool_tmeta"
				pool = "pool_tdata"
				transaction_id = 0
				chunk_size = 128`), "pool", "thin-pool"},
		{"raid1", unsupportedLV("r1", visible, "raid1", `device_count = 2
				region_size = 4096
				raids = ["r1_rmeta_0", "r1_rimage_0", "r1_rmeta_1", "r1_rimage_1"]`), "r1", "raid1"},
		{"raid5", unsupportedLV("r5", visible, "raid5_ls", `device_count = 3
				stripe_size = 128
				raids = ["r5_rmeta_0", "r5_rimage_0"]`), "r5", "raid5_ls"},
		{"mirror", unsupportedLV("m", visible, "mirror", `mirror_count = 2
				mirror_log = "m_mlog"
				region_size = 1024
				mirrors = ["m_mimage_0", 0, "m_mimage_1", 0]`), "m", "mirror"},
		{"cache", unsupportedLV("c", visible, "cache", `cache_pool = "cpool"
				origin = "c_corig"`), "c", "cache"},
		{"writecache", unsupportedLV("w", visible, "writecache", `origin = "w_wcorig"
				writecache = "fast"`), "w", "writecache"},
		{"vdo", unsupportedLV("v", visible, "vdo", `vdo_pool = "vpool"
				vdo_offset = 0`), "v", "vdo"},
		{"integrity", unsupportedLV("i", visible, "integrity", `origin = "i_iorig"`), "i", "integrity"},
		{"unknown type", unsupportedLV("u", visible, "futuristic", ``), "u", "futuristic"},
		{"snapshot", linearLV("origin", "pv0", 0, 10) +
			// lvm2 writes the store without VISIBLE: its visibility is the snapshot's.
			strings.Replace(linearLV("snap", "pv1", 0, 2), `, "VISIBLE"`, "", 1) + unsupportedLV("snapshot0", hidden, "snapshot", `chunk_size = 8
				origin = "origin"
				cow_store = "snap"`), "snap", "snapshot"},
		{"snapshot origin", linearLV("origin", "pv0", 0, 10) + unsupportedLV("snapshot0", hidden, "snapshot", `chunk_size = 8
				origin = "origin"
				cow_store = "snapcow"`), "origin", "snapshot origin"},
		{"hidden LV", strings.Replace(linearLV("r_rimage_0", "pv0", 0, 10), `"READ", "WRITE", "VISIBLE"`, `"READ", "WRITE"`, 1), "r_rimage_0", "hidden"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vg := parsed(t, vgText(linearLV("root", "pv0", 50, 10)+tt.lvs))
			_, err := vg.Table(tt.lv)
			var ue *UnsupportedError
			if !errors.As(err, &ue) || ue.Type != tt.wantType || ue.LV != tt.lv || ue.VG != "vg" {
				t.Fatalf("Table(%s) = %v, want an UnsupportedError of type %q", tt.lv, err, tt.wantType)
			}
			if !strings.Contains(err.Error(), tt.wantType) || !strings.Contains(err.Error(), "vg/"+tt.lv) {
				t.Errorf("message %q does not name the type and the LV", err)
			}
			// The VG's linear LV still activates.
			if _, err := vg.Table("root"); err != nil {
				t.Errorf("root beside it: %v", err)
			}
		})
	}
}

func TestTableMissingAndDuplicatePVs(t *testing.T) {
	vg := parsed(t, vgText(linearLV("a", "pv0", 0, 10)+linearLV("b", "pv1", 0, 10)))
	vg.PVs[1].Device = ""
	if _, err := vg.Table("a"); err != nil {
		t.Errorf("LV on the PV present: %v", err)
	}
	_, err := vg.Table("b")
	var me *MissingPVError
	if !errors.As(err, &me) || me.PV != "pv1" || me.UUID != "777777-8888-9999-AAAA-BBBB-CCCC-DDDDDD" || me.Hint != "/dev/nbd1" {
		t.Fatalf("Table(b) = %v, want a MissingPVError for pv1", err)
	}
	vg.PVs[1].Device, vg.PVs[1].Duplicates = "/dev/sda", []string{"/dev/nbd1"}
	_, err = vg.Table("b")
	if !errors.As(err, &me) || !cmp.Equal(me.Duplicates, []string{"/dev/sda", "/dev/nbd1"}) || !strings.Contains(err.Error(), "several devices") {
		t.Fatalf("Table(b) with a duplicate = %v", err)
	}
	if _, err := vg.Table("nosuch"); !errors.Is(err, ErrNoLV) {
		t.Errorf("Table(nosuch) = %v, want ErrNoLV", err)
	}
}

func TestTableBounds(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"past the PV's extents", vgText(linearLV("a", "pv0", 95, 10)), "past the 100 extents of pv0"},
		{"stripe on an LV", vgText(linearLV("a", "other_lv", 0, 10)), "not a physical volume"},
		{"extent size overflows", strings.Replace(vgText(linearLV("a", "pv0", 0, 10)), "extent_size = 16384", "extent_size = 9223372036854775807", 1), "overflows"},
		{"start extent overflows", strings.Replace(vgText(linearLV("a", "pv0", 0, 10)), `"pv0", 0`, `"pv0", 9223372036854775807`, 1), "past the 100 extents"},
		{"device with a space", vgText(linearLV("a", "pv0", 0, 10)), "white space"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vg := parsed(t, tt.text)
			if tt.name == "device with a space" {
				vg.PVs[0].Device = "/dev/nbd0 0 /dev/sda"
			}
			_, err := vg.Table("a")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Table = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		vg, lv, dm string
	}{
		{"vg0", "root", "vg0-root"},
		{"my-vg", "root", "my--vg-root"},
		{"vg", "root-fs", "vg-root--fs"},
		{"a-b-c", "d--e", "a--b--c-d----e"},
		{"debian-vg", "swap_1", "debian--vg-swap_1"},
	}
	for _, tt := range tests {
		t.Run(tt.dm, func(t *testing.T) {
			if got := DMName(tt.vg, tt.lv); got != tt.dm {
				t.Errorf("DMName(%q, %q) = %q, want %q", tt.vg, tt.lv, got, tt.dm)
			}
			if vg, lv, ok := SplitDMName(tt.dm); !ok || vg != tt.vg || lv != tt.lv {
				t.Errorf("SplitDMName(%q) = %q, %q, %v", tt.dm, vg, lv, ok)
			}
			if vg, lv, ok := ParsePath("/dev/mapper/" + tt.dm); !ok || vg != tt.vg || lv != tt.lv {
				t.Errorf("ParsePath(/dev/mapper/%s) = %q, %q, %v", tt.dm, vg, lv, ok)
			}
			if vg, lv, ok := ParsePath("/dev/" + tt.vg + "/" + tt.lv); !ok || vg != tt.vg || lv != tt.lv {
				t.Errorf("ParsePath(/dev/%s/%s) = %q, %q, %v", tt.vg, tt.lv, vg, lv, ok)
			}
		})
	}
	for _, p := range []string{"/dev/mapper/nbdcrypt", "/dev/mapper/a-b-c", "/dev/mapper/-a", "/dev/mapper/a-",
		"/dev/nbd0", "/dev/mapper/control", "/dev/disk/by-uuid", "/dev/a/b/c", "/dev/vg/", "/dev//lv", "/dev/-vg/lv",
		"/dev/vg/l v", "/proc/vg/lv", "UUID=1234", "vg", "/dev/mapper/x/y-z"} {
		if vg, lv, ok := ParsePath(p); ok {
			t.Errorf("ParsePath(%q) = %q, %q, true; want not an LV path", p, vg, lv)
		}
	}
	if vg, lv, ok := ParsePath("vg0/root"); !ok || vg != "vg0" || lv != "root" {
		t.Errorf("ParsePath(vg0/root) = %q, %q, %v (dracut's rd.lvm.lv= form)", vg, lv, ok)
	}
}

func TestActivate(t *testing.T) {
	vg, err := ParseMetadata(realMetadata(t))
	if err != nil {
		t.Fatal(err)
	}
	vg.PVs[0].Device, vg.PVs[1].Device = "/dev/nbd0", "/dev/nbd1"
	f := dmtest.New()
	dev, err := vg.Activate(f.Client(), "str", ActivateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dev.Path != "/dev/mapper/vgx-str" {
		t.Errorf("path = %q", dev.Path)
	}
	wantUUID := "LVM-nYJaYvhI1nDCtHDeQWJCPIrQy24XM9P9h55qrvMtttWywVH3csQo13ofn5wUcljC"
	want := []dmtest.Call{
		{Cmd: "DM_DEV_CREATE", Message: dm.Message{Name: "vgx-str", UUID: wantUUID}},
		{Cmd: "DM_TABLE_LOAD", Message: dm.Message{Name: "vgx-str", Targets: []dm.Target{
			{Length: 65536, Type: "striped", Params: []byte("2 128 /dev/nbd0 34816 /dev/nbd1 2048")}}}},
		{Cmd: "DM_DEV_SUSPEND", Message: dm.Message{Name: "vgx-str"}},
	}
	if diff := cmp.Diff(want, f.Calls); diff != "" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if len(wantUUID) != 4+64 {
		t.Fatalf("uuid length %d", len(wantUUID))
	}

	// Read-only: asked for, or the LV's status lacks WRITE.
	f = dmtest.New()
	if _, err := vg.Activate(f.Client(), "lin", ActivateOptions{ReadOnly: true}); err != nil {
		t.Fatal(err)
	}
	if f.Calls[1].Flags != dm.ReadOnly {
		t.Errorf("flags = %#x, want read-only", f.Calls[1].Flags)
	}
	lin, _ := vg.LV("lin")
	lin.Status = []string{"READ", "VISIBLE"}
	f = dmtest.New()
	if _, err := vg.Activate(f.Client(), "lin", ActivateOptions{}); err != nil {
		t.Fatal(err)
	}
	if f.Calls[1].Flags != dm.ReadOnly {
		t.Errorf("flags of a read-only LV = %#x, want read-only", f.Calls[1].Flags)
	}

	// A refused LV issues no ioctl; a failing one says which LV.
	f = dmtest.New()
	vg.PVs[1].Device = ""
	if _, err := vg.Activate(f.Client(), "str", ActivateOptions{}); err == nil || len(f.Calls) != 0 {
		t.Errorf("missing PV: err %v, ioctls %v", err, f.Cmds())
	}
	vg.PVs[1].Device = "/dev/nbd1"
	f.Fail, f.FailErr = dm.CmdTableLoad, errors.New("EINVAL")
	if _, err := vg.Activate(f.Client(), "str", ActivateOptions{}); err == nil || !strings.Contains(err.Error(), "activate vgx/str") {
		t.Errorf("failed load: %v", err)
	}
}
