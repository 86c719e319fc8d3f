package lvm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// mdaSpec describes one metadata area of a synthetic PV image.
type mdaSpec struct {
	offset, size uint64 // of the area, in bytes
	text         string // committed metadata; "" for none
	at           uint64 // raw_locn offset of the text within the area
	ignored      bool
	damage       func(area []byte) // applied after the checksums are written
}

// pvImage is a synthetic physical volume, laid out as lvm2 writes one.
type pvImage struct {
	size        int
	labelSector int
	id          string // 32 characters
	mdas        []mdaSpec
	damage      func(img []byte)
}

// le helpers
func put64(b []byte, v uint64) { binary.LittleEndian.PutUint64(b, v) }
func put32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }

func (p pvImage) bytes() []byte {
	img := make([]byte, p.size)
	sec := img[p.labelSector*512 : (p.labelSector+1)*512]
	copy(sec, labelID)
	put64(sec[8:], uint64(p.labelSector))
	put32(sec[20:], 32)
	copy(sec[24:], labelType)
	h := sec[32:]
	copy(h, p.id)
	put64(h[32:], uint64(p.size))
	l := h[40:]
	put64(l, 1<<20) // one data area from 1 MiB, to the end
	l = l[32:]      // and its terminator
	for _, m := range p.mdas {
		put64(l, m.offset)
		put64(l[8:], m.size)
		l = l[16:]
	}
	// the metadata list's terminator is the zeroes that follow
	put32(sec[16:], crc(sec[20:]))
	for _, m := range p.mdas {
		area := img[m.offset : m.offset+m.size]
		copy(area[4:], mdaMagic)
		put32(area[20:], 1)
		put64(area[24:], m.offset)
		put64(area[32:], m.size)
		if m.text != "" {
			text := []byte(m.text + "\x00")
			// The circular buffer: what does not fit before the end continues after the
			// header.
			n := copy(area[m.at:], text)
			copy(area[mdaHeaderSize:], text[n:])
			put64(area[40:], m.at)
			put64(area[48:], uint64(len(text)))
			put32(area[56:], crc(text))
		}
		if m.ignored {
			put32(area[60:], rawLocnIgnored)
		}
		put32(area, crc(area[4:mdaHeaderSize]))
		if m.damage != nil {
			m.damage(area)
		}
	}
	if p.damage != nil {
		p.damage(img)
	}
	return img
}

const testPVID = "00000011112222333344445555666666"

