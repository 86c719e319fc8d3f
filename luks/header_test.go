package luks

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
)

// Helpers that edit LUKS2 images the way a careful attacker or a failing disk would, then
// re-seal the checksums where the test wants a "valid" header.

// luks2HdrSize reads hdr_size of the primary header of img.
func luks2HdrSize(img []byte) int64 {
	return int64(binary.BigEndian.Uint64(img[luks2OffHdrSize:]))
}

// sealLUKS2 recomputes the sha256 checksum of the header copy at off.
func sealLUKS2(img []byte, off int64) {
	size := int64(binary.BigEndian.Uint64(img[off+luks2OffHdrSize:]))
	area := img[off : off+size]
	clear(area[luks2OffCsum : luks2OffCsum+luks2CsumLen])
	sum := sha256.Sum256(area)
	copy(area[luks2OffCsum:], sum[:])
}

// editLUKS2JSON rewrites the JSON metadata of both copies with edit and reseals them.
func editLUKS2JSON(t testing.TB, img []byte, edit func(m map[string]any)) {
	t.Helper()
	size := luks2HdrSize(img)
	for _, off := range []int64{0, size} {
		area := img[off+luks2BinSize : off+size]
		js := area
		if i := bytes.IndexByte(js, 0); i >= 0 {
			js = js[:i]
		}
		var m map[string]any
		if err := json.Unmarshal(js, &m); err != nil {
			t.Fatal(err)
		}
		edit(m)
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) > len(area) {
			t.Fatalf("edited JSON of %d bytes does not fit", len(out))
		}
		clear(area)
		copy(area, out)
		sealLUKS2(img, off)
	}
}

// obj walks a path of object keys in decoded JSON.
func obj(m map[string]any, path ...string) map[string]any {
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	return m
}

var (
	baseLUKS2Once sync.Once
	baseLUKS2     []byte
	baseLUKS2Key  []byte
	baseLUKS2Err  string
)

const basePass = "base passphrase"

// baseLUKS2Image is a LUKS2 image made once by cryptsetup (16 KiB metadata, 1 MiB of
// keyslots, one PBKDF2 keyslot), trimmed to its headers and keyslot area; tests edit
// copies of it.
func baseLUKS2Image(t *testing.T) (img, key []byte) {
	t.Helper()
	needCryptsetup(t)
	baseLUKS2Once.Do(func() {
		dir, err := os.MkdirTemp("", "luks-base-")
		if err != nil {
			baseLUKS2Err = err.Error()
			return
		}
		defer os.RemoveAll(dir)
		path := luksFormat(t, dir, 4<<20, []byte(basePass), cat([]string{"--type", "luks2",
			"--luks2-metadata-size", "16k", "--luks2-keyslots-size", "1m", "--sector-size", "4096"}, fastPBKDF2)...)
		baseLUKS2Key = dumpVolumeKey(t, path, []byte(basePass))
		b, err := os.ReadFile(path)
		if err != nil {
			baseLUKS2Err = err.Error()
			return
		}
		baseLUKS2 = b
	})
	if baseLUKS2Err != "" {
		t.Fatal(baseLUKS2Err)
	}
	return bytes.Clone(baseLUKS2), baseLUKS2Key
}

func openBytes(img []byte) (*Volume, error) { return Open(bytes.NewReader(img)) }

