package luks

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"hash"
	"strings"
	"testing"

	stdpbkdf2 "crypto/pbkdf2"
)

// RFC 6070 PBKDF2-HMAC-SHA1 test vectors.
func TestPBKDF2RFC6070(t *testing.T) {
	tests := []struct {
		pass, salt string
		iter       uint32
		want       string
	}{
		{"password", "salt", 1, "0c60c80f961f0e71f3a9b524af6012062fe037a6"},
		{"password", "salt", 2, "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957"},
		{"password", "salt", 4096, "4b007901b765489abead49d926f721d065a429c1"},
		{"passwordPASSWORDpassword", "saltSALTsaltSALTsaltSALTsaltSALTsalt", 4096, "3d2eec4fe41c849b80c8d83662c0e44a8b291a964cf2f07038"},
		{"pass\x00word", "sa\x00lt", 4096, "56fa6aa75548099dcc37d7f03425e0c3"},
	}
	for _, tc := range tests {
		want, _ := hex.DecodeString(tc.want)
		got := pbkdf2(sha1.New, []byte(tc.pass), []byte(tc.salt), tc.iter, len(want))
		if !bytes.Equal(got, want) {
			t.Errorf("PBKDF2(%q, %q, %d) = %x, want %x", tc.pass, tc.salt, tc.iter, got, want)
		}
	}
}

// TestPBKDF2MatchesStdlib cross-checks our pre-keyed PBKDF2 against crypto/pbkdf2 for every
// hash, with passwords shorter and longer than the hash block (the latter are hashed
// first) and output lengths that are not multiples of the digest size.
func TestPBKDF2MatchesStdlib(t *testing.T) {
	for _, name := range []string{"sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160"} {
		h, err := newHash(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, passLen := range []int{0, 7, 64, 65, 200} {
			for _, keyLen := range []int{1, 20, 32, 33, 64, 100} {
				pass := make([]byte, passLen)
				salt := make([]byte, 32)
				rand.Read(pass)
				rand.Read(salt)
				want, err := stdpbkdf2.Key(h, string(pass), salt, 17, keyLen)
				if err != nil {
					t.Fatal(err)
				}
				if got := pbkdf2(h, pass, salt, 17, keyLen); !bytes.Equal(got, want) {
					t.Errorf("%s pass %d key %d: differs from crypto/pbkdf2", name, passLen, keyLen)
				}
			}
		}
	}
}

// TestPBKDF2ParallelBlocks covers the path that computes output blocks on several cores
// (iteration counts of 1000 and more, keys longer than one digest).
func TestPBKDF2ParallelBlocks(t *testing.T) {
	for _, c := range []struct {
		hash   string
		keyLen int
	}{{"sha1", 64}, {"sha256", 64}, {"sha256", 100}, {"sha512", 200}, {"sha256", 32}} {
		h, _ := newHash(c.hash)
		pass, salt := []byte("parallel"), []byte("salt for the blocks")
		want, err := stdpbkdf2.Key(h, string(pass), salt, 1500, c.keyLen)
		if err != nil {
			t.Fatal(err)
		}
		if got := pbkdf2(h, pass, salt, 1500, c.keyLen); !bytes.Equal(got, want) {
			t.Errorf("%s, %d bytes: differs from crypto/pbkdf2", c.hash, c.keyLen)
		}
	}
}

func TestAFRoundTrip(t *testing.T) {
	for _, name := range []string{"sha1", "sha256", "sha512", "ripemd160"} {
		h, _ := newHash(name)
		for _, keyLen := range []int{16, 20, 32, 48, 64, 65} {
			for _, stripes := range []int{1, 2, 4000} {
				key := make([]byte, keyLen)
				rand.Read(key)
				random := make([]byte, keyLen*stripes)
				rand.Read(random)
				split := afSplit(key, random, stripes, h)
				got, err := afMerge(split, keyLen, stripes, h)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, key) {
					t.Fatalf("%s key %d stripes %d: merge(split(key)) != key", name, keyLen, stripes)
				}
				if stripes > 1 {
					split[0] ^= 1 // one flipped bit anywhere destroys the key
					if bad, _ := afMerge(split, keyLen, stripes, h); bytes.Equal(bad, key) {
						t.Fatalf("%s: a damaged stripe still merged to the key", name)
					}
				}
			}
		}
	}
	if _, err := afMerge(make([]byte, 10), 4, 4, func() hash.Hash { return sha1.New() }); err == nil {
		t.Error("afMerge accepted too little material")
	}
}

func TestDiffuseKnownAnswer(t *testing.T) {
	// diffuse of a 40-byte buffer with SHA-1 (20-byte digest): two blocks,
	// SHA1(be32(0) || d[0:20]) || SHA1(be32(1) || d[20:40]).
	d := []byte(strings.Repeat("a", 20) + strings.Repeat("b", 20))
	h := sha1.New()
	var want []byte
	for i, part := range [][]byte{d[:20], d[20:]} {
		s := sha1.Sum(append([]byte{0, 0, 0, byte(i)}, part...))
		want = append(want, s[:]...)
	}
	diffuse(d, h, nil)
	if !bytes.Equal(d, want) {
		t.Errorf("diffuse = %x, want %x", d, want)
	}
}

func TestKDFValidation(t *testing.T) {
	tests := []struct {
		kdf  KDF
		want string
	}{
		{KDF{Type: "pbkdf2", Hash: "sha256"}, "0 iterations"},
		{KDF{Type: "pbkdf2", Hash: "md5", Iterations: 1}, `unsupported hash "md5"`},
		{KDF{Type: "scrypt"}, `unsupported kdf "scrypt"`},
		{KDF{Type: "argon2id", Time: 0, Memory: 1024, CPUs: 1}, "time cost 0"},
		{KDF{Type: "argon2id", Time: 1, Memory: 1024, CPUs: 0}, "0 threads"},
		{KDF{Type: "argon2i", Time: 1, Memory: 1024, CPUs: 200}, "200 threads"},
		{KDF{Type: "argon2id", Time: 1, Memory: 16, CPUs: 1}, "16 KiB of memory"},
		{KDF{Type: "argon2id", Time: 1, Memory: 1 << 30, CPUs: 1}, "1073741824 KiB of memory"},
		{KDF{Type: "argon2id", Time: 1, Memory: 40, CPUs: 8}, "40 KiB of memory for 8 threads"},
		{KDF{Type: "argon2id", Time: 1, Memory: 64, CPUs: 1}, "over the limit of 32 KiB"},
	}
	for _, tc := range tests {
		_, err := tc.kdf.deriveKey([]byte("p"), 32, 32)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.kdf, err, tc.want)
		}
	}
	var u *UnsupportedError
	if _, err := (&KDF{Type: "balloon"}).deriveKey(nil, 32, 0); !errors.As(err, &u) || u.What != "kdf" {
		t.Errorf("unknown KDF: %v", err)
	}
}
