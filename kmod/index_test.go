package kmod

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// testIndex is a small index shaped like an image's: ext4 with soft dependencies, dm_crypt
// on dm_mod, virtio and e1000 with device aliases.
func testIndex() *Index {
	return &Index{
		KVer: "6.1.0-test",
		Modules: []Module{
			{Name: "nbd", Path: "kernel/drivers/block/nbd.ko"},
			{Name: "dm_mod", Path: "kernel/drivers/md/dm-mod.ko"},
			{Name: "dm_crypt", Path: "kernel/drivers/md/dm-crypt.ko", Deps: []string{"dm_mod"}},
			{Name: "ecb", Path: "kernel/crypto/ecb.ko"},
			{Name: "xts", Path: "kernel/crypto/xts.ko", Soft: []string{"ecb"}},
			{Name: "crc32c_generic", Path: "kernel/crypto/crc32c_generic.ko"},
			{Name: "crc32c_intel", Path: "kernel/arch/x86/crypto/crc32c-intel.ko"},
			{Name: "jbd2", Path: "kernel/fs/jbd2/jbd2.ko", Soft: []string{"crc32c_generic", "crc32c_intel"}},
			{Name: "mbcache", Path: "kernel/fs/mbcache.ko"},
			{Name: "ext4", Path: "kernel/fs/ext4/ext4.ko", Deps: []string{"jbd2", "mbcache"}, Soft: []string{"crc32c_generic", "crc32c_intel"}},
			{Name: "virtio_ring", Path: "kernel/drivers/virtio/virtio_ring.ko"},
			{Name: "virtio", Path: "kernel/drivers/virtio/virtio.ko", Deps: []string{"virtio_ring"}},
			{Name: "virtio_pci", Path: "kernel/drivers/virtio/virtio_pci.ko", Deps: []string{"virtio_ring", "virtio"}},
			{Name: "virtio_net", Path: "kernel/drivers/net/virtio_net.ko", Deps: []string{"virtio_ring", "virtio"}},
			{Name: "e1000", Path: "kernel/drivers/net/ethernet/intel/e1000/e1000.ko"},
		},
		Aliases: []Alias{
			{Pattern: "crypto_xts", Module: "xts"},
			{Pattern: "crypto_ecb", Module: "ecb"},
			{Pattern: "crypto_crc32c", Module: "crc32c_generic"},
			{Pattern: "crypto_crc32c", Module: "crc32c_intel"},
			{Pattern: "cpu:type:x86,ven*fam*mod*:feature:*0094*", Module: "crc32c_intel"},
			{Pattern: "fs_ext4", Module: "ext4"},
			{Pattern: "block_major_43_*", Module: "nbd"},
			{Pattern: "pci:v00001AF4d*sv*sd*bc*sc*i*", Module: "virtio_pci"},
			{Pattern: "virtio:d00000001v*", Module: "virtio_net"},
			{Pattern: "pci:v00008086d0000100Esv*sd*bc*sc*i*", Module: "e1000"},
			{Pattern: "*:weird*", Module: "nbd"},
		},
		Builtin: []string{"af_packet", "net_pf_17", "crypto_sha256"},
		Hooks: []Hook{
			{Name: "udev", Optional: []string{"virtio_pci"}},
			{Name: "nbd", Modules: []string{"nbd"}},
			{Name: "encrypt", Modules: []string{"dm_crypt", "xts"}},
			{Name: "filesystems", Modules: []string{"ext4"}},
		},
		NICs: []string{"virtio_pci", "virtio_net", "e1000"},
	}
}

var ignoreIndexInternals = cmpopts.IgnoreUnexported(Index{})

