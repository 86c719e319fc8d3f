package luks

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	mrand "math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/xts"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// IEEE Std 1619-2007 Annex B test vectors for XTS-AES (vectors 1, 2, 3 and 10).
var xtsVectors = []struct {
	name, key  string
	sector     uint64
	plain, enc string
}{
	{"vector 1", "00000000000000000000000000000000" + "00000000000000000000000000000000", 0,
		"0000000000000000000000000000000000000000000000000000000000000000",
		"917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e"},
	{"vector 2", "11111111111111111111111111111111" + "22222222222222222222222222222222", 0x3333333333,
		"4444444444444444444444444444444444444444444444444444444444444444",
		"c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0"},
	{"vector 3", "fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0" + "22222222222222222222222222222222", 0x3333333333,
		"4444444444444444444444444444444444444444444444444444444444444444",
		"af85336b597afc1a900b2eb21ec949d292df4c047e0b21532186a5971a227a89"},
}

// vector 10: AES-256 keys, data unit 0xff, 512 bytes of 00..ff twice.
const (
	xtsVec10Key = "2718281828459045235360287471352662497757247093699959574966967627" +
		"3141592653589793238462643383279502884197169399375105820974944592"
	xtsVec10Enc = "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151"
)

func TestXTSKnownAnswers(t *testing.T) {
	for _, v := range xtsVectors {
		t.Run(v.name, func(t *testing.T) {
			key := unhex(t, v.key)
			k1, _ := aes.NewCipher(key[:16])
			k2, _ := aes.NewCipher(key[16:])
			var iv [16]byte
			binary.LittleEndian.PutUint64(iv[:], v.sector) // plain64
			plain := unhex(t, v.plain)
			got := make([]byte, len(plain))
			xtsCrypt(k1, k2, got, plain, &iv, true)
			if want := unhex(t, v.enc); !bytes.Equal(got, want) {
				t.Fatalf("encrypt:\n got %x\nwant %x", got, want)
			}
			xtsCrypt(k1, k2, got, got, &iv, false)
			if !bytes.Equal(got, plain) {
				t.Fatalf("decrypt: got %x", got)
			}
		})
	}
	t.Run("vector 10 through SectorCipher", func(t *testing.T) {
		plain := make([]byte, 512)
		for i := range plain {
			plain[i] = byte(i)
		}
		c, err := newSectorCipher("aes-xts-plain64", unhex(t, xtsVec10Key), 512, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 512)
		if err := c.Encrypt(got, plain, 0xff); err != nil {
			t.Fatal(err)
		}
		if want := unhex(t, xtsVec10Enc); !bytes.Equal(got, want) {
			t.Fatalf("encrypt:\n got %x\nwant %x", got, want)
		}
	})
}

// TestXTSMatchesXCrypto cross-checks our XTS against x/crypto/xts for random keys and
// sector numbers (plain64 IVs, which is all x/crypto/xts can express).
func TestXTSMatchesXCrypto(t *testing.T) {
	r := mrand.New(mrand.NewPCG(1, 2))
	for _, keyLen := range []int{32, 48, 64} {
		key := make([]byte, keyLen)
		rand.Read(key)
		ref, err := xts.NewCipher(aes.NewCipher, key)
		if err != nil {
			t.Fatal(err)
		}
		c, err := newSectorCipher("aes-xts-plain64", key, 512, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			sector := r.Uint64()
			plain := make([]byte, 512)
			rand.Read(plain)
			want := make([]byte, 512)
			ref.Encrypt(want, plain, sector)
			got := make([]byte, 512)
			c.Encrypt(got, plain, sector)
			if !bytes.Equal(got, want) {
				t.Fatalf("key %d bytes, sector %#x: ours and x/crypto/xts differ", keyLen, sector)
			}
		}
	}
}

