package luks

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestSeveralKeyslots puts different passphrases (and KDFs) into several keyslots with
// cryptsetup and checks each opens its own slot, with the same volume key.
func TestSeveralKeyslots(t *testing.T) {
	needCryptsetup(t)
	for _, typ := range []string{"luks1", "luks2"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			a, b, c := []byte("alpha"), []byte("beta"), []byte("gamma\x00with nul\n")
			kdfA, kdfB, kdfC := fastLUKS1, fastLUKS1, fastLUKS1
			if typ == "luks2" {
				kdfA, kdfB, kdfC = fastPBKDF2, fastArgon("argon2id", "2"), cat([]string{"--hash", "sha512"}, fastPBKDF2)
			}
			img := luksFormat(t, t.TempDir(), 32<<20, a, cat([]string{"--type", typ}, kdfA)...)
			luksAddKey(t, img, a, b, kdfB...)
			luksAddKey(t, img, a, c, cat([]string{"--key-slot", "5"}, kdfC)...)
			want := dumpVolumeKey(t, img, a)
			v, _ := openImage(t, img)
			var ids []int
			for _, k := range v.Keyslots {
				ids = append(ids, k.ID)
			}
			if diff := cmp.Diff([]int{0, 1, 5}, ids); diff != "" {
				t.Errorf("keyslots (-want +got):\n%s", diff)
			}
			for slot, pass := range map[int][]byte{0: a, 1: b, 5: c} {
				key, err := v.Unlock(pass, nil)
				if err != nil {
					t.Fatalf("Unlock(%q): %v", pass, err)
				}
				if key.Keyslot != slot || !bytes.Equal(key.Bytes(), want) {
					t.Errorf("Unlock(%q) = slot %d key %x, want slot %d key %x", pass, key.Keyslot, key.Bytes(), slot, want)
				}
				// Naming a keyslot tries only that one.
				other := (slot + 1) % 2
				if _, err := v.Unlock(pass, &UnlockOptions{Keyslots: []int{other}}); !errors.Is(err, ErrWrongPassphrase) {
					t.Errorf("Unlock(%q, keyslot %d) = %v, want ErrWrongPassphrase", pass, other, err)
				}
			}
			if _, err := v.Unlock([]byte("delta"), nil); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("wrong passphrase: %v", err)
			}
			if _, err := v.Unlock(a, &UnlockOptions{Keyslots: []int{3}}); err == nil || !strings.Contains(err.Error(), "keyslot 3 is not active") {
				t.Errorf("inactive keyslot: %v", err)
			}
		})
	}
}

// TestKeyslotPriority sets LUKS2 priorities with cryptsetup config and checks the order
// Unlock tries keyslots in: high first, normal next, ignore never unless named.
func TestKeyslotPriority(t *testing.T) {
	needCryptsetup(t)
	a, b := []byte("alpha"), []byte("beta")
	img := luksFormat(t, t.TempDir(), 32<<20, a, cat([]string{"--type", "luks2"}, fastPBKDF2)...)
	luksAddKey(t, img, a, b, fastPBKDF2...)                                   // slot 1
	luksAddKey(t, img, a, a, cat([]string{"--key-slot", "2"}, fastPBKDF2)...) // slot 2: same passphrase as 0
	priority := func(slot, p string) {
		runCryptsetup(t, nil, "config", "--batch-mode", "--key-slot", slot, "--priority", p, img)
	}
	opened := func(pass []byte, opts *UnlockOptions) (int, error) {
		v, _ := openImage(t, img)
		k, err := v.Unlock(pass, opts)
		if err != nil {
			return -1, err
		}
		return k.Keyslot, nil
	}
	if got, err := opened(a, nil); got != 0 {
		t.Errorf("all normal: opened slot %d (%v), want 0 (lowest id first)", got, err)
	}
	priority("2", "prefer")
	if got, err := opened(a, nil); got != 2 {
		t.Errorf("slot 2 preferred: opened slot %d (%v), want 2", got, err)
	}
	v, _ := openImage(t, img)
	if k, _ := v.Keyslot(2); k.Priority != PriorityHigh {
		t.Errorf("slot 2 priority = %v", k.Priority)
	}
	priority("2", "normal")
	priority("0", "ignore")
	if got, err := opened(a, nil); got != 2 {
		t.Errorf("slot 0 ignored: opened slot %d (%v), want 2", got, err)
	}
	priority("2", "ignore")
	if _, err := opened(a, nil); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("slots 0 and 2 ignored: %v, want ErrWrongPassphrase (only slot 1 tried)", err)
	}
	if got, err := opened(a, &UnlockOptions{Keyslots: []int{0}}); got != 0 {
		t.Errorf("ignored slot named: opened slot %d (%v), want 0", got, err)
	}
	priority("1", "ignore")
	if _, err := opened(b, nil); err == nil || errors.Is(err, ErrWrongPassphrase) || !strings.Contains(err.Error(), "no keyslot to try") {
		t.Errorf("all ignored: %v, want 'no keyslot to try'", err)
	}
}

func TestArgon2MemoryLimit(t *testing.T) {
	needCryptsetup(t)
	pass := []byte("pw")
	img := luksFormat(t, t.TempDir(), 32<<20, pass, cat([]string{"--type", "luks2"}, fastArgon("argon2id", "1"))...)
	v, _ := openImage(t, img)
	_, err := v.Unlock(pass, &UnlockOptions{MaxMemoryKiB: 32})
	var ke *KeyslotError
	if !errors.As(err, &ke) || errors.Is(err, ErrWrongPassphrase) || !strings.Contains(err.Error(), "64 KiB of memory, over the limit of 32 KiB") {
		t.Errorf("Unlock over the memory limit = %v", err)
	}
	if _, err := v.Unlock(pass, &UnlockOptions{MaxMemoryKiB: 64}); err != nil {
		t.Errorf("Unlock at the memory limit: %v", err)
	}
}

