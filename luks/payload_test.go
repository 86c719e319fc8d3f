package luks

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestSectorCipherMatchesCryptsetup proves the user-space sector cipher against cryptsetup
// itself, with no dm-crypt: cryptsetup's offline reencryption (LUKS2, detached header)
// encrypts and decrypts a data file in user space with the same IV numbering dm-crypt uses
// for the mapping. Both directions are checked:
//
//   - cryptsetup reencrypt --encrypt, then our Decrypt must give back the plaintext;
//   - our EncryptPayload must write the very ciphertext cryptsetup wrote, and cryptsetup
//     reencrypt --decrypt must turn it back into the plaintext.
//
// This is what established that LUKS2 counts IVs in 512-byte sectors even with 4096-byte
// sectors (no iv_large_sectors).
func TestSectorCipherMatchesCryptsetup(t *testing.T) {
	needCryptsetup(t)
	pass := []byte("oracle")
	tests := []struct {
		name       string
		args       []string
		sectorSize int
		offset     int64
	}{
		{"xts-plain64-4096", []string{"--sector-size", "4096"}, 4096, 0},
		{"xts-plain64-512", []string{"--sector-size", "512"}, 512, 0},
		{"xts-256-2048", []string{"--sector-size", "2048", "--key-size", "256"}, 2048, 0},
		{"cbc-essiv-512-offset", []string{"--sector-size", "512", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "256", "--offset", "2048"}, 512, 1 << 20},
		{"cbc-plain64-4096-offset", []string{"--sector-size", "4096", "--cipher", "aes-cbc-plain64", "--key-size", "128", "--offset", "4096"}, 4096, 2 << 20},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			const size = 1 << 20
			plain := make([]byte, size)
			rnd := rand.New(rand.NewPCG(uint64(tc.sectorSize), 99))
			for i := range plain {
				plain[i] = byte(rnd.Uint32())
			}
			data := filepath.Join(dir, "data")
			writeFile(t, data, append(make([]byte, tc.offset), plain...))
			hdr := filepath.Join(dir, "hdr")
			writeFile(t, hdr, make([]byte, 4<<20))
			kf := writeKeyFile(t, dir, "key", pass)
			args := append([]string{"reencrypt", "--encrypt", "--type", "luks2", "--batch-mode", "--key-file", kf,
				"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--header", hdr}, tc.args...)
			runCryptsetup(t, nil, append(args, data)...)

			v, _ := openImage(t, hdr)
			if v.Segment.SectorSize != tc.sectorSize || v.Segment.Offset != tc.offset {
				t.Fatalf("segment %+v, want sector %d offset %d", v.Segment, tc.sectorSize, tc.offset)
			}
			key, err := v.Unlock(pass, nil)
			if err != nil {
				t.Fatal(err)
			}
			c, err := v.Segment.NewSectorCipher(key.Bytes())
			if err != nil {
				t.Fatal(err)
			}

			// cryptsetup encrypted, we decrypt.
			enc := readFile(t, data)[tc.offset:]
			got := make([]byte, size)
			if err := c.Decrypt(got, enc[:size], 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got, plain); i >= 0 {
				t.Fatalf("our decryption of cryptsetup's ciphertext differs from the plaintext at byte %d (sector %d)", i, i/tc.sectorSize)
			}
			// Decrypting from the middle (sector 5 onward) agrees too: sector numbers are
			// absolute within the segment.
			mid := make([]byte, 2*tc.sectorSize)
			c.Decrypt(mid, enc[5*tc.sectorSize:7*tc.sectorSize], 5)
			if !bytes.Equal(mid, plain[5*tc.sectorSize:7*tc.sectorSize]) {
				t.Fatal("decrypting sectors 5..6 alone gives other plaintext")
			}

			// We encrypt (into a fresh copy of the encrypted file), cryptsetup decrypts.
			hdr2 := filepath.Join(dir, "hdr2")
			writeFile(t, hdr2, readFile(t, hdr))
			data2 := filepath.Join(dir, "data2")
			writeFile(t, data2, make([]byte, tc.offset+size))
			f, err := os.OpenFile(data2, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			n, err := v.EncryptPayload(f, bytes.NewReader(plain), key)
			f.Close()
			if err != nil || n != size {
				t.Fatalf("EncryptPayload = %d, %v", n, err)
			}
			if ours := readFile(t, data2)[tc.offset:]; !bytes.Equal(ours, enc[:size]) {
				t.Error("EncryptPayload wrote other ciphertext than cryptsetup")
			}
			if tc.offset != 0 {
				// cryptsetup 2.6 decrypts only detached headers with data offset 0; the
				// byte-for-byte comparison above already covers this case.
				return
			}
			runCryptsetup(t, nil, "reencrypt", "--decrypt", "--force-offline-reencrypt", "--batch-mode",
				"--key-file", kf, "--header", hdr2, data2)
			if back := readFile(t, data2)[tc.offset:]; !bytes.Equal(back, plain) {
				t.Fatalf("cryptsetup's decryption of our ciphertext differs from the plaintext at byte %d", firstDiff(back, plain))
			}
		})
	}
}