// TestIVNumbering pins down which sector number each IV generator sees, the part of
// dm-crypt semantics easiest to get wrong with sectors larger than 512 bytes.
func TestIVNumbering(t *testing.T) {
	key := bytes.Repeat([]byte{7}, 64)
	k1, _ := aes.NewCipher(key[:32])
	k2, _ := aes.NewCipher(key[32:])
	plain := make([]byte, 4096)
	for i := range plain {
		plain[i] = byte(i * 3)
	}
	// reference encrypts one sector with XTS under an explicit IV.
	reference := func(size int, iv [16]byte) []byte {
		out := make([]byte, size)
		xtsCrypt(k1, k2, out, plain[:size], &iv, true)
		return out
	}
	le64 := func(n uint64) (iv [16]byte) { binary.LittleEndian.PutUint64(iv[:], n); return }
	tests := []struct {
		name       string
		spec       string
		sectorSize int
		tweak      uint64
		largeIV    bool
		sector     uint64
		iv         [16]byte
	}{
		{"plain64 512", "aes-xts-plain64", 512, 0, false, 5, le64(5)},
		{"plain64 512 tweak", "aes-xts-plain64", 512, 100, false, 5, le64(105)},
		// LUKS2 with 4096-byte sectors: the IV counts 512-byte sectors.
		{"plain64 4096", "aes-xts-plain64", 4096, 0, false, 3, le64(24)},
		{"plain64 4096 tweak", "aes-xts-plain64", 4096, 16, false, 3, le64(40)},
		// iv_large_sectors: the IV counts 4096-byte sectors, the tweak is divided too.
		{"plain64 4096 large", "aes-xts-plain64", 4096, 0, true, 3, le64(3)},
		{"plain64 4096 large tweak", "aes-xts-plain64", 4096, 16, true, 3, le64(5)},
		{"plain64 2048", "aes-xts-plain64", 2048, 0, false, 3, le64(12)},
		{"plain truncates to 32 bits", "aes-xts-plain", 512, 0, false, 1<<32 + 9, le64(9)},
		{"plain64 keeps 64 bits", "aes-xts-plain64", 512, 0, false, 1<<32 + 9, le64(1<<32 + 9)},
		{"plain64be", "aes-xts-plain64be", 512, 0, false, 0x0102, func() (iv [16]byte) {
			binary.BigEndian.PutUint64(iv[8:], 0x0102)
			return
		}()},
		{"null", "aes-xts-null", 512, 0, false, 77, [16]byte{}},
		{"capi form", "capi:xts(aes)-plain64", 512, 0, false, 5, le64(5)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := newSectorCipher(tc.spec, key, tc.sectorSize, tc.tweak, tc.largeIV)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]byte, tc.sectorSize)
			if err := c.Encrypt(got, plain[:tc.sectorSize], tc.sector); err != nil {
				t.Fatal(err)
			}
			if want := reference(tc.sectorSize, tc.iv); !bytes.Equal(got, want) {
				t.Errorf("sector %d was not encrypted with IV %x", tc.sector, tc.iv)
			}
		})
	}
}

// TestSectorCipherRoundTrip encrypts and decrypts several sectors in place with every
// supported mode, and checks equal plaintext sectors give different ciphertext (the IV
// advances per sector).
func TestSectorCipherRoundTrip(t *testing.T) {
	specs := []struct {
		spec   string
		keyLen int
	}{
		{"aes-xts-plain64", 64}, {"aes-xts-plain64", 32}, {"aes-xts-plain", 64},
		{"aes-cbc-essiv:sha256", 32}, {"aes-cbc-essiv:sha256", 16}, {"aes-cbc-plain", 16},
		{"aes-cbc-plain64", 24}, {"aes-ecb", 16}, {"capi:cbc(aes)-essiv:sha256", 32},
	}
	for _, s := range specs {
		for _, size := range []int{512, 4096} {
			key := make([]byte, s.keyLen)
			rand.Read(key)
			c, err := newSectorCipher(s.spec, key, size, 0, false)
			if err != nil {
				t.Fatalf("%s: %v", s.spec, err)
			}
			plain := bytes.Repeat([]byte("same plaintext in every sector.."), 3*size/32)
			buf := bytes.Clone(plain)
			if err := c.Encrypt(buf, buf, 41); err != nil {
				t.Fatal(err)
			}
			if s.spec != "aes-ecb" && bytes.Equal(buf[:size], buf[size:2*size]) {
				t.Errorf("%s/%d: two sectors with equal plaintext encrypt alike", s.spec, size)
			}
			if err := c.Decrypt(buf, buf, 41); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf, plain) {
				t.Errorf("%s/%d: round trip changed the data", s.spec, size)
			}
		}
	}
}

