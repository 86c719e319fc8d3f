package luks

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/dm"
)

// The header parsers read what the NBD server (or whoever controls it) hands the client,
// so they are fuzzed. Seeds are under testdata/fuzz/<FuzzName>/ (written by
// go test -run TestFixtures -update) and run as regression tests in plain go test.

// FuzzOpen modes: a LUKS2 image whose checksum is wrong stops at the checksum, so the
// fuzzer may ask for the primary copy's checksum to be fixed up (seal) and for the primary
// to be mirrored as a valid-looking secondary copy (mirror), to reach the JSON and the
// fallback logic.
const (
	fuzzSealPrimary = 1 << 0
	fuzzMirror      = 1 << 1
	fuzzPadAreas    = 1 << 2 // append 256 KiB of zeros so keyslot areas can be read (FuzzUnlock)
)

func FuzzOpen(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, mode byte) {
		img := fuzzImage(data, mode)
		v, err := Open(bytes.NewReader(img))
		if err != nil {
			checkOpenError(t, err)
			return
		}
		checkVolume(t, v)
	})
}

// FuzzUnlock runs the keyslot path (area bounds, decryption, AF merge, digest) on hostile
// headers whose costs are small; it is apart from FuzzOpen because a KDF per input makes
// it far slower. The image is always padded so keyslot areas can be read.
func FuzzUnlock(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, mode byte) {
		v, err := Open(bytes.NewReader(fuzzImage(data, mode|fuzzPadAreas)))
		if err != nil {
			return
		}
		fuzzUnlock(t, v)
	})
}

func FuzzLUKS1Header(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := decodeLUKS1(data)
		if err != nil {
			return
		}
		checkVolume(t, v)
	})
}

func FuzzLUKS2JSON(f *testing.F) {
	f.Fuzz(func(t *testing.T, js []byte) {
		m, err := parseLUKS2JSON(js)
		if err != nil {
			return
		}
		if err := m.checkAreas(0x4000); err != nil {
			return
		}
		v, err := (&luks2Copy{meta: m, hdrSize: 0x4000, uuid: "u"}).volume()
		if err != nil {
			var c *CorruptHeaderError
			var u *UnsupportedError
			if !errors.As(err, &c) && !errors.As(err, &u) {
				t.Fatalf("volume() error of unexpected type %T: %v", err, err)
			}
			return
		}
		checkVolume(t, v)
	})
}

func FuzzCipherSpec(f *testing.F) {
	for _, s := range []string{"aes-xts-plain64", "aes-cbc-essiv:sha256", "capi:xts(aes)-plain64", "aes-ecb", "aes-xts-plain64be", "aes-cbc-null"} {
		f.Add(s, uint8(64))
	}
	f.Fuzz(func(t *testing.T, spec string, keyLen uint8) {
		key := make([]byte, keyLen)
		for i := range key {
			key[i] = byte(i)
		}
		c, err := newSectorCipher(spec, key, 512, 0, false)
		if err != nil {
			return
		}
		if strings.ContainsAny(spec, " \n\t\x00") {
			t.Fatalf("cipher %q accepted although it would break a table line", spec)
		}
		plain := bytes.Repeat([]byte{0xa5}, 1024)
		buf := bytes.Clone(plain)
		if err := c.Encrypt(buf, buf, 7); err != nil {
			t.Fatal(err)
		}
		if err := c.Decrypt(buf, buf, 7); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, plain) {
			t.Fatalf("%s: decrypt(encrypt(x)) != x", spec)
		}
	})
}

// fuzzImage turns fuzz input into an image: LUKS2-looking input is padded to both header
// copies, and optionally mirrored and sealed (see the mode constants).
func fuzzImage(data []byte, mode byte) []byte {
	pad := int64(0)
	if mode&fuzzPadAreas != 0 {
		pad = 256 << 10
	}
	hdrSize := int64(0)
	if len(data) >= luks2BinSize {
		hdrSize = int64(binary.BigEndian.Uint64(data[luks2OffHdrSize:]))
	}
	if !slices.Contains(luks2HdrSizes, hdrSize) {
		return append(bytes.Clone(data), make([]byte, pad)...)
	}
	img := make([]byte, max(int64(len(data)), 2*hdrSize)+pad)
	copy(img, data)
	if mode&fuzzMirror != 0 {
		sec := img[hdrSize : 2*hdrSize]
		copy(sec, img[:hdrSize])
		copy(sec, magicSecondary)
		binary.BigEndian.PutUint64(sec[luks2OffHdrOffset:], uint64(hdrSize))
	}
	if mode&fuzzSealPrimary != 0 {
		sealLUKS2(img, 0)
		if mode&fuzzMirror != 0 {
			sealLUKS2(img, hdrSize)
		}
	}
	return img
}

