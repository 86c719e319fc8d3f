package initramfs

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/u-root/u-root/pkg/cpio"
	"github.com/ulikunitz/xz"

	"github.com/nbdroot/nbdroot/initramfs/inittest"
	"github.com/nbdroot/nbdroot/kernelcfg"
	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/kmod/depmod"
	"github.com/nbdroot/nbdroot/kmod/kmodtest"
)

// fixture is a client root with a synthetic modules directory, a fake init binary and a
// firmware file, in a temporary directory.
type fixture struct {
	root, modules, init, out string
}

func newFixture(t *testing.T) fixture {
	t.Helper()
	root := t.TempDir()
	f := fixture{
		root:    root,
		modules: filepath.Join(root, "lib", "modules", "6.1.0-test"),
		init:    filepath.Join(root, "nbdroot-init"),
		out:     filepath.Join(t.TempDir(), "kernel26.img"),
	}
	if err := kmodtest.Debian61().Write(f.modules); err != nil {
		t.Fatal(err)
	}
	if err := inittest.Write(f.init, inittest.Init); err != nil {
		t.Fatal(err)
	}
	fw := filepath.Join(root, "lib", "firmware", "rtl_nic", "rtl8168h-2.fw")
	if err := os.MkdirAll(filepath.Dir(fw), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(fw, []byte("firmware blob"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f fixture) opts() Options {
	return Options{ModulesDir: f.modules, Init: f.init, Output: f.out, SysClassNet: "/nonexistent"}
}

// readImage decompresses an image with the Go decoder of c and returns its cpio records
// by name, and the raw archive.
func readImage(t *testing.T, path string, c Compression) (map[string]cpio.Record, []string, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	archive := decompress(t, raw, c)
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(archive)))
	if err != nil {
		t.Fatalf("reading the cpio archive: %v", err)
	}
	byName := map[string]cpio.Record{}
	var order []string
	for _, r := range recs {
		if _, dup := byName[r.Name]; dup {
			t.Errorf("%s appears twice in the archive", r.Name)
		}
		byName[r.Name] = r
		order = append(order, r.Name)
	}
	return byName, order, archive
}

func decompress(t *testing.T, raw []byte, c Compression) []byte {
	t.Helper()
	var r io.Reader
	switch c {
	case Zstd:
		d, err := zstd.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		r = d
	case Gzip:
		g, err := gzip.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		r = g
	case XZ:
		x, err := xz.NewReader(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		r = x
	case LZ4:
		r = lz4.NewReader(bytes.NewReader(raw))
	case None:
		return raw
	}
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("%s: %v", c, err)
	}
	return out
}

func content(t *testing.T, r cpio.Record) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBuildLayout(t *testing.T) {
	f := newFixture(t)
	key := filepath.Join(f.root, "secret.key")
	if err := os.WriteFile(key, []byte("key material"), 0o644); err != nil {
		t.Fatal(err)
	}
	extra := filepath.Join(f.root, "extra")
	if err := os.MkdirAll(filepath.Join(extra, "sub"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(extra, "sub", "tool"), []byte("#!/bin/tool"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("sub/tool", filepath.Join(extra, "link")); err != nil {
		t.Fatal(err)
	}
	opts := f.opts()
	opts.Compression = None
	opts.Keyfiles = []File{{Src: key, Dst: "/etc/keys/root.key"}}
	opts.Files = []File{{Src: extra, Dst: "/opt/extra"}}
	opts.AddModules = []string{"tg3"}
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	recs, order, _ := readImage(t, f.out, None)

	type node struct {
		Mode         uint64
		Rmajor, Rmin uint64
	}
	checks := []struct {
		name string
		want node
	}{
		{"init", node{Mode: cpio.S_IFREG | 0o755}},
		{"dev/console", node{Mode: cpio.S_IFCHR | 0o600, Rmajor: 5, Rmin: 1}},
		{"dev/null", node{Mode: cpio.S_IFCHR | 0o666, Rmajor: 1, Rmin: 3}},
		{"etc/nbdroot/hooks", node{Mode: cpio.S_IFREG | 0o644}},
		{"etc/keys/root.key", node{Mode: cpio.S_IFREG | 0o400}},
		{"opt/extra/sub", node{Mode: cpio.S_IFDIR | 0o750}},
		{"opt/extra/sub/tool", node{Mode: cpio.S_IFREG | 0o700}},
		{"opt/extra/link", node{Mode: cpio.S_IFLNK | 0o777}},
		{"lib/modules/6.1.0-test/" + kmod.IndexName, node{Mode: cpio.S_IFREG | 0o644}},
		{"lib/modules/6.1.0-test/kernel/fs/ext4/ext4.ko", node{Mode: cpio.S_IFREG | 0o644}},
		{"lib/firmware/rtl_nic/rtl8168h-2.fw", node{Mode: cpio.S_IFREG | 0o644}},
	}
	for _, d := range Dirs {
		checks = append(checks, struct {
			name string
			want node
		}{strings.TrimPrefix(d, "/"), node{Mode: cpio.S_IFDIR | 0o755}})
	}
	for _, c := range checks {
		r, ok := recs[c.name]
		if !ok {
			t.Errorf("%s missing from the image", c.name)
			continue
		}
		if diff := cmp.Diff(c.want, node{r.Mode, r.Rmajor, r.Rminor}); diff != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, diff)
		}
	}
	for _, a := range Applets {
		r, ok := recs[strings.TrimPrefix(a, "/")]
		if !ok || r.Mode != cpio.S_IFLNK|0o777 || content(t, r) != InitPath {
			t.Errorf("applet %s: %v, want a symlink to %s", a, r.Info, InitPath)
		}
	}
	if got := content(t, recs["init"]); got != string(mustRead(t, f.init)) {
		t.Errorf("/init is not the init binary (%d bytes)", len(got))
	}
	if got := content(t, recs["etc/keys/root.key"]); got != "key material" {
		t.Errorf("keyfile = %q", got)
	}
	if got := content(t, recs["etc/nbdroot/hooks"]); got != "base\nudev\nnet\nnbd\nencrypt\nfilesystems\n" {
		t.Errorf("hooks file = %q", got)
	}
	if got := content(t, recs["opt/extra/link"]); got != "sub/tool" {
		t.Errorf("symlink target = %q", got)
	}

	// Reproducible metadata, parents before children, unique inode numbers.
	seenIno := map[uint64]string{}
	for i, name := range order {
		r := recs[name]
		if r.UID != 0 || r.GID != 0 || r.MTime != 0 {
			t.Errorf("%s: uid %d gid %d mtime %d, want 0 0 0", name, r.UID, r.GID, r.MTime)
		}
		if other, dup := seenIno[r.Ino]; dup {
			t.Errorf("%s and %s share inode %d", name, other, r.Ino)
		}
		seenIno[r.Ino] = name
		if r.Mode&cpio.S_IFMT != cpio.S_IFDIR && r.NLink != 1 {
			t.Errorf("%s: nlink %d, want 1 (the kernel treats nlink ≥ 2 as a hard link)", name, r.NLink)
		}
		if dir := filepath.Dir(name); dir != "." && !slices.Contains(order[:i], dir) {
			t.Errorf("%s comes before its directory %s", name, dir)
		}
	}

	// The module index: hooks load what they asked for; NIC drivers are listed.
	ix, err := kmod.ReadIndex(strings.NewReader(content(t, recs["lib/modules/6.1.0-test/"+kmod.IndexName])))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ix.Modules {
		if _, ok := recs["lib/modules/6.1.0-test/"+m.Path]; !ok {
			t.Errorf("index lists %s at %s, not in the image", m.Name, m.Path)
		}
	}
	wantHooks := []kmod.Hook{
		{Name: "base", Optional: []string{"tg3"}}, // --add-module: first hook
		{Name: "udev", Optional: []string{"virtio_pci"}},
		{Name: "net"}, // no modules of its own (af_packet is built in), listed all the same
		{Name: "nbd", Modules: []string{"nbd"}},
		{Name: "encrypt", Modules: []string{"dm_mod", "dm_crypt", "xts", "ecb"}, Optional: []string{"aesni_intel", "essiv", "sha512_generic"}},
		{Name: "filesystems", Modules: []string{"ext4"}},
	}
	if diff := cmp.Diff(wantHooks, ix.Hooks); diff != "" {
		t.Errorf("index hooks (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(CommonNICs, ix.NICs); diff != "" {
		t.Errorf("index NICs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"af_packet", "cbc", "sha256_generic"}, ix.Builtin); diff != "" {
		t.Errorf("index builtin (-want +got):\n%s", diff)
	}
	if mods, _ := ix.Lookup("pci:v000010ECd00008168sv00001043sd00008677bc02sc00i00"); !cmp.Equal(mods, []string{"r8169"}) {
		t.Errorf("the index does not map a RTL8168 modalias to r8169: %v", mods)
	}

	// The summary tells the same story.
	if sum.KVer != "6.1.0-test" || sum.Compression != None || sum.ImageSize != int64(len(mustRead(t, f.out))) {
		t.Errorf("summary %+v", sum)
	}
	if !slices.Contains(sum.Modules, "ext4") || !slices.Contains(sum.Firmware, "rtl_nic/rtl8168h-2.fw") {
		t.Errorf("summary modules %v firmware %v", sum.Modules, sum.Firmware)
	}
	var text bytes.Buffer
	if err := sum.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"6.1.0-test", "base udev net nbd encrypt filesystems", "ext4", "r8169"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("summary text lacks %q:\n%s", s, text.String())
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBuildReproducible(t *testing.T) {
	f := newFixture(t)
	a, b := filepath.Join(t.TempDir(), "a.img"), filepath.Join(t.TempDir(), "b.img")
	x, y := filepath.Join(f.root, "x"), filepath.Join(f.root, "y")
	os.WriteFile(x, []byte("x"), 0o644)
	os.WriteFile(y, []byte("y"), 0o644)
	opts := f.opts()
	opts.Output = a
	opts.Files = []File{{Src: x, Dst: "/etc/x"}, {Src: y, Dst: "/etc/y"}}
	if _, err := Build(opts); err != nil {
		t.Fatal(err)
	}
	// Same inputs, files given in another order, sources touched: same bytes.
	opts.Output = b
	opts.Files = []File{opts.Files[1], opts.Files[0]}
	if err := os.Chtimes(x, time1, time1); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mustRead(t, a), mustRead(t, b)) {
		t.Fatal("two builds from the same inputs differ")
	}
	// SOURCE_DATE_EPOCH-style mtime shows in every record.
	opts.MTime = 1700000000
	opts.Compression = None
	if _, err := Build(opts); err != nil {
		t.Fatal(err)
	}
	recs, _, _ := readImage(t, b, None)
	for name, r := range recs {
		if r.MTime != 1700000000 {
			t.Fatalf("%s: mtime %d, want 1700000000", name, r.MTime)
		}
	}
}

var time1 = mustTime("2020-01-02T03:04:05Z")

func TestBuildCompressions(t *testing.T) {
	f := newFixture(t)
	opts := f.opts()
	opts.Compression = None
	opts.Output = filepath.Join(t.TempDir(), "none.img")
	if _, err := Build(opts); err != nil {
		t.Fatal(err)
	}
	plain := mustRead(t, opts.Output)
	tools := map[Compression][]string{
		Zstd: {"zstd", "-dc"}, Gzip: {"gzip", "-dc"}, XZ: {"xz", "-dc"}, LZ4: {"lz4", "-dc"},
	}
	for _, c := range []Compression{Zstd, Gzip, XZ, LZ4} {
		t.Run(string(c), func(t *testing.T) {
			opts.Compression = c
			opts.Output = filepath.Join(t.TempDir(), "img."+string(c))
			sum, err := Build(opts)
			if err != nil {
				t.Fatal(err)
			}
			raw := mustRead(t, opts.Output)
			if sum.ImageSize != int64(len(raw)) || sum.ArchiveSize != int64(len(plain)) {
				t.Errorf("summary sizes %d/%d, want %d/%d", sum.ImageSize, sum.ArchiveSize, len(raw), len(plain))
			}
			if got := decompress(t, raw, c); !bytes.Equal(got, plain) {
				t.Errorf("Go decoder: archive differs from the uncompressed build")
			}
			checkKernelFormat(t, c, raw)
			tool := tools[c]
			if _, err := exec.LookPath(tool[0]); err != nil {
				if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
					t.Fatalf("%s not installed", tool[0])
				}
				t.Skipf("%s not installed", tool[0])
			}
			cmd := exec.Command(tool[0], tool[1:]...)
			cmd.Stdin = bytes.NewReader(raw)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			got, err := cmd.Output()
			if err != nil {
				t.Fatalf("%s: %v: %s", tool[0], err, stderr.String())
			}
			if !bytes.Equal(got, plain) {
				t.Errorf("%s: archive differs from the uncompressed build", tool[0])
			}
		})
	}
}

// checkKernelFormat checks the frame details the kernel's initramfs decompressors need
// (lib/decompress_*.c), which a round trip through a full-featured decoder would not catch.
func checkKernelFormat(t *testing.T, c Compression, raw []byte) {
	t.Helper()
	switch c {
	case LZ4:
		// decompress_unlz4.c reads only the legacy format: magic 0x184C2102.
		if len(raw) < 4 || binary.LittleEndian.Uint32(raw) != 0x184C2102 {
			t.Errorf("lz4: magic % x, want the legacy frame magic 02 21 4c 18", raw[:4])
		}
	case XZ:
		// Stream header: magic, then flags 0x00 0x01 = CRC32 (the kernel cannot check CRC64).
		if !bytes.HasPrefix(raw, []byte("\xfd7zXZ\x00")) || raw[6] != 0 || raw[7] != 1 {
			t.Errorf("xz: stream header % x, want check type CRC32 (00 01)", raw[:8])
		}
	case Zstd:
		// Frame header: the window must stay what the kernel can allocate early.
		if binary.LittleEndian.Uint32(raw) != 0xFD2FB528 {
			t.Fatalf("zstd: magic % x", raw[:4])
		}
		fhd := raw[4]
		if fhd&0x20 == 0 { // not single-segment: a window descriptor follows
			wd := raw[5]
			base := uint64(1) << (10 + wd>>3)
			window := base + base/8*uint64(wd&7)
			if window > zstdWindow {
				t.Errorf("zstd: window %d bytes, want ≤ %d", window, zstdWindow)
			}
		}
	case Gzip:
		// Header mtime (bytes 4–7) is 0: nothing of the build time leaks in.
		if binary.LittleEndian.Uint32(raw[4:8]) != 0 {
			t.Errorf("gzip: header mtime %d, want 0", binary.LittleEndian.Uint32(raw[4:8]))
		}
	}
}

func TestBuildErrors(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		name  string
		edit  func(*Options)
		check func(error) string // "" when the error is as expected
	}{
		{"unknown hooks, all at once", func(o *Options) { o.Hooks = []string{"base", "resume", "udev", "mdadm_udev"} }, func(err error) string {
			var ue *UnknownHookError
			if !errors.As(err, &ue) || !slices.Equal(ue.Names, []string{"resume", "mdadm_udev"}) || !strings.Contains(err.Error(), "filesystems") {
				return "want an UnknownHookError naming resume and mdadm_udev and listing the known hooks"
			}
			return ""
		}},
		{"missing module", func(o *Options) { o.AddModules = []string{"zfs"} }, func(err error) string {
			var me *depmod.MissingError
			if !errors.As(err, &me) || me.Name != "zfs" || me.By != "--add-module" {
				return "want a MissingError for zfs by --add-module"
			}
			return ""
		}},
		{"explicit NIC missing", func(o *Options) { o.NICs = "e1000,bnx2" }, func(err error) string {
			if !strings.Contains(err.Error(), "bnx2") || !strings.Contains(err.Error(), "--nics") {
				return "want an error naming bnx2 and --nics"
			}
			return ""
		}},
		{"no init", func(o *Options) { o.Init = filepath.Join(f.root, "nope") }, func(err error) string {
			if !errors.Is(err, os.ErrNotExist) {
				return "want ErrNotExist"
			}
			return ""
		}},
		{"file over /init", func(o *Options) {
			o.Files = []File{{Src: filepath.Join(f.root, "lib/firmware/rtl_nic/rtl8168h-2.fw"), Dst: "/init"}}
		}, func(err error) string {
			var ce *ConflictError
			if !errors.As(err, &ce) || ce.Path != "/init" {
				return "want a ConflictError on /init"
			}
			return ""
		}},
		{"file under a file", func(o *Options) { o.Files = []File{{Src: f.init, Dst: "/init/x"}} }, func(err error) string {
			var ce *ConflictError
			if !errors.As(err, &ce) {
				return "want a ConflictError"
			}
			return ""
		}},
		{"keyfile is a directory", func(o *Options) { o.Keyfiles = []File{{Src: f.root, Dst: "/k"}} }, func(err error) string {
			if !strings.Contains(err.Error(), "not a regular file") {
				return "want 'not a regular file'"
			}
			return ""
		}},
		{"no hooks", func(o *Options) { o.Hooks = []string{} }, func(err error) string {
			if !strings.Contains(err.Error(), "no hooks") {
				return "want 'no hooks'"
			}
			return ""
		}},
		{"bad compression", func(o *Options) { o.Compression = "bzip2" }, func(err error) string {
			if !strings.Contains(err.Error(), "bzip2") {
				return "want the name bzip2"
			}
			return ""
		}},
		{"no modules dir", func(o *Options) { o.ModulesDir = filepath.Join(f.root, "none") }, func(err error) string {
			if err == nil {
				return "want an error"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := f.opts()
			opts.Output = filepath.Join(t.TempDir(), "out.img")
			tt.edit(&opts)
			_, err := Build(opts)
			if err == nil {
				t.Fatal("Build succeeded")
			}
			if msg := tt.check(err); msg != "" {
				t.Errorf("err = %v: %s", err, msg)
			}
			if _, serr := os.Stat(opts.Output); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("a failed build left %s behind", opts.Output)
			}
			if ents, _ := os.ReadDir(filepath.Dir(opts.Output)); len(ents) != 0 {
				t.Errorf("a failed build left temporary files: %v", ents)
			}
		})
	}
}

func TestBuildHooksWithoutNetwork(t *testing.T) {
	f := newFixture(t)
	opts := f.opts()
	opts.Hooks = []string{"base", "nbd"}
	opts.Compression = None
	sum, err := Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.NICs) != 0 || !cmp.Equal(sum.Modules, []string{"nbd"}) {
		t.Errorf("modules %v NICs %v, want only nbd and no NIC drivers", sum.Modules, sum.NICs)
	}
}

// testKernelModules returns the cached test kernel's modules directory, or skips (fails
// when NBDROOT_REQUIRE_PEERS=1, as under make test, which fetches the kernel first).
func testKernelModules(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NBDROOT_KERNEL")
	if dir == "" {
		home, _ := os.UserHomeDir()
		cache := os.Getenv("NBDROOT_CACHE")
		if cache == "" {
			cache = filepath.Join(home, ".cache", "nbdroot")
		}
		dir = filepath.Join(cache, "kernel", "current")
	}
	mods := filepath.Join(dir, "modules")
	if _, err := os.Stat(filepath.Join(mods, "modules.builtin")); err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("test kernel modules not found at %s (run scripts/deps.sh kernel): %v", mods, err)
		}
		t.Skipf("test kernel modules not found at %s", mods)
	}
	return mods
}