func TestReadPVSynthetic(t *testing.T) {
	text := vgText(linearLV("root", "pv0", 0, 10))
	newer := strings.Replace(text, "seqno = 7", "seqno = 8", 1)
	id := testPVID
	tests := []struct {
		name        string
		img         pvImage
		wantSector  int
		wantSeqno   uint64 // 0: no VG
		wantWrapped bool
		wantErr     string
	}{
		{"label in sector 1", pvImage{size: 2 << 20, labelSector: 1, id: id, mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512}}}, 1, 7, false, ""},
		{"label in sector 0", pvImage{size: 2 << 20, labelSector: 0, id: id, mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 9000}}}, 0, 7, false, ""},
		{"label in sector 3", pvImage{size: 2 << 20, labelSector: 3, id: id, mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512}}}, 3, 7, false, ""},
		{"text wraps around the circular buffer", pvImage{size: 2 << 20, labelSector: 1, id: id,
			mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 64<<10 - 300}}}, 1, 7, true, ""},
		{"two areas, the newer wins", pvImage{size: 2 << 20, labelSector: 1, id: id, mdas: []mdaSpec{
			{offset: 4096, size: 64 << 10, text: text, at: 512},
			{offset: 2<<20 - 64<<10, size: 64 << 10, text: newer, at: 4096}}}, 1, 8, false, ""},
		{"first area damaged, second used", pvImage{size: 2 << 20, labelSector: 1, id: id, mdas: []mdaSpec{
			{offset: 4096, size: 64 << 10, text: newer, at: 512, damage: func(a []byte) { a[600] ^= 1 }},
			{offset: 2<<20 - 64<<10, size: 64 << 10, text: text, at: 4096}}}, 1, 7, false, ""},
		{"ignored area", pvImage{size: 2 << 20, labelSector: 1, id: id, mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512, ignored: true}}}, 1, 0, false, ""},
		{"no metadata copy", pvImage{size: 2 << 20, labelSector: 1, id: id}, 1, 0, false, ""},
		{"orphan PV (area empty)", pvImage{size: 2 << 20, labelSector: 1, id: id, mdas: []mdaSpec{{offset: 4096, size: 64 << 10}}}, 1, 0, false, ""},
		{"metadata checksum mismatch", pvImage{size: 2 << 20, labelSector: 1, id: id,
			mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512, damage: func(a []byte) { a[700] ^= 1 }}}}, 0, 0, false, "metadata checksum mismatch"},
		{"header checksum mismatch", pvImage{size: 2 << 20, labelSector: 1, id: id,
			mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512, damage: func(a []byte) { a[100] ^= 1 }}}}, 0, 0, false, "header checksum mismatch"},
		{"header start wrong", pvImage{size: 2 << 20, labelSector: 1, id: id,
			mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512, damage: func(a []byte) { put64(a[24:], 0); put32(a, crc(a[4:512])) }}}}, 0, 0, false, "start or size differs"},
		{"text past the area", pvImage{size: 2 << 20, labelSector: 1, id: id,
			mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: text, at: 512, damage: func(a []byte) { put64(a[48:], 64<<10); put32(a, crc(a[4:512])) }}}}, 0, 0, false, "in an area of"},
		{"metadata does not parse", pvImage{size: 2 << 20, labelSector: 1, id: id,
			mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: "vg { id = }", at: 512}}}, 0, 0, false, "metadata line 1"},
		{"no label", pvImage{size: 2 << 20, labelSector: 1, id: id, damage: func(img []byte) { copy(img[512:], "NOTLABEL") }}, 0, 0, false, "no LVM2 label"},
		{"label checksum wrong", pvImage{size: 2 << 20, labelSector: 1, id: id, damage: func(img []byte) { img[600] ^= 1 }}, 0, 0, false, "no LVM2 label"},
		{"label sector number wrong", pvImage{size: 2 << 20, labelSector: 2, id: id, damage: func(img []byte) {
			put64(img[1024+8:], 1)
			put32(img[1024+16:], crc(img[1024+20:1536]))
		}}, 0, 0, false, "no LVM2 label"},
		{"label type wrong", pvImage{size: 2 << 20, labelSector: 1, id: id, damage: func(img []byte) {
			copy(img[512+24:], "LVM1 001")
			put32(img[512+16:], crc(img[512+20:1024]))
		}}, 0, 0, false, `type "LVM1 001"`},
		{"bad PV uuid", pvImage{size: 2 << 20, labelSector: 1, id: "0000001111222233334444555566666$"}, 0, 0, false, "PV uuid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pv, err := ReadPV(bytes.NewReader(tt.img.bytes()))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ReadPV = %+v, %v; want an error containing %q", pv, err, tt.wantErr)
				}
				if tt.wantErr == "no LVM2 label" && !errors.Is(err, ErrNoLabel) {
					t.Errorf("err = %v, want ErrNoLabel", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if pv.UUID != "000000-1111-2222-3333-4444-5555-666666" || pv.LabelSector != tt.wantSector || pv.Size != 2<<20 {
				t.Errorf("PV %s in sector %d, size %d", pv.UUID, pv.LabelSector, pv.Size)
			}
			if diff := cmp.Diff([]Area{{Offset: 1 << 20}}, pv.DataAreas); diff != "" {
				t.Errorf("data areas (-want +got):\n%s", diff)
			}
			var seqno uint64
			if pv.VG != nil {
				seqno = pv.VG.Seqno
			}
			if seqno != tt.wantSeqno || pv.wrapped != tt.wantWrapped {
				t.Errorf("VG seqno %d wrapped %v, want %d, %v", seqno, pv.wrapped, tt.wantSeqno, tt.wantWrapped)
			}
		})
	}
}

