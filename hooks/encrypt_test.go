package hooks

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// luksImage formats a small LUKS2 image with cheap PBKDF2 and returns its path.
func luksImage(t *testing.T, pass string) string {
	t.Helper()
	needTool(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "luks.img")
	if err := os.WriteFile(img, make([]byte, 24<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--sector-size", "4096",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	cmd.Stdin = strings.NewReader(pass)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	return img
}

func TestEncrypt(t *testing.T) {
	img := luksImage(t, "correct horse")
	keyfile := filepath.Join(t.TempDir(), "key")
	os.WriteFile(keyfile, []byte("correct horse"), 0o400)
	wrongKey := filepath.Join(t.TempDir(), "wrong")
	os.WriteFile(wrongKey, []byte("nope"), 0o400)

	tests := []struct {
		name        string
		cmdline     string
		passes      []string
		wantPrompts int
		wantErr     string
		wantLog     string
	}{
		{name: "right passphrase", cmdline: "cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt",
			passes: []string{"correct horse"}, wantPrompts: 1},
		{name: "wrong then right", cmdline: "cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt",
			passes: []string{"oops", "correct horse"}, wantPrompts: 2, wantLog: "wrong passphrase, 2 tries left"},
		{name: "wrong every time", cmdline: "cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt nbdroot.tries=2",
			passes: []string{"a", "b", "c"}, wantPrompts: 2, wantErr: "wrong passphrase 2 times"},
		{name: "keyfile in the image", cmdline: "cryptdevice=/dev/nbd0:nbdcrypt cryptkey=rootfs:" + keyfile + " root=/dev/mapper/nbdcrypt",
			wantPrompts: 0},
		{name: "bad keyfile falls back to the passphrase", cmdline: "cryptdevice=/dev/nbd0:nbdcrypt cryptkey=rootfs:" + wrongKey + " root=/dev/mapper/nbdcrypt",
			passes: []string{"correct horse"}, wantPrompts: 1, wantLog: "did not unlock /dev/nbd0"},
		{name: "discards", cmdline: "cryptdevice=/dev/nbd0:nbdcrypt:allow-discards root=/dev/mapper/nbdcrypt",
			passes: []string{"correct horse"}, wantPrompts: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			sys.blocks.devices = map[string]string{"/dev/nbd0": img}
			sys.console.passes = tt.passes
			s, log, err := newTestState("ip=dhcp nbd_server=10.0.0.1 "+tt.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			err = Encrypt{}.Run(context.Background(), s)
			if len(sys.console.prompts) != tt.wantPrompts {
				t.Errorf("asked %d times, want %d", len(sys.console.prompts), tt.wantPrompts)
			}
			if tt.wantLog != "" && !strings.Contains(log.String(), tt.wantLog) {
				t.Errorf("log lacks %q:\n%s", tt.wantLog, log)
			}
			if strings.Contains(log.String(), "correct horse") {
				t.Error("the passphrase was logged")
			}
			if tt.wantErr != "" {
				var f *Failure
				if !errors.As(err, &f) || f.Hook != "encrypt" || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want an encrypt failure with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.CryptDevice != "/dev/mapper/nbdcrypt" {
				t.Errorf("CryptDevice = %q", s.CryptDevice)
			}
			if len(sys.mapper.tables) != 1 {
				t.Fatalf("%d tables activated", len(sys.mapper.tables))
			}
			tab := sys.mapper.tables[0]
			for _, want := range []string{"aes-xts-plain64", "/dev/nbd0", "sector_size:4096"} {
				if !strings.Contains(tab, want) {
					t.Errorf("table %q lacks %q", tab, want)
				}
			}
			if strings.Contains(tt.cmdline, "allow-discards") != strings.Contains(tab, "allow_discards") {
				t.Errorf("table %q: allow_discards does not follow the cmdline", tab)
			}
			if prompts := sys.console.prompts; len(prompts) > 0 && prompts[0] != "Enter passphrase for /dev/nbd0 (nbdcrypt): " {
				t.Errorf("prompt %q", prompts[0])
			}
		})
	}
}

func TestEncryptNotLUKS(t *testing.T) {
	plain := filepath.Join(t.TempDir(), "plain.img")
	os.WriteFile(plain, make([]byte, 1<<20), 0o600)
	sys := newFakes()
	sys.blocks.devices = map[string]string{"/dev/nbd0": plain}
	s, _, err := newTestState("ip=dhcp nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c root=/dev/mapper/c", sys)
	if err != nil {
		t.Fatal(err)
	}
	err = Encrypt{}.Run(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "read the LUKS header of /dev/nbd0") || !strings.Contains(err.Error(), "cryptdevice=/dev/nbd0:c") {
		t.Fatalf("err = %v", err)
	}
}

// TestEncryptArgon2TooBig refuses a keyslot whose Argon2 needs more memory than half of what
// the client has, instead of letting the OOM killer take PID 1.
func TestEncryptArgon2TooBig(t *testing.T) {
	needTool(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "argon.img")
	os.WriteFile(img, make([]byte, 24<<20), 0o600)
	cmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "argon2id",
		"--pbkdf-memory", "32768", "--pbkdf-parallel", "1", "--pbkdf-force-iterations", "4", "--key-file", "-", img)
	cmd.Stdin = strings.NewReader("pw")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	sys := newFakes()
	sys.blocks.devices = map[string]string{"/dev/nbd0": img}
	sys.console.passes = []string{"pw"}
	sys.machine.memKiB = 16 << 10
	s, _, err := newTestState("ip=dhcp nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c root=/dev/mapper/c", sys)
	if err != nil {
		t.Fatal(err)
	}
	err = Encrypt{}.Run(context.Background(), s)
	if err == nil || !strings.Contains(err.Error(), "memory") {
		t.Fatalf("err = %v, want a refusal naming memory", err)
	}
	if len(sys.mapper.tables) != 0 {
		t.Error("a table was activated")
	}
}