// modulesBudget is what the default image's modules may cost compressed: the issue's
// 5 MiB floor for the default image, minus 3.5 MiB kept for the nbdroot-init binary
// (about 9 MB of Go binary at zstd's ratio on it).
const modulesBudget = 1536 << 10

func TestBuildRealKernelDefault(t *testing.T) {
	mods := testKernelModules(t)
	dir := t.TempDir()
	init := filepath.Join(dir, "init")
	if err := inittest.Write(init, inittest.Init); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "kernel26.img")
	sum, err := Build(Options{ModulesDir: mods, Init: init, Output: out, SysClassNet: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"nbd", "dm_mod", "dm_crypt", "xts", "ecb", "ext4", "jbd2", "mbcache", "crc16",
		"crc32c_generic", "virtio_pci", "virtio_net", "e1000", "e1000e", "igc", "r8169"} {
		if !slices.Contains(sum.Modules, m) {
			t.Errorf("default image lacks %s: %v", m, sum.Modules)
		}
	}
	if !slices.Contains(sum.Builtin, "af_packet") {
		t.Errorf("af_packet should be reported built in: %v", sum.Builtin)
	}
	if sum.ImageSize > modulesBudget {
		t.Errorf("default image without init is %d bytes, budget %d: the init would not fit in 5 MiB", sum.ImageSize, modulesBudget)
	}
	for _, w := range sum.Warnings {
		if strings.Contains(w, "kernel lacks") {
			t.Errorf("Debian's kernel should have what the default hooks need: %s", w)
		}
	}
	t.Logf("default image without init: %d bytes, %d modules (%d bytes uncompressed)", sum.ImageSize, len(sum.Modules), sum.ModulesSize)
}