// TestLUKS2HeaderCopies damages one or both header copies of a cryptsetup image and checks
// which copy is used, what is reported, and that the right key still comes out.
func TestLUKS2HeaderCopies(t *testing.T) {
	tests := []struct {
		name     string
		damage   func(img []byte)
		wantCopy string // "" when Open must fail
		problem  string // expected in HeaderProblem or in the error
	}{
		{"intact", func([]byte) {}, "primary", ""},
		{"primary JSON byte flipped", func(img []byte) { img[luks2BinSize+40] ^= 1 }, "secondary", "primary header at offset 0: sha256 checksum mismatch"},
		{"primary checksum field damaged", func(img []byte) { img[luks2OffCsum] ^= 0xff }, "secondary", "checksum mismatch"},
		{"primary magic wiped", func(img []byte) { clear(img[:6]) }, "secondary", "no LUKS2 magic"},
		{"primary binary header zeroed", func(img []byte) { clear(img[:luks2BinSize]) }, "secondary", "no LUKS2 magic"},
		{"secondary JSON byte flipped", func(img []byte) { img[0x4000+luks2BinSize+40] ^= 1 }, "primary", "secondary header at offset 16384: sha256 checksum mismatch"},
		{"secondary newer", func(img []byte) {
			binary.BigEndian.PutUint64(img[0x4000+luks2OffSeqID:], binary.BigEndian.Uint64(img[luks2OffSeqID:])+1)
			sealLUKS2(img, 0x4000)
		}, "secondary", "primary header has an older sequence id"},
		{"primary newer", func(img []byte) {
			binary.BigEndian.PutUint64(img[luks2OffSeqID:], binary.BigEndian.Uint64(img[0x4000+luks2OffSeqID:])+1)
			sealLUKS2(img, 0)
		}, "primary", "secondary header has an older sequence id"},
		{"primary claims another offset", func(img []byte) {
			binary.BigEndian.PutUint64(img[luks2OffHdrOffset:], 512)
			sealLUKS2(img, 0)
		}, "secondary", "header says it is at offset 512"},
		{"primary with unknown checksum algorithm", func(img []byte) {
			copy(img[luks2OffCsumAlg:], "crc32\x00")
			sealLUKS2(img, 0)
		}, "secondary", `unsupported hash "crc32"`},
		{"both JSON areas damaged", func(img []byte) {
			img[luks2BinSize+40] ^= 1
			img[0x4000+luks2BinSize+40] ^= 1
		}, "", "both LUKS2 header copies are unusable: primary: corrupt primary header at offset 0: sha256 checksum mismatch; secondary: corrupt secondary header at offset 16384: sha256 checksum mismatch"},
		{"primary damaged, secondary wiped", func(img []byte) {
			img[luks2BinSize+40] ^= 1
			clear(img[0x4000 : 0x4000+6])
		}, "", "secondary: corrupt secondary header at offset -1: no LUKS2 magic at any of the standard offsets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, want := baseLUKS2Image(t)
			tc.damage(img)
			v, err := openBytes(img)
			if tc.wantCopy == "" {
				if err == nil {
					t.Fatalf("Open succeeded with copy %s", v.HeaderCopy)
				}
				var both *HeaderCopiesError
				var corrupt *CorruptHeaderError
				if !errors.As(err, &both) || !errors.As(err, &corrupt) {
					t.Errorf("err = %T %v, want a HeaderCopiesError holding CorruptHeaderErrors", err, err)
				}
				if !strings.Contains(err.Error(), tc.problem) {
					t.Errorf("err = %q\nwant it to contain %q", err, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if v.HeaderCopy != tc.wantCopy {
				t.Errorf("HeaderCopy = %s, want %s", v.HeaderCopy, tc.wantCopy)
			}
			switch {
			case tc.problem == "" && v.HeaderProblem != nil:
				t.Errorf("HeaderProblem = %v, want none", v.HeaderProblem)
			case tc.problem != "" && (v.HeaderProblem == nil || !strings.Contains(v.HeaderProblem.Error(), tc.problem)):
				t.Errorf("HeaderProblem = %v, want it to contain %q", v.HeaderProblem, tc.problem)
			}
			key, err := v.Unlock([]byte(basePass), nil)
			if err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			if !bytes.Equal(key.Bytes(), want) {
				t.Error("wrong volume key from the fallback copy")
			}
		})
	}
}

// TestLUKS2LargerMetadataFallback checks the secondary copy is found by scanning when the
// primary (which would have said where it is) is gone, for a non-default header size.
func TestLUKS2LargerMetadataFallback(t *testing.T) {
	needCryptsetup(t)
	pass := []byte("pw")
	path := luksFormat(t, t.TempDir(), 8<<20, pass, cat([]string{"--type", "luks2",
		"--luks2-metadata-size", "256k", "--luks2-keyslots-size", "2m"}, fastPBKDF2)...)
	want := dumpVolumeKey(t, path, pass)
	img := readFile(t, path)
	clear(img[:luks2BinSize])
	v, err := openBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	if v.HeaderCopy != "secondary" {
		t.Errorf("HeaderCopy = %s", v.HeaderCopy)
	}
	key, err := v.Unlock(pass, nil)
	if err != nil || !bytes.Equal(key.Bytes(), want) {
		t.Fatalf("Unlock = %v, %v", key, err)
	}
}

func TestOpenNotLUKS(t *testing.T) {
	for name, img := range map[string][]byte{
		"empty":  {},
		"short":  []byte("LUKS\xba\xbe\x00\x02"),
		"zeros":  make([]byte, 1<<20),
		"random": bytes.Repeat([]byte("not a luks header at all "), 1<<15),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := openBytes(img); !errors.Is(err, ErrNotLUKS) {
				t.Errorf("Open = %v, want ErrNotLUKS", err)
			}
		})
	}
	t.Run("version 3", func(t *testing.T) {
		img := append([]byte("LUKS\xba\xbe\x00\x03"), make([]byte, 8192)...)
		var u *UnsupportedError
		if _, err := openBytes(img); !errors.As(err, &u) || u.Name != "3" {
			t.Errorf("Open = %v, want UnsupportedError for version 3", err)
		}
	})
}

