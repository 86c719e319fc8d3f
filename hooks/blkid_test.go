package hooks

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/google/go-cmp/cmp"
)

func needTool(t *testing.T, name string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is not installed (make test installs it)", name)
		}
		t.Skipf("%s is not installed", name)
	}
}

func head(t *testing.T, path string) []byte {
	t.Helper()
	b, err := readHead(path, probeSize)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIdentifyExt4(t *testing.T) {
	needTool(t, "mkfs.ext4")
	img := filepath.Join(t.TempDir(), "fs.img")
	const uuid = "0b1e6c07-5e1f-4c47-9d43-3f8d0e2a9c11"
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-L", "thinroot", "-U", uuid, img, "8M").CombinedOutput()
	if err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	got := Identify(head(t, img))
	if diff := cmp.Diff(Identity{Type: "ext4", UUID: uuid, Label: "thinroot"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !Matches("UUID="+strings.ToUpper(uuid), got, nil) || !Matches("LABEL=thinroot", got, nil) || Matches("LABEL=other", got, nil) {
		t.Error("Matches disagrees with Identify")
	}
}

func TestIdentifyLUKS(t *testing.T) {
	needTool(t, "cryptsetup")
	img := filepath.Join(t.TempDir(), "luks.img")
	if err := os.WriteFile(img, make([]byte, 20<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	const uuid = "6d3a2f1c-0000-4000-8000-00000000beef"
	cmd := exec.Command("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--uuid", uuid, "--label", "nbdcrypt",
		"--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file", "-", img)
	cmd.Stdin = strings.NewReader("secret")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("luksFormat: %v\n%s", err, out)
	}
	got := Identify(head(t, img))
	if diff := cmp.Diff(Identity{Type: "crypto_LUKS", UUID: uuid, Label: "nbdcrypt"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPartitionsMBR(t *testing.T) {
	b := make([]byte, 512)
	binary.LittleEndian.PutUint32(b[440:], 0xdeadbeef)
	b[446+4] = 0x83      // partition 1: Linux
	b[446+16*2+4] = 0x83 // partition 3
	b[510], b[511] = 0x55, 0xAA
	want := []Partition{{Number: 1, UUID: "deadbeef-01"}, {Number: 3, UUID: "deadbeef-03"}}
	if diff := cmp.Diff(want, Partitions(b, 512)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPartitionsGPT(t *testing.T) {
	const sector = 512
	b := make([]byte, 34*sector)
	b[446+4] = 0xEE // protective MBR
	b[510], b[511] = 0x55, 0xAA
	h := b[sector:]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint64(h[72:], 2) // entries at LBA 2
	binary.LittleEndian.PutUint32(h[80:], 128)
	binary.LittleEndian.PutUint32(h[84:], 128)
	e := b[2*sector+128:] // entry 2
	copy(e[0:16], []byte{1})
	// GUID 01020304-0506-0708-090a-0b0c0d0e0f10 in GPT's mixed-endian layout.
	copy(e[16:32], []byte{4, 3, 2, 1, 6, 5, 8, 7, 9, 10, 11, 12, 13, 14, 15, 16})
	for i, r := range utf16.Encode([]rune("root")) {
		binary.LittleEndian.PutUint16(e[56+2*i:], r)
	}
	want := []Partition{{Number: 2, UUID: "01020304-0506-0708-090a-0b0c0d0e0f10", Label: "root"}}
	got := Partitions(b, sector)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if !Matches("PARTUUID=01020304-0506-0708-090A-0B0C0D0E0F10", Identity{}, &got[0]) || !Matches("PARTLABEL=root", Identity{}, &got[0]) {
		t.Error("Matches disagrees with Partitions")
	}
}

// FuzzIdentify feeds arbitrary device contents: no panic, whatever the bytes.
func FuzzIdentify(f *testing.F) {
	f.Add(make([]byte, 2048))
	f.Add(append(make([]byte, 1024+0x38), 0x53, 0xEF))
	f.Add([]byte("LUKS\xba\xbe\x00\x02"))
	f.Add([]byte("XFSB"))
	f.Fuzz(func(t *testing.T, b []byte) {
		Identify(b)
		Partitions(b, 512)
		Partitions(b, 4096)
	})
}
