package luks

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVolumeTable(t *testing.T) {
	key := NewVolumeKey(bytes.Repeat([]byte{0x11, 0x22}, 32))
	hexKey := hex.EncodeToString(key.Bytes())
	luks2 := func(s Segment, flags ...string) *Volume {
		return &Volume{Version: 2, UUID: "2f9e1497-2e30-423f-9aad-d13028319b33", Segment: s, Flags: flags}
	}
	dyn4k := Segment{Offset: 16 << 20, Dynamic: true, Cipher: "aes-xts-plain64", SectorSize: 4096}
	tests := []struct {
		name    string
		v       *Volume
		opts    TableOptions
		want    string // params after "crypt"
		length  uint64
		wantErr string
	}{
		{"luks2 dynamic 4096", luks2(dyn4k), TableOptions{Device: "/dev/nbd0", DeviceSize: 1 << 30},
			"aes-xts-plain64 " + hexKey + " 0 /dev/nbd0 32768 1 sector_size:4096", (1<<30 - 16<<20) / 512, ""},
		{"luks1 essiv", &Volume{Version: 1, UUID: "u-1", Segment: Segment{Offset: 2 << 20, Dynamic: true, Cipher: "aes-cbc-essiv:sha256", SectorSize: 512}},
			TableOptions{Device: "43:0", DeviceSize: 100 << 20},
			"aes-cbc-essiv:sha256 " + hexKey + " 0 43:0 4096", (100<<20 - 2<<20) / 512, ""},
		{"header and option flags, both spellings, in cryptsetup's order", luks2(dyn4k, "no-write-workqueue", "no-journal"),
			TableOptions{Device: "/dev/nbd0", DeviceSize: 1 << 30, Flags: []string{"allow_discards", "no-read-workqueue", "allow-discards"}},
			"aes-xts-plain64 " + hexKey + " 0 /dev/nbd0 32768 4 allow_discards no_read_workqueue no_write_workqueue sector_size:4096", (1<<30 - 16<<20) / 512, ""},
		{"fixed size with iv tweak", luks2(Segment{Offset: 1 << 20, Size: 8 << 20, IVTweak: 2048, Cipher: "capi:xts(aes)-plain64", SectorSize: 512}),
			TableOptions{Device: "/dev/nbd1", DeviceSize: 1 << 30},
			"capi:xts(aes)-plain64 " + hexKey + " 2048 /dev/nbd1 2048", 8 << 20 / 512, ""},
		{"large iv", luks2(Segment{Offset: 0, Dynamic: true, Cipher: "aes-xts-plain64", SectorSize: 4096, LargeIV: true}),
			TableOptions{Device: "/dev/nbd0", DeviceSize: 1 << 20},
			"aes-xts-plain64 " + hexKey + " 0 /dev/nbd0 0 2 iv_large_sectors sector_size:4096", 2048, ""},
		{"unknown option", luks2(dyn4k), TableOptions{Device: "/dev/nbd0", DeviceSize: 1 << 30, Flags: []string{"discard"}}, "", 0, `unsupported activation flag "discard"`},
		{"no device", luks2(dyn4k), TableOptions{DeviceSize: 1 << 30}, "", 0, "device"},
		{"device with space", luks2(dyn4k), TableOptions{Device: "/dev/nbd0 1", DeviceSize: 1 << 30}, "", 0, "not allowed"},
		{"dynamic without size", luks2(dyn4k), TableOptions{Device: "/dev/nbd0"}, "", 0, "device size is not known"},
		{"device smaller than offset", luks2(dyn4k), TableOptions{Device: "/dev/nbd0", DeviceSize: 1 << 20}, "", 0, "ends before the data offset"},
		{"device not sector aligned", luks2(dyn4k), TableOptions{Device: "/dev/nbd0", DeviceSize: 1<<30 + 512}, "", 0, "not a multiple of the 4096-byte sector"},
		{"fixed segment beyond device", luks2(Segment{Offset: 1 << 20, Size: 8 << 20, Cipher: "aes-xts-plain64", SectorSize: 512}),
			TableOptions{Device: "/dev/nbd0", DeviceSize: 4 << 20}, "", 0, "beyond the device end"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb, err := tc.v.Table(key, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Table = %v, want error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(tb.appendParams(nil))); diff != "" {
				t.Errorf("params (-want +got):\n%s", diff)
			}
			if tb.Length != tc.length {
				t.Errorf("length = %d sectors, want %d", tb.Length, tc.length)
			}
			if !strings.HasPrefix(tb.UUIDPrefix, fmt.Sprintf("CRYPT-LUKS%d-", tc.v.Version)) || strings.Contains(tb.UUIDPrefix[12:], "-") {
				t.Errorf("UUIDPrefix = %q", tb.UUIDPrefix)
			}
			// The table owns a copy of the key.
			tb.Wipe()
			if !bytes.Equal(key.Bytes(), bytes.Repeat([]byte{0x11, 0x22}, 32)) {
				t.Error("Table.Wipe wiped the caller's key")
			}
		})
	}
}