// checkOpenError checks Open fails only with the documented error kinds.
func checkOpenError(t *testing.T, err error) {
	var c *CorruptHeaderError
	var h *HeaderCopiesError
	var u *UnsupportedError
	if !errors.Is(err, ErrNotLUKS) && !errors.As(err, &c) && !errors.As(err, &h) && !errors.As(err, &u) {
		t.Fatalf("Open error of unexpected type %T: %v", err, err)
	}
}

// checkVolume checks the invariants every parsed volume must satisfy, whatever the input:
// bounded allocations, table-safe strings, and a table that renders.
func checkVolume(t *testing.T, v *Volume) {
	if v.Version != 1 && v.Version != 2 {
		t.Fatalf("version %d", v.Version)
	}
	for _, k := range v.Keyslots {
		if k.Type != "luks1" && k.Type != "luks2" {
			continue
		}
		if k.KeySize <= 0 || k.KeySize > maxKeySize || k.Stripes <= 0 || k.Stripes > maxStripes {
			t.Fatalf("keyslot %d: key size %d, stripes %d accepted", k.ID, k.KeySize, k.Stripes)
		}
		if k.afLength() > maxKeySize*maxStripes+511 || k.AreaOffset < 0 {
			t.Fatalf("keyslot %d: unbounded area %d at %d", k.ID, k.afLength(), k.AreaOffset)
		}
	}
	s := v.Segment
	if !validSectorSize(s.SectorSize) || s.Offset < 0 || s.Offset%512 != 0 {
		t.Fatalf("segment %+v accepted", s)
	}
	if err := checkTableToken("cipher", s.Cipher, maxCipherSpecLen); err != nil {
		t.Fatalf("segment cipher %q accepted: %v", s.Cipher, err)
	}
	key := NewVolumeKey(make([]byte, 64))
	devSize := s.Offset + int64(s.SectorSize)*16
	if !s.Dynamic {
		devSize = s.Offset + s.Size
	}
	tb, err := v.Table(key, TableOptions{Device: "/dev/nbd0", DeviceSize: devSize})
	if err != nil {
		return
	}
	p := string(tb.appendParams(nil))
	if strings.ContainsAny(p, "\n\x00") || len(strings.Fields(p)) < 5 {
		t.Fatalf("table params %q", p)
	}
	if _, err := (dm.Message{Name: "fuzz", UUID: tb.UUIDPrefix[:min(len(tb.UUIDPrefix), 100)],
		Targets: []dm.Target{{Length: tb.Length, Type: "crypt", Params: []byte(p)}}}).Encode(); err != nil {
		t.Fatalf("dm message: %v", err)
	}
}

// fuzzUnlock runs Unlock when the header's total KDF work is small enough to finish
// quickly (a hostile header may ask for hours; that is the KDF's nature, not a bug),
// checking the keyslot path (area bounds, AF, digests) never panics on hostile values.
func fuzzUnlock(t *testing.T, v *Volume) {
	// PBKDF2 work in HMAC calls: iterations times output blocks (20 bytes at least).
	work := 0
	for _, k := range v.Keyslots {
		if k.KDF.Time > 4 || k.KDF.Memory > 256 || k.KDF.CPUs > 4 {
			return
		}
		work += int(k.KDF.Iterations) * (k.AreaKeySize/20 + 1)
	}
	for _, d := range v.Digests {
		work += int(d.Iterations) * (len(d.Value)/20 + 1) * len(v.Keyslots)
	}
	if work > 50000 {
		return
	}
	key, err := v.Unlock([]byte("fixture two"), &UnlockOptions{MaxMemoryKiB: 256})
	if err == nil {
		if v.VerifyKey(key) != nil {
			t.Fatal("Unlock returned a key the digest rejects")
		}
		return
	}
	var ke *KeyslotError
	if !errors.Is(err, ErrWrongPassphrase) && !errors.As(err, &ke) && !strings.Contains(err.Error(), "keyslot") {
		t.Fatalf("Unlock error of unexpected kind %T: %v", err, err)
	}
}