func TestBuildKernelConfigWarnings(t *testing.T) {
	f := newFixture(t)
	frag, err := kernelcfg.Fragment(nil, "zstd")
	if err != nil {
		t.Fatal(err)
	}
	// The client kernel's config, found beside its modules (ROOT/boot/config-VER), with
	// NBD switched off.
	cfg := strings.ReplaceAll(frag, "CONFIG_BLK_DEV_NBD=y", "# CONFIG_BLK_DEV_NBD is not set")
	if cfg == frag {
		t.Fatal("fragment has no CONFIG_BLK_DEV_NBD=y line to remove")
	}
	boot := filepath.Join(f.root, "boot")
	if err := os.MkdirAll(boot, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(boot, "config-6.1.0-test"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	sum, err := Build(f.opts())
	if err != nil {
		t.Fatal(err)
	}
	var nbd []string
	for _, w := range sum.Warnings {
		if strings.Contains(w, "BLK_DEV_NBD") {
			nbd = append(nbd, w)
		}
		if strings.Contains(w, "no kernel .config") {
			t.Errorf("config beside the modules not found: %s", w)
		}
	}
	if len(nbd) != 1 || !strings.Contains(nbd[0], "hook nbd") {
		t.Errorf("warnings %q, want one naming BLK_DEV_NBD and the nbd hook", sum.Warnings)
	}

	// --kernel-config pointing at the unmodified fragment: no warning about NBD.
	good := filepath.Join(f.root, "good.config")
	if err := os.WriteFile(good, []byte(frag), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := f.opts()
	opts.KernelConfig = good
	sum, err = Build(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range sum.Warnings {
		if strings.Contains(w, "kernel lacks") {
			t.Errorf("unexpected warning with a complete config: %s", w)
		}
	}
}