func TestTableStringRedactsKey(t *testing.T) {
	tb := testTable()
	s := tb.String()
	want := "0 65536 crypt aes-xts-plain64 <64-byte key redacted> 0 /dev/nbd0 32768 2 allow_discards sector_size:4096"
	if s != want {
		t.Errorf("String() =\n %q\nwant\n %q", s, want)
	}
	if strings.Contains(s, "abab") || strings.Contains(fmt.Sprintf("%v %+v", tb, tb), "abababab") {
		t.Error("the key shows through String or when the table is printed")
	}
	k := NewVolumeKey([]byte{0xab, 0xab, 0xab, 0xab})
	for _, f := range []string{"%v", "%+v", "%s", "%#v"} {
		if out := fmt.Sprintf(f, k); strings.Contains(out, "ab") || strings.Contains(out, "171") {
			t.Errorf("Sprintf(%s, key) = %q shows the key", f, out)
		}
	}
}

func TestDMFlag(t *testing.T) {
	for in, want := range map[string]string{
		"allow-discards": "allow_discards", "allow_discards": "allow_discards",
		"no-read-workqueue": "no_read_workqueue", "no-write-workqueue": "no_write_workqueue",
		"same-cpu-crypt": "same_cpu_crypt", "submit-from-crypt-cpus": "submit_from_crypt_cpus",
	} {
		if got, ok := DMFlag(in); !ok || got != want {
			t.Errorf("DMFlag(%q) = %q, %v", in, got, ok)
		}
	}
	for _, bad := range []string{"discard", "", "tries=3", "iv_large_sectors", "sector_size:4096"} {
		if _, ok := DMFlag(bad); ok {
			t.Errorf("DMFlag(%q) accepted", bad)
		}
	}
}

func TestTableFromCryptsetupImage(t *testing.T) {
	img, keyBytes := baseLUKS2Image(t)
	v, err := openBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	key, err := v.Unlock([]byte(basePass), nil)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "img")
	writeFile(t, path, img)
	offset := dumpDataOffset(t, path)
	size := int64(len(img))
	tb, err := v.Table(key, TableOptions{Device: "/dev/nbd0", DeviceSize: size})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("aes-xts-plain64 %x 0 /dev/nbd0 %d 1 sector_size:4096", keyBytes, offset/512)
	if got := string(tb.appendParams(nil)); got != want {
		t.Errorf("params\n got %s\nwant %s", got, want)
	}
	if tb.Length != uint64(size-offset)/512 {
		t.Errorf("length %d sectors, want %d", tb.Length, (size-offset)/512)
	}
	var u *UnsupportedError
	if _, err := v.Table(key, TableOptions{Device: "/dev/nbd0", DeviceSize: size, Flags: []string{"bogus"}}); !errors.As(err, &u) {
		t.Errorf("bogus flag: %v", err)
	}
}