func TestReadPVShortDevice(t *testing.T) {
	for _, n := range []int{0, 100, 512, 1500} {
		if _, err := ReadPV(bytes.NewReader(make([]byte, n))); !errors.Is(err, ErrNoLabel) {
			t.Errorf("%d-byte device: err = %v, want ErrNoLabel", n, err)
		}
	}
	// A label pointing at a metadata area past the end of the device.
	img := pvImage{size: 2 << 20, labelSector: 1, id: testPVID, mdas: []mdaSpec{{offset: 4096, size: 64 << 10, text: "x = 1", at: 512}}}.bytes()
	if _, err := ReadPV(bytes.NewReader(img[:8192])); err == nil {
		t.Error("metadata area past the end: no error")
	}
}

func TestAssemble(t *testing.T) {
	text := vgText(linearLV("a", "pv0", 0, 10) + linearLV("b", "pv1", 0, 10))
	old, err := ParseMetadata([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	cur, err := ParseMetadata([]byte(strings.Replace(text, "seqno = 7", "seqno = 9", 1)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := ParseMetadata([]byte(strings.NewReplacer("\nvg {", "\nother {", "aaaaaa-bbbb", "zzzzzz-bbbb",
		"000000-1111", "OOOOOO-1111", "777777-8888", "QQQQQQ-8888").Replace(text)))
	if err != nil {
		t.Fatal(err)
	}
	pvs := []*PV{
		{UUID: "000000-1111-2222-3333-4444-5555-666666", Device: "/dev/nbd0", VG: old},
		{UUID: "777777-8888-9999-AAAA-BBBB-CCCC-DDDDDD", Device: "/dev/nbd1", VG: cur},
		{UUID: "OOOOOO-1111-2222-3333-4444-5555-666666", Device: "/dev/sdb", VG: other},
		{UUID: "QQQQQQ-8888-9999-AAAA-BBBB-CCCC-DDDDDD", Device: "/dev/sdc"}, // no metadata copy
		{UUID: "UNUSED-0000-0000-0000-0000-0000-000000", Device: "/dev/sdd"}, // orphan
	}
	vgs, err := Assemble(pvs)
	if err != nil {
		t.Fatal(err)
	}
	if len(vgs) != 2 || vgs[0].Name != "other" || vgs[1].Name != "vg" {
		t.Fatalf("VGs %v", vgs)
	}
	vg, ok := Find(vgs, "vg")
	if !ok || vg.Seqno != 9 || vg.PVs[0].Device != "/dev/nbd0" || vg.PVs[1].Device != "/dev/nbd1" {
		t.Errorf("vg: seqno %d, devices %q %q", vg.Seqno, vg.PVs[0].Device, vg.PVs[1].Device)
	}
	if cur.PVs[0].Device != "" {
		t.Error("Assemble changed the PV's own VG")
	}
	o, _ := Find(vgs, "other")
	if o.PVs[1].Device != "/dev/sdc" {
		t.Errorf("PV without metadata not matched: %q", o.PVs[1].Device)
	}

	// The same PV on two devices: its LVs are refused, the others activate.
	dup := append(pvs, &PV{UUID: "777777-8888-9999-AAAA-BBBB-CCCC-DDDDDD", Device: "/dev/sda"})
	vgs, err = Assemble(dup)
	if err != nil {
		t.Fatal(err)
	}
	vg, _ = Find(vgs, "vg")
	if _, err := vg.Table("a"); err != nil {
		t.Errorf("LV a: %v", err)
	}
	var me *MissingPVError
	if _, err := vg.Table("b"); !errors.As(err, &me) || len(me.Duplicates) != 2 {
		t.Errorf("LV b on a duplicated PV: %v", err)
	}

	// Two VGs of one name: refused.
	twin, err := ParseMetadata([]byte(strings.Replace(text, "aaaaaa-bbbb", "yyyyyy-bbbb", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Assemble(append(pvs, &PV{UUID: "TWINPV-0000-0000-0000-0000-0000-000000", Device: "/dev/sde", VG: twin})); err == nil || !strings.Contains(err.Error(), "two volume groups are named vg") {
		t.Errorf("two VGs named vg: %v", err)
	}
}
