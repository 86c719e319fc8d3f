package luks

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// Small images made by cryptsetup and committed under testdata, so the unit tests and the
// fuzz seed corpus run on machines without cryptsetup. Regenerate them (and the seeds)
// with:
//
//	go test ./luks -run TestFixtures -update
var update = flag.Bool("update", false, "regenerate testdata fixtures and fuzz seeds with cryptsetup")

// fixture describes one committed image: how it was made and what cryptsetup said about it.
type fixture struct {
	File       string   `json:"file"`
	Format     []string `json:"format"` // luksFormat arguments
	Passphrase string   `json:"passphrase"`
	VolumeKey  string   `json:"volume_key"`  // hex, from luksDump --dump-volume-key
	DataOffset int64    `json:"data_offset"` // bytes, from luksDump
	Version    int      `json:"version"`
	Cipher     string   `json:"cipher"`
	SectorSize int      `json:"sector_size"`
}

// fixtureSpecs are the images -update makes. They are kept small: a 128-bit or 256-bit
// key makes a 64 000 or 128 000-byte AF area, and the file is cut after the last keyslot.
var fixtureSpecs = []fixture{
	{File: "luks1-cbc-essiv-sha1.img", Passphrase: "fixture one",
		Format: []string{"--type", "luks1", "--cipher", "aes-cbc-essiv:sha256", "--key-size", "128", "--hash", "sha1", "--pbkdf-force-iterations", "1000"}},
	{File: "luks2-argon2id-4096.img", Passphrase: "fixture two",
		Format: []string{"--type", "luks2", "--cipher", "aes-xts-plain64", "--key-size", "256", "--sector-size", "4096",
			"--pbkdf", "argon2id", "--pbkdf-force-iterations", "4", "--pbkdf-memory", "64", "--pbkdf-parallel", "2",
			"--luks2-metadata-size", "16k", "--luks2-keyslots-size", "256k", "--label", "nbdroot-fixture"}},
}

const fixturesIndex = "testdata/fixtures.json"

func loadFixtures(t *testing.T) []fixture {
	t.Helper()
	b, err := os.ReadFile(fixturesIndex)
	if err != nil {
		t.Fatalf("%v (regenerate with go test ./luks -run TestFixtures -update)", err)
	}
	var fx []fixture
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	return fx
}

// TestFixtures unlocks the committed images without cryptsetup: the key must be the one
// cryptsetup dumped when the image was made.
func TestFixtures(t *testing.T) {
	if *update {
		regenerateFixtures(t)
	}
	for _, fx := range loadFixtures(t) {
		t.Run(fx.File, func(t *testing.T) {
			v, f := openImage(t, filepath.Join("testdata", fx.File))
			if v.Version != fx.Version || v.Segment.Cipher != fx.Cipher || v.Segment.SectorSize != fx.SectorSize || v.Segment.Offset != fx.DataOffset {
				t.Errorf("header: version %d cipher %s sector %d offset %d; want %d %s %d %d",
					v.Version, v.Segment.Cipher, v.Segment.SectorSize, v.Segment.Offset, fx.Version, fx.Cipher, fx.SectorSize, fx.DataOffset)
			}
			key, err := v.Unlock([]byte(fx.Passphrase), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(key.Bytes()); got != fx.VolumeKey {
				t.Errorf("volume key %s, want %s", got, fx.VolumeKey)
			}
			if _, err := v.Unlock([]byte(fx.Passphrase+"x"), nil); !errors.Is(err, ErrWrongPassphrase) {
				t.Errorf("wrong passphrase: %v", err)
			}
			// The image is cut after the keyslots: it ends before the data.
			size, err := DeviceSize(f)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := v.Table(key, TableOptions{Device: "/dev/nbd0", DeviceSize: size}); err == nil {
				t.Error("Table accepted a device that ends before the data offset")
			}
			tb, err := v.Table(key, TableOptions{Device: "/dev/nbd0", DeviceSize: fx.DataOffset + 1<<20})
			if err != nil {
				t.Fatal(err)
			}
			if tb.Offset != uint64(fx.DataOffset/512) || tb.Cipher != fx.Cipher {
				t.Errorf("table %s", tb)
			}
		})
	}
}

// regenerateFixtures remakes testdata/*.img, testdata/fixtures.json and the fuzz seeds.
func regenerateFixtures(t *testing.T) {
	needCryptsetup(t)
	var out []fixture
	for _, spec := range fixtureSpecs {
		dir := t.TempDir()
		pass := []byte(spec.Passphrase)
		img := luksFormat(t, dir, 4<<20, pass, spec.Format...)
		fx := spec
		fx.VolumeKey = hex.EncodeToString(dumpVolumeKey(t, img, pass))
		fx.DataOffset = dumpDataOffset(t, img)
		v, _ := openImage(t, img)
		fx.Version, fx.Cipher, fx.SectorSize = v.Version, v.Segment.Cipher, v.Segment.SectorSize
		end := int64(0)
		for _, k := range v.Keyslots {
			end = max(end, k.AreaOffset+k.afLength())
		}
		b := readFile(t, img)[:end]
		writeFile(t, filepath.Join("testdata", fx.File), b)
		out = append(out, fx)
		writeSeeds(t, fx, b)
	}
	js, err := json.MarshalIndent(out, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, fixturesIndex, append(js, '\n'))
}

// writeSeeds writes fuzz seed corpus entries derived from a fixture: the LUKS1 header, or
// the LUKS2 primary header trimmed of trailing zeros and its JSON text.
func writeSeeds(t *testing.T, fx fixture, img []byte) {
	name := fx.File[:len(fx.File)-len(filepath.Ext(fx.File))]
	if fx.Version == 1 {
		writeSeed(t, "FuzzLUKS1Header", name, img[:luks1HeaderSize])
		writeSeed(t, "FuzzOpen", name, img[:luks1HeaderSize], byte(0))
		writeSeed(t, "FuzzUnlock", name, img[:luks1HeaderSize], byte(0))
		return
	}
	size := binary.BigEndian.Uint64(img[luks2OffHdrSize:])
	primary := bytes.TrimRight(img[:size], "\x00")
	js := img[luks2BinSize:size]
	js = js[:bytes.IndexByte(js, 0)]
	writeSeed(t, "FuzzLUKS2JSON", name, js)
	for _, mode := range []byte{0, fuzzSealPrimary, fuzzSealPrimary | fuzzMirror} {
		writeSeed(t, "FuzzOpen", name+"-mode"+strconv.Itoa(int(mode)), primary, mode)
	}
	writeSeed(t, "FuzzUnlock", name, primary, fuzzSealPrimary|fuzzMirror)
}

// writeSeed writes one entry of testdata/fuzz/NAME in the go test fuzz v1 format.
func writeSeed(t *testing.T, fuzzName, seed string, data []byte, extra ...byte) {
	t.Helper()
	dir := filepath.Join("testdata", "fuzz", fuzzName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
	for _, b := range extra {
		s += fmt.Sprintf("byte(%q)\n", b)
	}
	writeFile(t, filepath.Join(dir, seed), []byte(s))
}
