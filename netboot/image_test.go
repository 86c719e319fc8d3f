package netboot

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbdserver"
)

func TestCompareVersions(t *testing.T) {
	ordered := []string{"", "linux", "linux-lts", "5", "6.1", "6.1.0-9-amd64", "6.1.0-18-amd64", "6.1.0-18-amd64+b1", "6.2", "6.12", "6.rc1"}
	for i := range ordered {
		for j := range ordered {
			want := sign(i - j)
			if got := CompareVersions(ordered[i], ordered[j]); got != want {
				t.Errorf("CompareVersions(%q, %q) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
	if CompareVersions("6.01", "6.1") != 0 {
		t.Error("leading zeros should not count")
	}
}

func TestFindKernels(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	fsys := fstest.MapFS{
		"boot/vmlinuz-6.1.0-9-amd64":      file("k9"),
		"boot/nbdroot.img-6.1.0-9-amd64":  file("i9"),
		"boot/vmlinuz-6.1.0-18-amd64":     file("k18"),
		"boot/nbdroot.img-6.1.0-18-amd64": file("i18"),
		"boot/vmlinuz-6.5":                file("no initramfs"),
		"boot/initrd.img-6.5":             file("Debian's, not ours"),
		"boot/vmlinuz-7.0":                file("k7"),
		"boot/nbdroot.img-7.0":            file(""), // empty: not finished writing
		"boot/vmlinuz-6.9 $(reboot)":      file("k"),
		"boot/nbdroot.img-6.9 $(reboot)":  file("i"),
		"boot/vmlinuz-8.0":                &fstest.MapFile{Mode: fs.ModeDir},
		"boot/nbdroot.img-8.0":            file("i"),
		"boot/vmlinuz":                    file("unversioned, ignored while versioned pairs exist"),
		"boot/nbdroot.img":                file("unversioned"),
		"plain/vmlinuz":                   file("k"),
		"plain/nbdroot.img":               file("i"),
		"empty/config-6.1":                file("x"),
	}
	ks, notes, err := FindKernels(fsys, "boot")
	if err != nil {
		t.Fatal(err)
	}
	want := []Kernel{
		{Version: "6.1.0-18-amd64", Kernel: "vmlinuz-6.1.0-18-amd64", Initrd: "nbdroot.img-6.1.0-18-amd64"},
		{Version: "6.1.0-9-amd64", Kernel: "vmlinuz-6.1.0-9-amd64", Initrd: "nbdroot.img-6.1.0-9-amd64"},
	}
	if diff := cmp.Diff(want, ks); diff != "" {
		t.Errorf("kernels (-want +got):\n%s", diff)
	}
	joined := strings.Join(notes, "\n")
	for _, w := range []string{"vmlinuz-6.5 has no nbdroot.img-6.5", "nbdroot.img-7.0: 0 bytes", "vmlinuz-6.9 $(reboot)", "vmlinuz-8.0: not a regular file"} {
		if !strings.Contains(joined, w) {
			t.Errorf("notes lack %q:\n%s", w, joined)
		}
	}
	if ks, _, _ := FindKernels(fsys, "plain"); len(ks) != 1 || ks[0].Kernel != "vmlinuz" || ks[0].Version != "" {
		t.Errorf("unversioned pair: %+v", ks)
	}
	if ks, _, err := FindKernels(fsys, "empty"); len(ks) != 0 || err != nil {
		t.Errorf("no kernels: %+v, %v", ks, err)
	}
	if _, _, err := FindKernels(fsys, "nothing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing directory: %v", err)
	}
}

// writeMBR writes an MBR partitioning a disk of size bytes into parts (start, size in bytes).
func writeMBR(disk []byte, parts ...[2]int64) {
	for i, p := range parts {
		e := disk[446+16*i:]
		e[4] = 0x83
		binary.LittleEndian.PutUint32(e[8:], uint32(p[0]/512))
		binary.LittleEndian.PutUint32(e[12:], uint32(p[1]/512))
	}
	disk[510], disk[511] = 0x55, 0xAA
}

// writeGPT writes a protective MBR and a GPT (512-byte blocks) with parts.
func writeGPT(disk []byte, parts ...[2]int64) {
	disk[446+4] = 0xEE
	binary.LittleEndian.PutUint32(disk[446+8:], 1)
	binary.LittleEndian.PutUint32(disk[446+12:], uint32(len(disk)/512-1))
	disk[510], disk[511] = 0x55, 0xAA
	array := make([]byte, 128*128)
	for i, p := range parts {
		e := array[128*i:]
		copy(e[0:16], "linux filesystem") // any non-zero type GUID
		e[16] = byte(i + 1)
		binary.LittleEndian.PutUint64(e[32:], uint64(p[0]/512))
		binary.LittleEndian.PutUint64(e[40:], uint64((p[0]+p[1])/512-1))
	}
	copy(disk[2*512:], array)
	h := disk[512 : 512+92]
	copy(h, "EFI PART")
	binary.LittleEndian.PutUint32(h[8:], 0x10000)
	binary.LittleEndian.PutUint32(h[12:], 92)
	binary.LittleEndian.PutUint64(h[24:], 1)
	binary.LittleEndian.PutUint64(h[72:], 2)
	binary.LittleEndian.PutUint32(h[80:], 128)
	binary.LittleEndian.PutUint32(h[84:], 128)
	binary.LittleEndian.PutUint32(h[88:], crc32.ChecksumIEEE(array))
	binary.LittleEndian.PutUint32(h[16:], crc32.ChecksumIEEE(h))
}

func TestPartitions(t *testing.T) {
	const mib = 1 << 20
	m := make([]byte, 8*mib)
	writeMBR(m, [2]int64{mib, 2 * mib}, [2]int64{3 * mib, 4 * mib})
	g := make([]byte, 8*mib)
	writeGPT(g, [2]int64{mib, 2 * mib}, [2]int64{3 * mib, 4 * mib})
	badCRC := bytes.Clone(g)
	badCRC[2*512+40] ^= 1
	outside := make([]byte, 8*mib)
	writeMBR(outside, [2]int64{mib, 9 * mib})
	huge := bytes.Clone(g)
	binary.LittleEndian.PutUint32(huge[512+80:], 1<<30)
	want := []Partition{{1, mib, 2 * mib}, {2, 3 * mib, 4 * mib}}
	tests := []struct {
		name    string
		disk    []byte
		want    []Partition
		wantErr string
	}{
		{"MBR", m, want, ""},
		{"GPT", g, want, ""},
		{"no table", make([]byte, mib), nil, ""},
		{"tiny image", []byte{1, 2, 3}, nil, ""},
		{"GPT entry array damaged", badCRC, nil, "GPT: entry array checksum mismatch"},
		{"MBR partition past the end", outside, nil, "MBR: partition 1"},
		{"GPT with 2^30 entries", huge, nil, "GPT: header checksum"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Partitions(bytes.NewReader(tt.disk), int64(len(tt.disk)))
			if tt.wantErr != "" {
				var pe *PartitionError
				if !errors.As(err, &pe) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want a PartitionError with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzPartitions: any first megabyte is a table or an error, never a panic, and entries lie
// inside the image.
func FuzzPartitions(f *testing.F) {
	const mib = 1 << 20
	m := make([]byte, 64<<10)
	writeMBR(m, [2]int64{4096, 8192})
	f.Add(m)
	g := make([]byte, 64<<10)
	writeGPT(g, [2]int64{34 * 512, 8192})
	f.Add(g)
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := Partitions(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Start <= 0 || p.Size <= 0 || p.Start+p.Size > int64(len(b)) {
				t.Fatalf("partition %+v outside an image of %d bytes", p, len(b))
			}
		}
	})
}

// needMke2fs skips without mke2fs, unless NBDROOT_REQUIRE_PEERS=1.
func needMke2fs(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("mke2fs"); err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatal("mke2fs (e2fsprogs) is missing and NBDROOT_REQUIRE_PEERS=1")
		}
		t.Skip("mke2fs (e2fsprogs) is not installed")
	}
}

// mkfs makes an ext4 file system of sizeMB holding files (path → content; content
// "->TARGET" makes a symbolic link) with mke2fs -d, and returns its bytes.
func mkfs(t testing.TB, sizeMB int, files map[string]string) []byte {
	t.Helper()
	needMke2fs(t)
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(tree, 0o755)
	for p, c := range files {
		full := filepath.Join(tree, p)
		os.MkdirAll(filepath.Dir(full), 0o755)
		var err error
		if target, ok := strings.CutPrefix(c, "->"); ok {
			err = os.Symlink(target, full)
		} else if strings.HasSuffix(p, "/") {
			err = os.MkdirAll(full, 0o755)
		} else {
			err = os.WriteFile(full, []byte(c), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(dir, "img")
	out, err := exec.Command("mke2fs", "-q", "-F", "-t", "ext4", "-b", "1024", "-E", "root_owner=0:0", "-d", tree, img, strconv.Itoa(sizeMB)+"M").CombinedOutput()
	if err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// disk assembles a partitioned image: each part at a 1 MiB boundary.
func disk(table string, parts ...[]byte) []byte {
	const mib = 1 << 20
	size := int64(mib)
	var spans [][2]int64
	for _, p := range parts {
		n := (int64(len(p)) + mib - 1) / mib * mib
		spans = append(spans, [2]int64{size, n})
		size += n
	}
	size += mib // room for a backup GPT
	d := make([]byte, size)
	for i, p := range parts {
		copy(d[spans[i][0]:], p)
	}
	if table == "gpt" {
		writeGPT(d, spans...)
	} else {
		writeMBR(d, spans...)
	}
	return d
}

// luksHeader is a LUKS2 volume's first bytes (the luks package's fixture).
func luksHeader(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("../luks/testdata/luks2-argon2id-4096.img")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var rootTree = map[string]string{
	"etc/hostname":                    "client\n",
	"sbin/init":                       "#!/bin/sh\n",
	"boot/vmlinuz-6.1.0-18-amd64":     "kernel 6.1.0-18",
	"boot/nbdroot.img-6.1.0-18-amd64": "initramfs 6.1.0-18",
}

var bootTree = map[string]string{
	"vmlinuz-6.12.9":     "kernel 6.12",
	"nbdroot.img-6.12.9": "initramfs 6.12",
}

// TestScanImage finds the kernels and the root in every layout of issue 14.
func TestScanImage(t *testing.T) {
	root := mkfs(t, 4, rootTree)
	plainRoot := mkfs(t, 4, map[string]string{"etc/hostname": "x", "sbin/init": "x"})
	bootFS := mkfs(t, 2, bootTree)
	noKernel := mkfs(t, 2, map[string]string{"etc/hostname": "x", "boot/config-6.1": "x", "boot/vmlinuz-6.1": "no initramfs"})
	loops := mkfs(t, 2, map[string]string{"etc/x": "", "boot/vmlinuz-6.1": "->vmlinuz-6.1", "boot/nbdroot.img-6.1": "->nbdroot.img-6.1",
		"boot/vmlinuz-6.0": "k", "boot/nbdroot.img-6.0": "i"})
	corrupt := bytes.Clone(root)
	binary.LittleEndian.PutUint32(corrupt[1024+0x18:], 9) // block size 512 KiB
	lk := luksHeader(t)
	tests := []struct {
		name        string
		img         []byte
		wantRoot    *Root
		wantKernels []string
		wantErr     string
		wantNote    string
	}{
		{name: "root on the whole image", img: root, wantRoot: &Root{Device: "/dev/nbd0"}, wantKernels: []string{"vmlinuz-6.1.0-18-amd64"}},
		{name: "root on MBR partition 1", img: disk("mbr", root), wantRoot: &Root{Device: "/dev/nbd0p1"}, wantKernels: []string{"vmlinuz-6.1.0-18-amd64"}},
		{name: "root on GPT partition 1", img: disk("gpt", root), wantRoot: &Root{Device: "/dev/nbd0p1"}, wantKernels: []string{"vmlinuz-6.1.0-18-amd64"}},
		{name: "separate /boot partition", img: disk("gpt", bootFS, plainRoot), wantRoot: &Root{Device: "/dev/nbd0p2"}, wantKernels: []string{"vmlinuz-6.12.9"}},
		{name: "/boot partition and LUKS root", img: disk("mbr", bootFS, lk), wantRoot: &Root{Device: "/dev/nbd0p2", LUKS: true}, wantKernels: []string{"vmlinuz-6.12.9"}},
		{name: "LUKS on the whole image", img: lk, wantRoot: &Root{Device: "/dev/nbd0", LUKS: true}, wantNote: "separate boot source"},
		{name: "/boot without a kernel", img: noKernel, wantRoot: &Root{Device: "/dev/nbd0"}, wantNote: "vmlinuz-6.1 has no nbdroot.img-6.1"},
		{name: "symlink loops in /boot", img: loops, wantRoot: &Root{Device: "/dev/nbd0"}, wantKernels: []string{"vmlinuz-6.0"}, wantNote: "too many levels of symbolic links"},
		{name: "corrupt superblock", img: corrupt, wantErr: "corrupt superblock"},
		{name: "no file system", img: make([]byte, 1<<20), wantErr: "neither an ext2/3/4 file system"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := scanImage(bytes.NewReader(tt.img), int64(len(tt.img)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantRoot, s.root); diff != "" {
				t.Errorf("root (-want +got):\n%s", diff)
			}
			var got []string
			for _, k := range s.kernels {
				got = append(got, k.Kernel)
			}
			if diff := cmp.Diff(tt.wantKernels, got); diff != "" {
				t.Errorf("kernels (-want +got):\n%s", diff)
			}
			if tt.wantNote != "" && !strings.Contains(strings.Join(s.notes, "\n"), tt.wantNote) {
				t.Errorf("notes %q lack %q", s.notes, tt.wantNote)
			}
		})
	}
}

// writeImage writes b to path through a temporary file and a rename, as an image update
// would, or in place (same inode).
func writeImage(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path+".tmp", b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// TestCatalog: what an export boots follows its image — a kernel added shows up, a removed
// one disappears — and a LUKS root takes its kernels from its boot source; errors name the
// export.
func TestCatalog(t *testing.T) {
	dir := t.TempDir()
	rootImg := filepath.Join(dir, "root.img")
	writeImage(t, rootImg, mkfs(t, 4, rootTree))
	luksImg := filepath.Join(dir, "secret.img")
	writeImage(t, luksImg, luksHeader(t))
	bootDir := filepath.Join(dir, "secret-boot")
	os.MkdirAll(bootDir, 0o755)
	for n, c := range bootTree {
		os.WriteFile(filepath.Join(bootDir, n), []byte(c), 0o644)
	}
	os.Symlink("/etc/passwd", filepath.Join(bootDir, "vmlinuz-9.9"))
	os.WriteFile(filepath.Join(bootDir, "nbdroot.img-9.9"), []byte("i"), 0o644)
	noBoot := filepath.Join(dir, "noboot.img")
	writeImage(t, noBoot, luksHeader(t))

	clock := time.Unix(1000, 0)
	c := &Catalog{TTL: time.Minute, Sources: map[string]string{"secret": bootDir}, now: func() time.Time { return clock }}
	c.SetExports([]nbdserver.Export{
		{Name: "root", Path: rootImg, Default: true},
		{Name: "secret", Path: luksImg},
		{Name: "noboot", Path: noBoot},
	})
	b, err := c.Lookup("")
	if err != nil || b.Export != "root" || !b.Default || b.Newest().Version != "6.1.0-18-amd64" {
		t.Fatalf("default export: %+v, %v", b, err)
	}
	f, err := b.Open(b.Newest().Initrd)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(io.NewSectionReader(f, 0, f.Size))
	f.Close()
	if string(got) != "initramfs 6.1.0-18" {
		t.Errorf("initramfs content %q", got)
	}
	if _, err := b.Open("../../etc/passwd"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a name not in /boot's pairs: %v", err)
	}

	// A client installs a newer kernel (the image changes): the next lookup offers it.
	newer := map[string]string{"boot/vmlinuz-6.1.0-20-amd64": "kernel 6.1.0-20", "boot/nbdroot.img-6.1.0-20-amd64": "initramfs 6.1.0-20"}
	for k, v := range rootTree {
		newer[k] = v
	}
	writeImage(t, rootImg, mkfs(t, 4, newer))
	if b, err = c.Lookup("root"); err != nil || b.Newest().Version != "6.1.0-20-amd64" || len(b.Kernels) != 2 {
		t.Fatalf("after installing a kernel: %+v, %v", b, err)
	}
	// …and removes the old ones: they are no longer offered.
	only := map[string]string{"etc/hostname": "x", "boot/vmlinuz-6.1.0-20-amd64": "k", "boot/nbdroot.img-6.1.0-20-amd64": "i"}
	writeImage(t, rootImg, mkfs(t, 4, only))
	if b, err = c.Lookup("root"); err != nil || len(b.Kernels) != 1 || b.Has("vmlinuz-6.1.0-18-amd64") {
		t.Fatalf("after removing a kernel: %+v, %v", b, err)
	}

	s, err := c.Lookup("secret")
	if err != nil {
		t.Fatal(err)
	}
	if s.Root != (Root{Device: "/dev/nbd0", LUKS: true}) || s.Newest().Version != "6.12.9" || s.Source != bootDir {
		t.Errorf("LUKS export: %+v", s)
	}
	if s.Has("vmlinuz-9.9") {
		t.Error("a symbolic link out of the boot source directory was offered")
	}

	_, err = c.Lookup("noboot")
	var ee *ExportError
	if !errors.As(err, &ee) || ee.Export != "noboot" || !errors.Is(err, ErrNoKernel) {
		t.Errorf("LUKS export without a boot source: %v", err)
	}
	if _, err := c.Lookup("nothing"); !errors.Is(err, ErrNoExport) {
		t.Errorf("unknown export: %v", err)
	}
	// A corrupt image is an error for its export only.
	writeImage(t, noBoot, make([]byte, 1<<20))
	if _, err := c.Lookup("noboot"); err == nil || !strings.Contains(err.Error(), "noboot") {
		t.Errorf("corrupt image: %v", err)
	}
	if _, err := c.Lookup("root"); err != nil {
		t.Errorf("another export after a corrupt one: %v", err)
	}
}

// TestCatalogTTL: an image that changes without a new stamp (a block device) is read again
// after the TTL.
func TestCatalogTTL(t *testing.T) {
	img := filepath.Join(t.TempDir(), "root.img")
	first := mkfs(t, 4, rootTree)
	os.WriteFile(img, first, 0o644)
	st, _ := os.Stat(img)
	clock := time.Unix(1000, 0)
	c := &Catalog{TTL: 5 * time.Second, now: func() time.Time { return clock }}
	c.SetExports([]nbdserver.Export{{Name: "root", Path: img}})
	if _, err := c.Lookup("root"); err != nil {
		t.Fatal(err)
	}
	// Same size, same mtime: the stamp does not change.
	os.WriteFile(img, make([]byte, len(first)), 0o644)
	os.Chtimes(img, st.ModTime(), st.ModTime())
	if _, err := c.Lookup("root"); err != nil {
		t.Fatalf("within the TTL the cached result stays: %v", err)
	}
	clock = clock.Add(6 * time.Second)
	if _, err := c.Lookup("root"); err == nil {
		t.Fatal("after the TTL the zeroed image was not read again")
	}
}

// gunzip reads a gzip file.
func gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
