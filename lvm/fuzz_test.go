package lvm

import (
	"bytes"
	"testing"
)

// The metadata comes from the NBD server (or whoever controls it): the parsers are
// fuzzed. Seeds under testdata/fuzz/ run as regression tests in plain go test.

// FuzzParseMetadata feeds arbitrary metadata text: no panic; what parses is consistent
// (contiguous segments, valid names) and every table it yields covers its LV exactly.
func FuzzParseMetadata(f *testing.F) {
	f.Add(realMetadataSeed())
	f.Add([]byte(vgText(linearLV("root", "pv0", 0, 10) + linearLV("swap-1", "pv1", 3, 2))))
	f.Add([]byte(vgText(unsupportedLV("pool", `"VISIBLE"`, "thin-pool", `metadata = "m"`))))
	f.Add([]byte("vg {\nid = \"x\"\nseqno = 1\nextent_size = 8\nphysical_volumes {}\n}\n"))
	f.Fuzz(func(t *testing.T, text []byte) {
		vg, err := ParseMetadata(text)
		if err != nil {
			return
		}
		if checkName("volume group", vg.Name) != nil || vg.ExtentSize == 0 {
			t.Fatalf("accepted VG %q extent size %d", vg.Name, vg.ExtentSize)
		}
		for i, pv := range vg.PVs {
			pv.Device = "/dev/nbd" + string(rune('0'+i%10))
		}
		for _, lv := range vg.LVs {
			if checkName("logical volume", lv.Name) != nil {
				t.Fatalf("accepted LV name %q", lv.Name)
			}
			if v, l, ok := SplitDMName(DMName(vg.Name, lv.Name)); !ok || v != vg.Name || l != lv.Name {
				t.Fatalf("DM name of %s/%s does not split back: %q %q %v", vg.Name, lv.Name, v, l, ok)
			}
			table, err := vg.Table(lv.Name)
			if err != nil {
				continue
			}
			var next uint64
			for _, tg := range table {
				if tg.Start != next || tg.Length == 0 || bytes.ContainsAny(tg.Params, "\n\x00") {
					t.Fatalf("%s: target %v after sector %d", lv.Name, tg, next)
				}
				next += tg.Length
			}
			if next != lv.Extents()*vg.ExtentSize {
				t.Fatalf("%s: table covers %d sectors, LV has %d extents of %d", lv.Name, next, lv.Extents(), vg.ExtentSize)
			}
		}
	})
}

// FuzzReadPV feeds arbitrary device contents: ReadPV must return an error or a PV,
// never panic or read outside what the label describes.
func FuzzReadPV(f *testing.F) {
	small := func(text string, at uint64) []byte {
		return pvImage{size: 8 << 10, labelSector: 1, id: testPVID,
			mdas: []mdaSpec{{offset: 4096, size: 4 << 10, text: text, at: at}}}.bytes()
	}
	f.Add(small(vgText(linearLV("root", "pv0", 0, 10)), 512))
	f.Add(small(vgText(linearLV("root", "pv0", 0, 10)), 4<<10-200)) // wrapped
	f.Add(small("", 0))
	f.Add(make([]byte, 2048))
	f.Fuzz(func(t *testing.T, img []byte) {
		pv, err := ReadPV(bytes.NewReader(img))
		if err != nil {
			return
		}
		if !validID(normUUID(pv.UUID)) || pv.LabelSector < 0 || pv.LabelSector > 3 {
			t.Fatalf("accepted PV %q in sector %d", pv.UUID, pv.LabelSector)
		}
	})
}

func realMetadataSeed() []byte {
	b, err := readTestdata("linear-striped.vg")
	if err != nil {
		return []byte("vg {}")
	}
	return b
}