func TestIndexRoundTrip(t *testing.T) {
	ix := testIndex()
	var b bytes.Buffer
	n, err := ix.WriteTo(&b)
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(b.Len()) {
		t.Errorf("WriteTo returned %d, wrote %d", n, b.Len())
	}
	got, err := ReadIndex(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(testIndex(), got, ignoreIndexInternals); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	// The text form is what the rescue shell shows: spot-check it.
	for _, line := range []string{
		"nbdroot-modidx 1\n",
		"mod\text4\tkernel/fs/ext4/ext4.ko\tjbd2,mbcache\tcrc32c_generic,crc32c_intel\n",
		"mod\txts\tkernel/crypto/xts.ko\t\tecb\n",
		"hook\tudev\t\tvirtio_pci\n",
	} {
		if !strings.Contains(b.String(), line) {
			t.Errorf("index text lacks %q:\n%s", line, b.String())
		}
	}
}

func TestReadIndexErrors(t *testing.T) {
	tests := []struct {
		name, text string
		wantLine   int
		wantMsg    string
	}{
		{"not an index", "hello\n", 1, "not an nbdroot module index"},
		{"other version", "nbdroot-modidx 2\n", 1, "format version"},
		{"empty", "", 0, "empty"},
		{"dependency listed later", "nbdroot-modidx 1\nmod\ta\ta.ko\tb\nmod\tb\tb.ko\n", 0, `depends on "b"`},
		{"soft dependency unknown", "nbdroot-modidx 1\nmod\ta\ta.ko\t\tzz\n", 0, `depends on "zz"`},
		{"self dependency", "nbdroot-modidx 1\nmod\ta\ta.ko\ta\n", 0, `depends on "a"`},
		{"duplicate module", "nbdroot-modidx 1\nmod\ta\ta.ko\nmod\ta\tb.ko\n", 0, "listed twice"},
		{"absolute path", "nbdroot-modidx 1\nmod\ta\t/a.ko\n", 0, "bad module path"},
		{"escaping path", "nbdroot-modidx 1\nmod\ta\t../a.ko\n", 0, "bad module path"},
		{"not a .ko", "nbdroot-modidx 1\nmod\ta\ta.sh\n", 0, "bad module path"},
		{"alias to unknown module", "nbdroot-modidx 1\nalias\tx\tnope\n", 0, "unknown module"},
		{"hook with unknown module", "nbdroot-modidx 1\nhook\th\tnope\n", 0, "unknown module"},
		{"nic unknown", "nbdroot-modidx 1\nnics\tnope\n", 0, "NIC driver"},
		{"short mod", "nbdroot-modidx 1\nmod\ta\n", 2, "want NAME PATH"},
		{"long alias", "nbdroot-modidx 1\nalias\ta\tb\tc\n", 2, "want PATTERN NAME"},
		{"name with comma", "nbdroot-modidx 1\nmod\ta,b\ta.ko\n", 0, "bad name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadIndex(strings.NewReader(tt.text))
			var ie *IndexError
			if !errors.As(err, &ie) {
				t.Fatalf("err = %v, want *IndexError", err)
			}
			if ie.Line != tt.wantLine || !strings.Contains(ie.Msg, tt.wantMsg) {
				t.Errorf("IndexError{Line: %d, Msg: %q}, want line %d containing %q", ie.Line, ie.Msg, tt.wantLine, tt.wantMsg)
			}
		})
	}
}

