package luks

import (
	"bytes"
	"context"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These helpers drive the real cryptsetup on plain files (no dm-crypt needed: luksFormat,
// luksAddKey, luksDump and offline reencrypt work on files). cryptsetup is the oracle: the
// volume key we derive must be the one it dumps.

// needCryptsetup skips the test when cryptsetup is missing, unless the environment says
// peers are required (make test), in which case it fails.
func needCryptsetup(t testing.TB) string {
	t.Helper()
	p, err := exec.LookPath("cryptsetup")
	if err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("cryptsetup not found and NBDROOT_REQUIRE_PEERS=1: %v", err)
		}
		t.Skipf("cryptsetup not found: %v", err)
	}
	return p
}

// cryptsetupTimeout bounds every cryptsetup run: with the small KDF costs the tests use,
// each takes well under a second; a run that does not finish has been given real costs by
// mistake or waits for input, and must fail rather than hang the suite.
const cryptsetupTimeout = 2 * time.Minute

// runCryptsetup runs cryptsetup with args, feeding stdin, and fails the test on error.
func runCryptsetup(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cryptsetupTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "cryptsetup", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("cryptsetup %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// writeKeyFile writes a passphrase to a file for --key-file and returns its path.
func writeKeyFile(t testing.TB, dir, name string, pass []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pass, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// luksFormat creates an image of size bytes in dir and formats it with the passphrase and
// extra luksFormat arguments (type, cipher, KDF, costs, sector size…).
func luksFormat(t testing.TB, dir string, size int64, pass []byte, args ...string) string {
	t.Helper()
	img := filepath.Join(dir, "luks.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	a := append([]string{"luksFormat", "--batch-mode", "--key-file", "-"}, args...)
	runCryptsetup(t, pass, append(a, img)...)
	return img
}

// luksAddKey adds newPass to img (opening with oldPass), with extra arguments such as
// --key-slot or KDF settings.
func luksAddKey(t testing.TB, img string, oldPass, newPass []byte, args ...string) {
	t.Helper()
	dir := t.TempDir()
	oldF := writeKeyFile(t, dir, "old", oldPass)
	newF := writeKeyFile(t, dir, "new", newPass)
	a := append([]string{"luksAddKey", "--batch-mode", "--key-file", oldF}, args...)
	runCryptsetup(t, nil, append(a, img, newF)...)
}

var mkDumpRE = regexp.MustCompile(`(?s)MK dump:\s*(.*)$`)

// dumpVolumeKey asks cryptsetup for the volume key (luksDump --dump-volume-key; 2.6 also
// accepts it for LUKS1, older versions call it --dump-master-key).
func dumpVolumeKey(t testing.TB, img string, pass []byte) []byte {
	t.Helper()
	kf := writeKeyFile(t, t.TempDir(), "key", pass)
	out := runCryptsetup(t, nil, "luksDump", "--dump-volume-key", "--batch-mode", "--key-file", kf, img)
	m := mkDumpRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no MK dump in luksDump output:\n%s", out)
	}
	h := strings.Map(func(r rune) rune {
		if strings.ContainsRune("0123456789abcdef", r) {
			return r
		}
		return -1
	}, m[1])
	key, err := hex.DecodeString(h)
	if err != nil || len(key) == 0 {
		t.Fatalf("cannot parse MK dump %q: %v", m[1], err)
	}
	return key
}

var (
	luks1OffsetRE = regexp.MustCompile(`Payload offset:\s*(\d+)`)
	luks2OffsetRE = regexp.MustCompile(`(?s)Data segments:.*?offset:\s*(\d+) \[bytes\]`)
)

// dumpDataOffset asks cryptsetup luksDump where the data segment starts, in bytes.
func dumpDataOffset(t testing.TB, img string) int64 {
	t.Helper()
	out := runCryptsetup(t, nil, "luksDump", img)
	if m := luks2OffsetRE.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n
	}
	if m := luks1OffsetRE.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		return n * 512
	}
	t.Fatalf("no data offset in luksDump output:\n%s", out)
	return 0
}

// openImage opens img and parses its header, failing the test on error.
func openImage(t testing.TB, img string) (*Volume, *os.File) {
	t.Helper()
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	v, err := Open(f)
	if err != nil {
		t.Fatalf("Open(%s): %v", img, err)
	}
	return v, f
}