func TestSectorCipherErrors(t *testing.T) {
	key := make([]byte, 64)
	tests := []struct {
		name, spec  string
		key         []byte
		size        int
		tweak       uint64
		large       bool
		unsupported bool
	}{
		{"serpent", "serpent-xts-plain64", key, 512, 0, false, true},
		{"twofish capi", "capi:xts(twofish)-plain64", key, 512, 0, false, true},
		{"lmk iv", "aes-cbc-lmk", key[:32], 512, 0, false, true},
		{"benbi iv", "aes-cbc-benbi", key[:32], 512, 0, false, true},
		{"gcm", "aes-gcm-random", key[:32], 512, 0, false, true},
		{"unknown essiv hash", "aes-cbc-essiv:whirlpool", key[:32], 512, 0, false, true},
		{"bare cipher", "aes", key[:32], 512, 0, false, true},
		{"bad capi", "capi:xts(aes-plain64", key, 512, 0, false, true},
		{"odd xts key", "aes-xts-plain64", key[:33], 512, 0, false, false},
		{"bad aes key", "aes-cbc-plain64", key[:20], 512, 0, false, false},
		{"sector 1000", "aes-xts-plain64", key, 1000, 0, false, false},
		{"large iv tweak misaligned", "aes-xts-plain64", key, 4096, 3, true, false},
		{"space", "aes-xts-plain64 x", key, 512, 0, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newSectorCipher(tc.spec, tc.key, tc.size, tc.tweak, tc.large)
			if err == nil {
				t.Fatal("accepted")
			}
			var u *UnsupportedError
			if errors.As(err, &u) != tc.unsupported {
				t.Errorf("err = %v; UnsupportedError: %v, want %v", err, errors.As(err, &u), tc.unsupported)
			}
			if tc.unsupported && u.Name != tc.spec {
				t.Errorf("UnsupportedError names %q, want the cipher %q", u.Name, tc.spec)
			}
		})
	}
	c, _ := newSectorCipher("aes-xts-plain64", key, 512, 0, false)
	if err := c.Encrypt(make([]byte, 600), make([]byte, 600), 0); err == nil {
		t.Error("Encrypt of a partial sector accepted")
	}
	if err := c.Decrypt(make([]byte, 100), make([]byte, 512), 0); err == nil {
		t.Error("Decrypt into a short buffer accepted")
	}
}

func TestParseCipherSpec(t *testing.T) {
	tests := map[string]cipherSpec{
		"aes-xts-plain64":            {"aes", "xts", "plain64", ""},
		"aes-cbc-essiv:sha256":       {"aes", "cbc", "essiv", "sha256"},
		"aes-ecb":                    {"aes", "ecb", "", ""},
		"capi:xts(aes)-plain64":      {"aes", "xts", "plain64", ""},
		"capi:cbc(aes)-essiv:sha256": {"aes", "cbc", "essiv", "sha256"},
		"twofish-cbc-plain":          {"twofish", "cbc", "plain", ""},
	}
	for spec, want := range tests {
		got, err := parseCipherSpec(spec)
		if err != nil {
			t.Errorf("%s: %v", spec, err)
			continue
		}
		if diff := cmp.Diff(want, got, cmp.AllowUnexported(cipherSpec{})); diff != "" {
			t.Errorf("%s (-want +got):\n%s", spec, diff)
		}
	}
}
