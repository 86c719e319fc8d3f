package luks

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Cheap KDF costs, so the suite is fast; the code paths are those of real costs.
var (
	fastPBKDF2 = []string{"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"}
	fastLUKS1  = []string{"--pbkdf-force-iterations", "1000"}
)

func fastArgon(kind, threads string) []string {
	return []string{"--pbkdf", kind, "--pbkdf-force-iterations", "4", "--pbkdf-memory", "64", "--pbkdf-parallel", threads}
}

func cat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// TestUnlockMatchesCryptsetup formats images with cryptsetup in every supported
// combination and checks that the key Unlock derives is the one cryptsetup dumps, that the
// header fields we report are those we asked for, and that a wrong passphrase fails.
func TestUnlockMatchesCryptsetup(t *testing.T) {
	needCryptsetup(t)
	pass := []byte("correct horse battery staple")
	tests := []struct {
		name string
		args []string
		want Segment // fields compared: Cipher, SectorSize, Dynamic (Offset from luksDump)
		kdf  string
		hash string
		size int64
	}{
		{"luks1-sha1-xts", cat([]string{"--type", "luks1", "--hash", "sha1", "--cipher", "aes-xts-plain64", "--key-size", "512"}, fastLUKS1),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 512, Dynamic: true}, KDFPBKDF2, "sha1", 8 << 20},
		{"luks1-sha256-cbc-essiv", cat([]string{"--type", "luks1", "--hash", "sha256", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"}, fastLUKS1),
			Segment{Cipher: "aes-cbc-essiv:sha256", SectorSize: 512, Dynamic: true}, KDFPBKDF2, "sha256", 8 << 20},
		{"luks1-sha512-xts256", cat([]string{"--type", "luks1", "--hash", "sha512", "--cipher", "aes-xts-plain64", "--key-size", "256"}, fastLUKS1),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 512, Dynamic: true}, KDFPBKDF2, "sha512", 8 << 20},
		{"luks1-cbc-plain", cat([]string{"--type", "luks1", "--hash", "sha256", "--cipher", "aes-cbc-plain", "--key-size", "128"}, fastLUKS1),
			Segment{Cipher: "aes-cbc-plain", SectorSize: 512, Dynamic: true}, KDFPBKDF2, "sha256", 8 << 20},
		{"luks1-cbc-plain64", cat([]string{"--type", "luks1", "--hash", "sha1", "--cipher", "aes-cbc-plain64", "--key-size", "192"}, fastLUKS1),
			Segment{Cipher: "aes-cbc-plain64", SectorSize: 512, Dynamic: true}, KDFPBKDF2, "sha1", 8 << 20},
		{"luks2-pbkdf2-sha256-512", cat([]string{"--type", "luks2", "--hash", "sha256", "--sector-size", "512"}, fastPBKDF2),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 512, Dynamic: true}, KDFPBKDF2, "sha256", 32 << 20},
		{"luks2-pbkdf2-sha512-4096", cat([]string{"--type", "luks2", "--hash", "sha512", "--sector-size", "4096"}, fastPBKDF2),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 4096, Dynamic: true}, KDFPBKDF2, "sha512", 32 << 20},
		{"luks2-pbkdf2-sha1", cat([]string{"--type", "luks2", "--hash", "sha1", "--sector-size", "4096"}, fastPBKDF2),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 4096, Dynamic: true}, KDFPBKDF2, "sha1", 32 << 20},
		{"luks2-argon2i-4096", cat([]string{"--type", "luks2", "--sector-size", "4096"}, fastArgon("argon2i", "1")),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 4096, Dynamic: true}, KDFArgon2i, "", 32 << 20},
		{"luks2-argon2id-2threads-512", cat([]string{"--type", "luks2", "--sector-size", "512"}, fastArgon("argon2id", "2")),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 512, Dynamic: true}, KDFArgon2id, "", 32 << 20},
		{"luks2-argon2id-4threads", cat([]string{"--type", "luks2"}, fastArgon("argon2id", "4")),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 4096, Dynamic: true}, KDFArgon2id, "", 32 << 20},
		{"luks2-cbc-essiv-2048", cat([]string{"--type", "luks2", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--sector-size", "2048"}, fastPBKDF2),
			Segment{Cipher: "aes-cbc-essiv:sha256", SectorSize: 2048, Dynamic: true}, KDFPBKDF2, "sha256", 32 << 20},
		{"luks2-keyslot-cipher-differs", cat([]string{"--type", "luks2", "--keyslot-cipher", "aes-cbc-plain64", "--keyslot-key-size", "128"}, fastPBKDF2),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 4096, Dynamic: true}, KDFPBKDF2, "sha256", 32 << 20},
		{"luks2-small-metadata", cat([]string{"--type", "luks2", "--luks2-metadata-size", "64k", "--luks2-keyslots-size", "1m"}, fastPBKDF2),
			Segment{Cipher: "aes-xts-plain64", SectorSize: 4096, Dynamic: true}, KDFPBKDF2, "sha256", 8 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := luksFormat(t, t.TempDir(), tc.size, pass, tc.args...)
			want := dumpVolumeKey(t, img, pass)
			v, _ := openImage(t, img)

			tc.want.Offset = dumpDataOffset(t, img)
			got := Segment{Cipher: v.Segment.Cipher, SectorSize: v.Segment.SectorSize, Dynamic: v.Segment.Dynamic, Offset: v.Segment.Offset}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("segment (-want +got):\n%s", diff)
			}
			if len(v.Keyslots) != 1 || v.Keyslots[0].KDF.Type != tc.kdf || v.Keyslots[0].KDF.Hash != tc.hash {
				t.Errorf("keyslots = %+v, want one %s/%s keyslot", v.Keyslots, tc.kdf, tc.hash)
			}

			key, err := v.Unlock(pass, nil)
			if err != nil {
				t.Fatalf("Unlock: %v", err)
			}
			if !bytes.Equal(key.Bytes(), want) {
				t.Fatalf("volume key\n got %x\nwant %x", key.Bytes(), want)
			}
			if key.Keyslot != 0 {
				t.Errorf("opened by keyslot %d, want 0", key.Keyslot)
			}
			if err := v.VerifyKey(key); err != nil {
				t.Errorf("VerifyKey(derived key): %v", err)
			}
			key.Wipe()
			if key.Len() != 0 {
				t.Errorf("Wipe left %d bytes", key.Len())
			}

			for _, wrong := range [][]byte{[]byte("correct horse battery stapl"), nil, append(bytes.Clone(pass), '\n')} {
				if _, err := v.Unlock(wrong, nil); !errors.Is(err, ErrWrongPassphrase) {
					t.Errorf("Unlock(%q) = %v, want ErrWrongPassphrase", wrong, err)
				}
			}
		})
	}
}
