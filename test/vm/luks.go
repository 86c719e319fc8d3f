package vm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nbdroot/nbdroot/luks"
)

// LUKSOptions shape an encrypted root image.
type LUKSOptions struct {
	// Type is "luks2" (default) or "luks1".
	Type string
	// SectorSize is LUKS2's --sector-size (default 4096; LUKS1 is always 512).
	SectorSize int
	// PBKDF is "pbkdf2" (default, cheap under TCG) or "argon2id"/"argon2i" with small costs.
	PBKDF string
	// Passphrase defaults to "nbdroot-test".
	Passphrase string
	// MorePassphrases go into keyslots 1, 2… (cryptsetup luksAddKey).
	MorePassphrases []string
	Root            RootOptions
}

// LUKSRootImage builds a busybox root, formats a file with `cryptsetup luksFormat` (no
// dm-crypt needed) and encrypts the ext4 image into it with the volume key our luks package
// derives, as writing through /dev/mapper would.
func (e *Env) LUKSRootImage(t TB, o LUKSOptions) string {
	t.Helper()
	if o.Type == "" {
		o.Type = "luks2"
	}
	if o.SectorSize == 0 {
		o.SectorSize = 4096
		if o.Type == "luks1" {
			o.SectorSize = 512
		}
	}
	if o.PBKDF == "" {
		o.PBKDF = "pbkdf2"
	}
	if o.Passphrase == "" {
		o.Passphrase = "nbdroot-test"
	}
	key := fmt.Sprintf("luks %+v", o)
	base := e.cached(t, key, func(path string) error {
		tree := path + ".tree"
		if err := RootTree(tree, o.Root); err != nil {
			return err
		}
		fs := path + ".ext4"
		// ext4 on a 4096-byte-sector dm-crypt device needs 4 KiB blocks.
		if err := MkfsExt4(fs, tree, o.Root.SizeMB, 4096); err != nil {
			return err
		}
		return LUKSFormat(path, fs, o)
	})
	img := filepath.Join(t.TempDir(), "luks-root.img")
	if err := copyFile(base, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// LUKSFormat makes path a LUKS container (`cryptsetup luksFormat`, no dm-crypt needed)
// whose payload is the plaintext image plain, encrypted with the volume key our luks
// package derives, as writing through /dev/mapper would. o's defaults are LUKSRootImage's.
func LUKSFormat(path, plain string, o LUKSOptions) error {
	if o.Type == "" {
		o.Type = "luks2"
	}
	if o.SectorSize == 0 {
		o.SectorSize = 4096
		if o.Type == "luks1" {
			o.SectorSize = 512
		}
	}
	if o.PBKDF == "" {
		o.PBKDF = "pbkdf2"
	}
	if o.Passphrase == "" {
		o.Passphrase = "nbdroot-test"
	}
	st, err := os.Stat(plain)
	if err != nil {
		return err
	}
	// Room for the header: LUKS2's default data offset is 16 MiB, LUKS1's 2 MiB.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return err
	}
	if err := os.Truncate(path, st.Size()+16<<20); err != nil {
		return err
	}
	args := []string{"luksFormat", "--batch-mode", "--type", o.Type, "--key-file", "-"}
	switch o.PBKDF {
	case "pbkdf2":
		args = append(args, "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
	default:
		args = append(args, "--pbkdf", o.PBKDF, "--pbkdf-memory", "32768", "--pbkdf-parallel", "1", "--pbkdf-force-iterations", "4")
	}
	if o.Type == "luks2" {
		args = append(args, "--sector-size", fmt.Sprint(o.SectorSize))
	}
	cmd := exec.Command("cryptsetup", append(args, path)...)
	cmd.Stdin = strings.NewReader(o.Passphrase)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("cryptsetup luksFormat: %v\n%s", err, out)
	}
	for _, p := range o.MorePassphrases {
		// luksAddKey reads the existing passphrase from --key-file and the new one from a
		// file argument.
		newKey := path + ".newkey"
		if err := os.WriteFile(newKey, []byte(p), 0o600); err != nil {
			return err
		}
		cmd := exec.Command("cryptsetup", "luksAddKey", "--batch-mode", "--key-file", "-",
			"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", path, newKey)
		cmd.Stdin = strings.NewReader(o.Passphrase)
		out, err := cmd.CombinedOutput()
		os.Remove(newKey)
		if err != nil {
			return fmt.Errorf("cryptsetup luksAddKey: %v\n%s", err, out)
		}
	}
	return encryptInto(path, plain, o.Passphrase)
}

func encryptInto(luksPath, plainPath, pass string) error {
	dst, err := os.OpenFile(luksPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer dst.Close()
	v, err := luks.Open(dst)
	if err != nil {
		return err
	}
	key, err := v.Unlock([]byte(pass), nil)
	if err != nil {
		return err
	}
	defer key.Wipe()
	src, err := os.Open(plainPath)
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := v.EncryptPayload(dst, src, key); err != nil {
		return err
	}
	return dst.Close()
}