// TestEncryptInPlaceWithDataShift follows docs/luks.md's recipe for hosts without
// dm-crypt: a filesystem image with 32 MiB appended, encrypted in place by cryptsetup
// reencrypt --reduce-device-size (the header goes in front, the data moves back). The
// result must open with our code and decrypt to the original image.
func TestEncryptInPlaceWithDataShift(t *testing.T) {
	needCryptsetup(t)
	dir := t.TempDir()
	pass := []byte("in place")
	plain := make([]byte, 1<<20)
	rnd := rand.New(rand.NewPCG(3, 4))
	for i := range plain {
		plain[i] = byte(rnd.Uint32())
	}
	img := filepath.Join(dir, "root.img")
	writeFile(t, img, append(bytes.Clone(plain), make([]byte, 32<<20)...))
	kf := writeKeyFile(t, dir, "key", pass)
	runCryptsetup(t, nil, "reencrypt", "--encrypt", "--type", "luks2", "--batch-mode", "--key-file", kf,
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--sector-size", "4096", "--reduce-device-size", "32M", img)

	v, _ := openImage(t, img)
	key, err := v.Unlock(pass, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Segment.NewSectorCipher(key.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	got := readFile(t, img)[v.Segment.Offset:][:len(plain)]
	if err := c.Decrypt(got, got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, plain); i >= 0 {
		t.Fatalf("decrypted data differs from the original image at byte %d (segment %+v)", i, v.Segment)
	}
}

func TestEncryptPayloadPadsAndBounds(t *testing.T) {
	key := bytes.Repeat([]byte{1}, 64)
	v := &Volume{Segment: Segment{Offset: 4096, Size: 8192, Cipher: "aes-xts-plain64", SectorSize: 4096}}
	var dst bytes.Buffer
	w := &memWriterAt{buf: &dst}
	// 5000 bytes: two sectors, the second padded with zeros.
	plain := bytes.Repeat([]byte{0x5a}, 5000)
	n, err := v.EncryptPayload(w, bytes.NewReader(plain), NewVolumeKey(key))
	if err != nil || n != 8192 {
		t.Fatalf("EncryptPayload = %d, %v; want 8192, nil", n, err)
	}
	c, _ := v.Segment.NewSectorCipher(key)
	got := make([]byte, 8192)
	c.Decrypt(got, dst.Bytes()[4096:4096+8192], 0)
	want := append(bytes.Clone(plain), make([]byte, 8192-5000)...)
	if !bytes.Equal(got, want) {
		t.Error("payload does not decrypt to the plaintext padded with zeros")
	}
	// 8193 bytes do not fit in the 8192-byte segment.
	if _, err := v.EncryptPayload(w, bytes.NewReader(make([]byte, 8193)), NewVolumeKey(key)); err == nil {
		t.Error("payload larger than the segment accepted")
	}
}

// memWriterAt is an io.WriterAt over a growing buffer.
type memWriterAt struct{ buf *bytes.Buffer }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	b := m.buf.Bytes()
	if need := int(off) + len(p); need > len(b) {
		m.buf.Write(make([]byte, need-len(b)))
		b = m.buf.Bytes()
	}
	copy(b[off:], p)
	return len(p), nil
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}