// TestArgon2DefaultMemoryLimit: a header asking for more than 1 GiB (here 3 GiB, which the
// format allows) is refused by default, before anything is allocated, and can be allowed.
func TestArgon2DefaultMemoryLimit(t *testing.T) {
	img, _ := baseLUKS2Image(t)
	editLUKS2JSON(t, img, func(m map[string]any) {
		kdf := obj(m, "keyslots", "0", "kdf")
		for k := range kdf {
			delete(kdf, k)
		}
		kdf["type"], kdf["time"], kdf["memory"], kdf["cpus"], kdf["salt"] = "argon2id", 1, 3<<20, 1, "c2FsdA=="
	})
	v, err := openBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = v.Unlock([]byte(basePass), nil)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "3145728 KiB of memory, over the limit of 1048576 KiB") {
		t.Fatalf("Unlock = %v, want the default memory limit", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
		t.Errorf("Unlock allocated %d MiB before refusing", grew>>20)
	}
}

// TestKeyFiles formats with binary key files and opens with what ReadKeyFile and
// ReadKeyAt return, as the encrypt hook does for cryptkey=.
func TestKeyFiles(t *testing.T) {
	needCryptsetup(t)
	dir := t.TempDir()
	keyBytes := []byte("\x00\x01binary key\nwith newline and NUL\x00\xff")
	img := luksFormat(t, dir, 32<<20, keyBytes, cat([]string{"--type", "luks2"}, fastPBKDF2)...)
	v, _ := openImage(t, img)

	kf := filepath.Join(dir, "rootfs.key")
	writeFile(t, kf, keyBytes)
	k, err := ReadKeyFile(kf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Unlock(k, nil); err != nil {
		t.Errorf("Unlock with ReadKeyFile: %v", err)
	}

	// cryptkey=DEVICE:OFFSET:SIZE — the key sits at an offset of a raw device.
	dev := append(append(bytes.Repeat([]byte{0xee}, 3000), keyBytes...), bytes.Repeat([]byte{0xdd}, 100)...)
	raw, err := ReadKeyAt(bytes.NewReader(dev), 3000, int64(len(keyBytes)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Unlock(raw, nil); err != nil {
		t.Errorf("Unlock with ReadKeyAt: %v", err)
	}
	// One byte more is another key.
	raw, _ = ReadKeyAt(bytes.NewReader(dev), 3000, int64(len(keyBytes))+1)
	if _, err := v.Unlock(raw, nil); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("Unlock with a longer key: %v", err)
	}
}

func TestKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	writeFile(t, empty, nil)
	big := filepath.Join(dir, "big")
	f, _ := os.Create(big)
	f.Truncate(MaxKeyFileSize + 1)
	f.Close()
	for _, p := range []string{empty, big, filepath.Join(dir, "missing")} {
		if _, err := ReadKeyFile(p); err == nil {
			t.Errorf("ReadKeyFile(%s) accepted", filepath.Base(p))
		}
	}
	dev := bytes.NewReader(make([]byte, 100))
	for _, c := range []struct{ off, size int64 }{{-1, 10}, {0, 0}, {0, MaxKeyFileSize + 1}, {95, 10}, {200, 1}} {
		if _, err := ReadKeyAt(dev, c.off, c.size); err == nil {
			t.Errorf("ReadKeyAt(%d, %d) accepted", c.off, c.size)
		}
	}
}

// TestUnlockDeviceProblems: a keyslot area past the end of the device is that keyslot's
// problem (others are still tried); an I/O error stops the unlock at once.
func TestUnlockDeviceProblems(t *testing.T) {
	needCryptsetup(t)
	a, b := []byte("alpha"), []byte("beta")
	path := luksFormat(t, t.TempDir(), 8<<20, a, cat([]string{"--type", "luks1"}, fastLUKS1)...)
	luksAddKey(t, path, a, b, fastLUKS1...)
	img := readFile(t, path)
	v, err := openBytes(img)
	if err != nil {
		t.Fatal(err)
	}
	k1, _ := v.Keyslot(1)
	cut := img[:k1.AreaOffset+100] // keyslot 1's area is cut short

	v, _ = openBytes(cut)
	if _, err := v.Unlock(a, nil); err != nil {
		t.Errorf("keyslot 0 on the truncated device: %v", err)
	}
	_, err = v.Unlock(b, nil)
	var ke *KeyslotError
	if !errors.Is(err, ErrWrongPassphrase) || !errors.As(err, &ke) || ke.Keyslot != 1 || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("keyslot 1 past the end: %v, want ErrWrongPassphrase naming keyslot 1's short read", err)
	}

	v, _ = Open(&failingReader{data: img, failFrom: 4096, err: syscall.EIO})
	_, err = v.Unlock(a, nil)
	if !errors.Is(err, syscall.EIO) || errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("I/O error: %v, want EIO and not ErrWrongPassphrase", err)
	}
}

// failingReader serves data but fails reads at or after failFrom.
type failingReader struct {
	data     []byte
	failFrom int64
	err      error
}

func (r *failingReader) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > r.failFrom {
		return 0, r.err
	}
	return bytes.NewReader(r.data).ReadAt(p, off)
}