// TestLUKS2Metadata edits the JSON metadata of a real image (keeping the checksums valid)
// and checks how each field is read, refused or reported.
func TestLUKS2Metadata(t *testing.T) {
	type check func(t *testing.T, v *Volume, err error)
	wantCorrupt := func(substr string) check {
		return func(t *testing.T, v *Volume, err error) {
			var c *CorruptHeaderError
			if !errors.As(err, &c) || !strings.Contains(err.Error(), substr) {
				t.Errorf("Open = %v, want a CorruptHeaderError mentioning %q", err, substr)
			}
		}
	}
	wantUnsupported := func(what, name string) check {
		return func(t *testing.T, v *Volume, err error) {
			var u *UnsupportedError
			if !errors.As(err, &u) || u.What != what || !strings.Contains(u.Name, name) {
				t.Errorf("Open = %v, want UnsupportedError{%s, %s}", err, what, name)
			}
		}
	}
	tests := []struct {
		name  string
		edit  func(m map[string]any)
		check check
	}{
		{"persistent flags", func(m map[string]any) {
			obj(m, "config")["flags"] = []any{"allow-discards", "no-read-workqueue", "no-journal"}
		}, func(t *testing.T, v *Volume, err error) {
			if err != nil {
				t.Fatal(err)
			}
			tb, err := v.Table(NewVolumeKey(make([]byte, 64)), TableOptions{Device: "/dev/nbd0", DeviceSize: 4 << 20})
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(tb.Flags, ","); got != "allow_discards,no_read_workqueue" {
				t.Errorf("table flags = %s", got)
			}
		}},
		{"fixed size and iv tweak", func(m map[string]any) {
			s := obj(m, "segments", "0")
			s["size"] = "1048576"
			s["iv_tweak"] = "8"
		}, func(t *testing.T, v *Volume, err error) {
			if err != nil {
				t.Fatal(err)
			}
			if v.Segment.Dynamic || v.Segment.Size != 1<<20 || v.Segment.IVTweak != 8 {
				t.Errorf("segment = %+v", v.Segment)
			}
		}},
		{"mandatory requirement", func(m map[string]any) {
			obj(m, "config")["requirements"] = map[string]any{"mandatory": []any{"online-reencrypt-v2"}}
		}, wantUnsupported("requirement", "online-reencrypt-v2")},
		{"integrity segment", func(m map[string]any) {
			obj(m, "segments", "0")["integrity"] = map[string]any{"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}
		}, wantUnsupported("segment", "integrity")},
		{"linear segment", func(m map[string]any) { obj(m, "segments", "0")["type"] = "linear" }, wantUnsupported("segment type", "linear")},
		{"two data segments", func(m map[string]any) {
			s := obj(m, "segments")
			s["1"] = s["0"]
		}, wantUnsupported("segment layout", "2 data segments")},
		{"backup segment ignored", func(m map[string]any) {
			s := obj(m, "segments")
			b := map[string]any{}
			for k, v := range obj(m, "segments", "0") {
				b[k] = v
			}
			b["flags"] = []any{"backup-previous"}
			s["1"] = b
		}, func(t *testing.T, v *Volume, err error) {
			if err != nil || v.Segment.ID != 0 {
				t.Errorf("Open = %v, segment %+v", err, v)
			}
		}},
		{"table injection in encryption", func(m map[string]any) {
			obj(m, "segments", "0")["encryption"] = "aes-xts-plain64 0 /dev/sda 0"
		}, wantCorrupt("not allowed")},
		{"offset as number", func(m map[string]any) { obj(m, "segments", "0")["offset"] = 16384 }, wantCorrupt("want a decimal string")},
		{"negative offset", func(m map[string]any) { obj(m, "segments", "0")["offset"] = "-1" }, wantCorrupt("want a decimal string")},
		{"sector size 1000", func(m map[string]any) { obj(m, "segments", "0")["sector_size"] = 1000 }, wantCorrupt("sector_size 1000")},
		{"keyslot area outside", func(m map[string]any) {
			obj(m, "keyslots", "0", "area")["offset"] = "999999999999"
		}, wantCorrupt("outside the keyslots area")},
		{"keyslot id not a number", func(m map[string]any) {
			k := obj(m, "keyslots")
			k["x"] = k["0"]
		}, wantCorrupt(`id "x"`)},
		{"digest names missing keyslot", func(m map[string]any) {
			obj(m, "digests", "0")["keyslots"] = []any{"0", "7"}
		}, wantCorrupt("keyslot 7, which does not exist")},
		{"huge stripes", func(m map[string]any) { obj(m, "keyslots", "0", "af")["stripes"] = 100000000 }, wantCorrupt("stripes")},
		{"huge key", func(m map[string]any) { obj(m, "keyslots", "0")["key_size"] = 1 << 20 }, wantCorrupt("key_size")},
		{"json_size mismatch", func(m map[string]any) { obj(m, "config")["json_size"] = "4096" }, wantCorrupt("json_size")},
		{"bad priority", func(m map[string]any) { obj(m, "keyslots", "0")["priority"] = 7 }, wantCorrupt("priority 7")},
		{"not JSON object", func(m map[string]any) { delete(m, "digests") }, wantCorrupt("missing")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := baseLUKS2Image(t)
			editLUKS2JSON(t, img, tc.edit)
			v, err := openBytes(img)
			tc.check(t, v, err)
		})
	}
}