func TestReadIndexSkipsCommentsAndUnknownRecords(t *testing.T) {
	ix, err := ReadIndex(strings.NewReader("nbdroot-modidx 1\n# a comment\n\nfuture\tthing\nmod\ta\ta.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ix.Module("a"); !ok || len(ix.Modules) != 1 {
		t.Errorf("modules = %+v", ix.Modules)
	}
}

func TestWriteToRefusesInvalid(t *testing.T) {
	ix := testIndex()
	ix.Aliases = append(ix.Aliases, Alias{Pattern: "a\tb", Module: "nbd"})
	var b bytes.Buffer
	if _, err := ix.WriteTo(&b); err == nil || b.Len() != 0 {
		t.Errorf("WriteTo of an alias with a tab: err %v, wrote %d bytes; want an error and nothing", err, b.Len())
	}
}

func TestIndexLookup(t *testing.T) {
	ix := testIndex()
	if err := ix.Validate(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		wantMods    []string
		wantBuiltin bool
	}{
		{"nbd", []string{"nbd"}, false},
		{"dm-crypt", []string{"dm_crypt"}, false},
		{"crypto-xts", []string{"xts"}, false},
		{"crypto-crc32c", []string{"crc32c_generic", "crc32c_intel"}, false},
		{"fs-ext4", []string{"ext4"}, false},
		{"block-major-43-0", []string{"nbd"}, false},
		{"net-pf-17", nil, true},
		{"af_packet", nil, true},
		{"crypto-ecb(aes)", nil, false},
		{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", []string{"virtio_pci"}, false},
		{"foo:weird", []string{"nbd"}, false}, // a pattern whose bus part is a glob
		{"nothing", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mods, builtin := ix.Lookup(tt.name)
			if diff := cmp.Diff(tt.wantMods, mods); diff != "" || builtin != tt.wantBuiltin {
				t.Errorf("Lookup(%q) = %v, %v; want %v, %v\n%s", tt.name, mods, builtin, tt.wantMods, tt.wantBuiltin, diff)
			}
		})
	}
}

func TestIndexClosure(t *testing.T) {
	ix := testIndex()
	if err := ix.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := ix.Closure([]string{"fs-ext4", "dm_crypt", "af_packet"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"dm_mod", "dm_crypt", "crc32c_generic", "crc32c_intel", "jbd2", "mbcache", "ext4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Closure (-want +got):\n%s", diff)
	}
	_, err = ix.Closure([]string{"nbd", "ghost"})
	if !errors.Is(err, ErrUnknownModule) || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("Closure with an unknown name: err = %v, want ErrUnknownModule naming ghost", err)
	}
	if diff := cmp.Diff([]string{"virtio_ring", "virtio", "virtio_pci"}, ix.HookModules("udev")); diff != "" {
		t.Errorf("HookModules(udev) (-want +got):\n%s", diff)
	}
}

// FuzzReadIndex feeds arbitrary index files (the index is input to PID 1): reading must not
// panic or hang, and an index it accepts must write back to an equal index.
func FuzzReadIndex(f *testing.F) {
	var b bytes.Buffer
	if _, err := testIndex().WriteTo(&b); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte("nbdroot-modidx 1\nmod\ta\ta.ko\nmod\tb\tb.ko\ta\ta\nhook\th\tb\ta\n"))
	f.Add([]byte("nbdroot-modidx 1\nalias\t[\ta\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ReadIndex(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if _, err := ix.WriteTo(&out); err != nil {
			t.Fatalf("accepted index does not write back: %v", err)
		}
		again, err := ReadIndex(&out)
		if err != nil {
			t.Fatalf("written index does not read back: %v", err)
		}
		if diff := cmp.Diff(ix, again, ignoreIndexInternals, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("round trip (-first +second):\n%s", diff)
		}
		for _, m := range ix.Modules {
			ix.Closure([]string{m.Name})
		}
		for _, a := range ix.Aliases {
			ix.Match(a.Pattern)
		}
	})
}

// TestIndexModprobeD: options and blacklist records survive a round trip, and options for a
// module the index lacks, or twice for one module, are refused.
func TestIndexModprobeD(t *testing.T) {
	ix := confIndex()
	var buf bytes.Buffer
	if _, err := ix.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "options\tnbd\tnbds_max=4\n") || !strings.Contains(buf.String(), "blacklist\te1000\n") {
		t.Errorf("index text lacks the options or blacklist record:\n%s", buf.String())
	}
	got, err := ReadIndex(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if got.ModuleParams("nbd") != "nbds_max=4" || !got.Blacklisted("e1000") || got.Blacklisted("nbd") {
		t.Errorf("read back: nbd params %q, e1000 blacklisted %v, nbd %v", got.ModuleParams("nbd"), got.Blacklisted("e1000"), got.Blacklisted("nbd"))
	}
	for name, mod := range map[string]func(*Index){
		"options of an unknown module": func(ix *Index) { ix.Options = []ModuleOptions{{Module: "zfs", Params: "a=1"}} },
		"options twice":                func(ix *Index) { ix.Options = append(ix.Options, ModuleOptions{Module: "nbd", Params: "b=2"}) },
		"empty options":                func(ix *Index) { ix.Options = []ModuleOptions{{Module: "nbd"}} },
		"options with a tab":           func(ix *Index) { ix.Options = []ModuleOptions{{Module: "nbd", Params: "a=1\tb=2"}} },
	} {
		ix := confIndex()
		mod(ix)
		if err := ix.Validate(); err == nil {
			t.Errorf("%s: Validate accepted it", name)
		}
	}
}
