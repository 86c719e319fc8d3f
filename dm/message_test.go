package dm

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestMessageLayout checks the DM_TABLE_LOAD buffer byte for byte against a layout
// written out by hand from include/uapi/linux/dm-ioctl.h.
func TestMessageLayout(t *testing.T) {
	params := []byte("aes-xts-plain64 0011 0 /dev/nbd0 32768") // 38 bytes
	got, err := Message{Name: "nbdcrypt", UUID: "CRYPT-LUKS2-abc-nbdcrypt", Flags: SecureData | ReadOnly,
		Targets: []Target{{Start: 0, Length: 1 << 20, Type: "crypt", Params: params}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// struct dm_target_spec is 40 bytes; params + NUL = 39; 79 rounds up to 80.
	const recLen = 80
	want := make([]byte, 312+recLen)
	ne := binary.NativeEndian
	ne.PutUint32(want[0:], 4)                    // version[0]
	ne.PutUint32(want[4:], 0)                    // version[1]
	ne.PutUint32(want[8:], 0)                    // version[2]
	ne.PutUint32(want[12:], 312+recLen)          // data_size
	ne.PutUint32(want[16:], 312)                 // data_start
	ne.PutUint32(want[20:], 1)                   // target_count
	ne.PutUint32(want[24:], 0)                   // open_count
	ne.PutUint32(want[28:], 1<<15|1)             // flags: DM_SECURE_DATA_FLAG|DM_READONLY_FLAG
	ne.PutUint32(want[32:], 0)                   // event_nr
	ne.PutUint64(want[40:], 0)                   // dev
	copy(want[48:], "nbdcrypt")                  // name[128]
	copy(want[176:], "CRYPT-LUKS2-abc-nbdcrypt") // uuid[129], then data[7] up to 312
	spec := want[312:]
	ne.PutUint64(spec[0:], 0)       // sector_start
	ne.PutUint64(spec[8:], 1<<20)   // length
	ne.PutUint32(spec[16:], 0)      // status
	ne.PutUint32(spec[20:], recLen) // next: from this spec to the next
	copy(spec[24:], "crypt")        // target_type[16]
	copy(spec[40:], params)         // params, NUL, zero padding to 8
	if !bytes.Equal(got, want) {
		t.Fatalf("DM_TABLE_LOAD buffer differs:\n got %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(want))
	}
}

func TestMessageTwoTargetsAligned(t *testing.T) {
	buf, err := Message{Name: "x", Targets: []Target{
		{Start: 0, Length: 8, Type: "zero"},
		{Start: 8, Length: 8, Type: "error", Params: []byte("abcdefgh")},
	}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	first := buf[312:]
	next := ne.Uint32(first[20:])
	if next != 48 { // 40 + 1 (empty params, NUL) → 48
		t.Errorf("first next = %d, want 48", next)
	}
	second := first[next:]
	if got := ne.Uint32(second[20:]); got != 56 { // 40 + 9 → 56
		t.Errorf("second next = %d, want 56", got)
	}
	if got := cString(second[24:40]); got != "error" {
		t.Errorf("second target type = %q", got)
	}
	if len(buf) != 312+48+56 || int(ne.Uint32(buf[12:])) != len(buf) {
		t.Errorf("buffer of %d bytes, data_size %d", len(buf), ne.Uint32(buf[12:]))
	}
	if len(buf)%8 != 0 {
		t.Errorf("buffer of %d bytes is not 8-byte aligned", len(buf))
	}
}

func TestMessageRoundTrip(t *testing.T) {
	tests := []Message{
		{Name: "vg0-root", UUID: "LVM-abcdef", Flags: ReadOnly, Targets: []Target{
			{Start: 0, Length: 8192, Type: "linear", Params: []byte("7:0 2048")},
			{Start: 8192, Length: 16384, Type: "striped", Params: []byte("2 128 7:0 10240 7:1 2048")},
		}},
		{Name: "n"},
		{Name: "nbdcrypt", UUID: strings.Repeat("u", 128), Flags: SecureData, Targets: []Target{{Length: 1, Type: "zero", Params: []byte{}}}},
	}
	for _, m := range tests {
		t.Run(m.Name, func(t *testing.T) {
			buf, err := m.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseMessage(buf)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(m, got, cmp.Comparer(func(a, b []byte) bool { return bytes.Equal(a, b) })); diff != "" {
				t.Errorf("round trip (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "control", "a/b", "sp ace", strings.Repeat("n", 128), "tab\t", "del\x7f"} {
		if _, err := (Message{Name: name}).Encode(); err == nil {
			t.Errorf("Encode(%q) accepted the name", name)
		}
	}
	for _, name := range []string{"nbdcrypt", "root_crypt", "luks-0a1b", "vg--data-root", strings.Repeat("n", 127)} {
		if _, err := (Message{Name: name}).Encode(); err != nil {
			t.Errorf("Encode(%q): %v", name, err)
		}
	}
	if _, err := (Message{Name: "x", UUID: strings.Repeat("u", 129)}).Encode(); err == nil {
		t.Error("129-byte uuid accepted")
	}
	for _, typ := range []string{"", "a b", strings.Repeat("t", 16)} {
		if _, err := (Message{Name: "x", Targets: []Target{{Type: typ}}}).Encode(); err == nil {
			t.Errorf("target type %q accepted", typ)
		}
	}
}

func TestDecodeDev(t *testing.T) {
	tests := []struct {
		dev          uint64
		major, minor uint32
	}{
		{0xfd00, 253, 0},
		{0xfd01, 253, 1},
		{0x10fd2c, 253, 300}, // minor 300: low byte 0x2c, high part 0x100 << 12
		{0x0700, 7, 0},
		{0xfff00 | 0xff | 0xfff00<<12, 0xfff, 0xfffff},
	}
	for _, tc := range tests {
		ma, mi := decodeDev(tc.dev)
		if ma != tc.major || mi != tc.minor {
			t.Errorf("decodeDev(%#x) = %d:%d, want %d:%d", tc.dev, ma, mi, tc.major, tc.minor)
		}
		buf := make([]byte, ioctlSize)
		PutDev(buf, tc.major, tc.minor)
		if got := binary.NativeEndian.Uint64(buf[offDev:]); got != tc.dev {
			t.Errorf("PutDev(%d:%d) = %#x, want %#x", tc.major, tc.minor, got, tc.dev)
		}
	}
}

// FuzzParseMessage feeds arbitrary buffers to the decoder the fakes use: no panic, and a
// buffer that decodes re-encodes to one that decodes the same.
func FuzzParseMessage(f *testing.F) {
	seed, _ := Message{Name: "vg-lv", UUID: "LVM-x", Targets: []Target{{Length: 8, Type: "linear", Params: []byte("7:0 0")}}}.Encode()
	f.Add(seed)
	f.Add(make([]byte, ioctlSize))
	f.Fuzz(func(t *testing.T, buf []byte) {
		m, err := ParseMessage(buf)
		if err != nil {
			return
		}
		enc, err := m.Encode()
		if err != nil {
			return // names and types Encode refuses can come from a foreign buffer
		}
		again, err := ParseMessage(enc)
		if err != nil {
			t.Fatalf("re-encoded message does not parse: %v", err)
		}
		if again.Name != m.Name || again.UUID != m.UUID || len(again.Targets) != len(m.Targets) {
			t.Fatalf("round trip: %+v → %+v", m, again)
		}
	})
}