// TestUnlockReportsUnusableKeyslots checks keyslots we cannot run are named, not mistaken
// for a wrong passphrase, and cost no KDF time.
func TestUnlockReportsUnusableKeyslots(t *testing.T) {
	tests := []struct {
		name string
		edit func(m map[string]any)
		want string
	}{
		{"scrypt kdf", func(m map[string]any) { obj(m, "keyslots", "0", "kdf")["type"] = "scrypt" }, `keyslot 0: unsupported kdf "scrypt"`},
		{"serpent area", func(m map[string]any) { obj(m, "keyslots", "0", "area")["encryption"] = "serpent-xts-plain64" }, `unsupported cipher "serpent-xts-plain64"`},
		{"whirlpool af", func(m map[string]any) { obj(m, "keyslots", "0", "af")["hash"] = "whirlpool" }, `unsupported hash "whirlpool"`},
		{"reencrypt keyslot", func(m map[string]any) { obj(m, "keyslots", "0")["type"] = "reencrypt" }, `unsupported keyslot type "reencrypt"`},
		{"unbound keyslot", func(m map[string]any) { obj(m, "digests", "0")["segments"] = []any{} }, "not bound to the data segment"},
		{"digest type", func(m map[string]any) { obj(m, "digests", "0")["type"] = "hmac" }, `unsupported digest type "hmac"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, _ := baseLUKS2Image(t)
			editLUKS2JSON(t, img, tc.edit)
			v, err := openBytes(img)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Unlock([]byte(basePass), nil)
			var ke *KeyslotError
			if err == nil || errors.Is(err, ErrWrongPassphrase) || !errors.As(err, &ke) || ke.Keyslot != 0 {
				t.Fatalf("Unlock = %v, want a KeyslotError for keyslot 0 and not ErrWrongPassphrase", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Unlock = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLUKS1Corrupt(t *testing.T) {
	needCryptsetup(t)
	pass := []byte("pw")
	path := luksFormat(t, t.TempDir(), 4<<20, pass, cat([]string{"--type", "luks1"}, fastLUKS1)...)
	base := readFile(t, path)
	tests := []struct {
		name   string
		damage func(h []byte)
		want   string
	}{
		{"keyslot state", func(h []byte) { binary.BigEndian.PutUint32(h[208+48:], 0x12345678) }, "keyslot 1: state 0x12345678"},
		{"key bytes 0", func(h []byte) { binary.BigEndian.PutUint32(h[108:], 0) }, "key-bytes 0"},
		{"key bytes huge", func(h []byte) { binary.BigEndian.PutUint32(h[108:], 1<<30) }, "key-bytes 1073741824"},
		{"stripes huge", func(h []byte) { binary.BigEndian.PutUint32(h[208+44:], 1<<31) }, "keyslot 0: 2147483648 stripes"},
		{"keyslot over header", func(h []byte) { binary.BigEndian.PutUint32(h[208+40:], 0) }, "overlaps the header"},
		{"cipher with space", func(h []byte) { copy(h[40:], "xts plain64") }, "not allowed"},
		{"mk iterations 0", func(h []byte) { binary.BigEndian.PutUint32(h[164:], 0) }, "mk-digest-iter is 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img := bytes.Clone(base)
			tc.damage(img)
			_, err := openBytes(img)
			var c *CorruptHeaderError
			if !errors.As(err, &c) || c.Copy != "luks1" || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Open = %v, want a LUKS1 CorruptHeaderError mentioning %q", err, tc.want)
			}
		})
	}
}
