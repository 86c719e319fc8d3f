package ext4

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"
)

// image returns a test image from testdata (made by testdata/mkimages.sh).
func image(t testing.TB, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".img.gz"))
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

func open(t testing.TB, b []byte) *FS {
	t.Helper()
	f, err := Open(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sparseContent is what mkimages.sh wrote to /sparse: "block NNNN " at the start of every
// other 1 KiB block, 400 times, zeros elsewhere.
func sparseContent() []byte {
	b := make([]byte, 798*1024+11)
	for i := 0; i < 400; i++ {
		copy(b[2*i*1024:], fmt.Sprintf("block %04d ", i))
	}
	return b
}

// commonFiles are the regular files of the common tree and their content.
func commonFiles() map[string]string {
	m := map[string]string{
		"hello.txt":                       "hello\n",
		"dir/a.txt":                       "a in dir\n",
		"dir/sub/deep.txt":                "deep\n",
		"empty":                           "",
		"sparse":                          string(sparseContent()),
		"boot/vmlinuz-6.1.0-18-amd64":     "kernel 6.1\n",
		"boot/nbdroot.img-6.1.0-18-amd64": "initramfs 6.1\n",
		// Symbolic links that resolve, read through.
		"links/abs":           "hello\n",
		"links/rel":           "hello\n",
		"links/escape":        "hello\n",
		"links/dirlink/a.txt": "a in dir\n",
		"links/slow":          "deep\n",
	}
	for i := 0; i < 300; i++ {
		m[fmt.Sprintf("big/entry-with-a-rather-long-name-%03d", i)] = fmt.Sprintf("%03d\n", i)
	}
	return m
}

// TestImages reads every file of images made by mke2fs with different layouts: 1 KiB and
// 4 KiB blocks, extent trees of depth 2, ext2 block maps with double indirect blocks,
// meta_bg group descriptors, an htree directory of 300 entries, and checks them with
// testing/fstest too.
func TestImages(t *testing.T) {
	for _, name := range []string{"ext4-1k", "ext4-4k", "ext4-metabg", "ext2"} {
		t.Run(name, func(t *testing.T) {
			f := open(t, image(t, name))
			if f.Label != name {
				t.Errorf("label %q, want %q", f.Label, name)
			}
			want := commonFiles()
			for p, content := range want {
				got, err := fs.ReadFile(f, p)
				if err != nil {
					t.Errorf("%s: %v", p, err)
					continue
				}
				if !bytes.Equal(got, []byte(content)) {
					t.Errorf("%s: %d bytes differ from the %d written", p, len(got), len(content))
				}
			}
			ents, err := f.ReadDir("big")
			if err != nil || len(ents) != 300 {
				t.Fatalf("ReadDir(big): %d entries, %v", len(ents), err)
			}
			// fstest opens every entry it finds, and links/ holds broken links on purpose:
			// check the other top-level directories.
			for _, dir := range []string{"dir", "big", "boot"} {
				sub, err := fs.Sub(f, dir)
				if err != nil {
					t.Fatal(err)
				}
				var files []string
				for p := range want {
					if rest, ok := strings.CutPrefix(p, dir+"/"); ok {
						files = append(files, rest)
					}
				}
				if err := fstest.TestFS(sub, files...); err != nil {
					t.Errorf("%s: %v", dir, err)
				}
			}
		})
	}
}

// TestInlineData reads files and a directory stored inside their inodes.
func TestInlineData(t *testing.T) {
	f := open(t, image(t, "inline"))
	for p, want := range map[string]string{
		"small/short":          "short\n",
		"small/hundred":        strings.Repeat("x", 100),
		"boot/vmlinuz-6.2":     "kernel\n",
		"boot/nbdroot.img-6.2": "initramfs\n",
	} {
		got, err := fs.ReadFile(f, p)
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", p, got, err, want)
		}
	}
	if err := fstest.TestFS(f, "small/short", "small/hundred", "boot/vmlinuz-6.2"); err != nil {
		t.Error(err)
	}
}

// TestLinks checks symbolic link resolution: loops stop with ErrSymlinkLoop, targets stay
// inside the file system, ReadLink and Lstat do not follow.
func TestLinks(t *testing.T) {
	f := open(t, image(t, "ext4-1k"))
	tests := []struct {
		name    string
		wantErr error
	}{
		{"links/loop1", ErrSymlinkLoop},
		{"links/self", ErrSymlinkLoop},
		{"links/loop1/x", ErrSymlinkLoop},
		{"links/dangling", fs.ErrNotExist},
		{"links/notdir", errNotDir},
		{"hello.txt/x", errNotDir},
		{"nothing", fs.ErrNotExist},
		{"../hello.txt", fs.ErrInvalid},
		{"/hello.txt", fs.ErrInvalid},
		{"dir/../hello.txt", fs.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.Open(tt.name)
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("Open: %v, want %v", err, tt.wantErr)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != tt.name {
				t.Errorf("Open: %v is not a PathError for %q", err, tt.name)
			}
		})
	}
	if target, err := f.ReadLink("links/escape"); err != nil || target != "../../../../../hello.txt" {
		t.Errorf("ReadLink(links/escape) = %q, %v", target, err)
	}
	long, err := f.ReadLink("links/slow")
	if err != nil || len(long) < 60 {
		t.Errorf("ReadLink of a slow symlink = %q, %v", long, err)
	}
	if fi, err := f.Lstat("links/loop1"); err != nil || fi.Mode().Type() != fs.ModeSymlink {
		t.Errorf("Lstat(links/loop1) = %v, %v", fi, err)
	}
	if fi, err := f.Stat("links/dirlink"); err != nil || !fi.IsDir() {
		t.Errorf("Stat(links/dirlink) = %v, %v", fi, err)
	}
}

// TestFileReadAt reads the sparse file at odd offsets and sizes across holes and extents.
func TestFileReadAt(t *testing.T) {
	f := open(t, image(t, "ext4-1k"))
	file, err := f.OpenFile("sparse")
	if err != nil {
		t.Fatal(err)
	}
	want := sparseContent()
	for _, c := range []struct{ off, n int }{{0, 1}, {5, 2000}, {1023, 2}, {2047, 3000}, {len(want) - 5, 5}, {100000, 77777}} {
		got := make([]byte, c.n)
		n, err := file.ReadAt(got, int64(c.off))
		if err != nil || n != c.n || !bytes.Equal(got, want[c.off:c.off+c.n]) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; content equal %v", c.off, c.n, n, err, bytes.Equal(got, want[c.off:c.off+c.n]))
		}
	}
	n, err := file.ReadAt(make([]byte, 10), int64(len(want)-4))
	if n != 4 || err != io.EOF {
		t.Errorf("ReadAt past the end = %d, %v; want 4, EOF", n, err)
	}
	if _, err := f.OpenFile("dir"); err == nil {
		t.Error("OpenFile of a directory succeeded")
	}
}

// layout finds on-disk positions in an image, for the corruption tests.
type layout struct {
	f *FS
	b []byte
}

// inodeOff is the byte offset of inode num.
func (l layout) inodeOff(t *testing.T, num uint32) int {
	t.Helper()
	g := uint64(num-1) / uint64(l.f.inodesPerGroup)
	table, err := l.f.inodeTable(g)
	if err != nil {
		t.Fatal(err)
	}
	return int(int64(table)*l.f.blockSize + int64((num-1)%l.f.inodesPerGroup)*l.f.inodeSize)
}

// ino is the inode number of a path (not following a final link).
func (l layout) ino(t *testing.T, p string) uint32 {
	t.Helper()
	fi, err := l.f.Lstat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(uint32)
}

// firstBlock is the physical block of an inode's first extent.
func (l layout) firstBlock(t *testing.T, p string) int {
	t.Helper()
	in, err := l.f.resolve(p, false)
	if err != nil {
		t.Fatal(err)
	}
	d, err := l.f.content(in)
	if err != nil || len(d.extents) == 0 {
		t.Fatalf("%s: no extents (%v)", p, err)
	}
	return int(d.extents[0].phys) * int(l.f.blockSize)
}

func put16(b []byte, off int, v uint16) { b[off], b[off+1] = byte(v), byte(v>>8) }
func put32(b []byte, off int, v uint32) {
	put16(b, off, uint16(v))
	put16(b, off+2, uint16(v>>16))
}

// TestCorrupt damages one structure at a time: the damage is reported as a typed error
// naming it, on the file that needs the structure, while the rest of the file system stays
// readable where it does not depend on it.
func TestCorrupt(t *testing.T) {
	clean := image(t, "ext4-1k")
	l := layout{open(t, clean), clean}
	sb := 1024
	helloIno := l.ino(t, "hello.txt")
	sparseIno := l.ino(t, "sparse")
	bigIno := l.ino(t, "big")
	dirBlock := l.firstBlock(t, "dir")
	tests := []struct {
		name    string
		damage  func(b []byte)
		openErr any    // error type or sentinel from Open; nil: Open succeeds
		path    string // then reading this fails
		pathErr any
		stillOK string // and this still reads
	}{
		{name: "bad magic", damage: func(b []byte) { put16(b, sb+0x38, 0x1234) }, openErr: ErrNotExt4},
		{name: "block size 128 KiB", damage: func(b []byte) { put32(b, sb+0x18, 7) }, openErr: new(*CorruptError)},
		{name: "no inodes per group", damage: func(b []byte) { put32(b, sb+0x28, 0) }, openErr: new(*CorruptError)},
		{name: "huge block count", damage: func(b []byte) { put32(b, sb+0x4, 0xFFFFFFFF) }, openErr: new(*CorruptError)},
		{name: "odd inode size", damage: func(b []byte) { put16(b, sb+0x58, 200) }, openErr: new(*CorruptError)},
		{name: "compression", damage: func(b []byte) { put32(b, sb+0x60, binary32(b, sb+0x60)|incompatCompression) }, openErr: new(*UnsupportedError)},
		{name: "unknown incompat feature", damage: func(b []byte) { put32(b, sb+0x60, binary32(b, sb+0x60)|0x40000000) }, openErr: new(*UnsupportedError)},
		{name: "short image", damage: nil, openErr: ErrNotExt4},
		{name: "root not a directory", damage: func(b []byte) { put16(b, l.inodeOff(t, rootIno), sIFREG|0o644) },
			path: "hello.txt", pathErr: new(*CorruptError)},
		{name: "extent magic", damage: func(b []byte) { put16(b, l.inodeOff(t, helloIno)+0x28, 0) },
			path: "hello.txt", pathErr: new(*CorruptError), stillOK: "dir/a.txt"},
		{name: "extent depth too deep", damage: func(b []byte) { put16(b, l.inodeOff(t, sparseIno)+0x28+6, 9) },
			path: "sparse", pathErr: new(*CorruptError), stillOK: "hello.txt"},
		{name: "extent index pointing at itself", damage: func(b []byte) {
			// The root's index entry names the leaf's block; make the leaf's header claim
			// the root's depth, as a node pointing back up would.
			in := l.inodeOff(t, sparseIno) + 0x28
			leaf := int(binary32(b, in+12+4)) * 1024
			put16(b, leaf+6, 2)
		}, path: "sparse", pathErr: new(*CorruptError), stillOK: "hello.txt"},
		{name: "extent past the end", damage: func(b []byte) { put32(b, l.inodeOff(t, helloIno)+0x28+12+8, 0xFFFFFF) },
			path: "hello.txt", pathErr: new(*CorruptError), stillOK: "dir/a.txt"},
		{name: "directory rec_len 0", damage: func(b []byte) { put16(b, dirBlock+4, 0) },
			path: "dir/a.txt", pathErr: new(*CorruptError), stillOK: "hello.txt"},
		{name: "directory rec_len past the block", damage: func(b []byte) { put16(b, dirBlock+12+4, 4000) },
			path: "dir/a.txt", pathErr: new(*CorruptError), stillOK: "big/entry-with-a-rather-long-name-007"},
		{name: "directory entry naming inode 0xFFFFFFF", damage: func(b []byte) { put32(b, dirBlock+24, 0xFFFFFFF) },
			path: "dir/a.txt", pathErr: new(*CorruptError), stillOK: "hello.txt"},
		{name: "htree directory size not whole blocks", damage: func(b []byte) { put32(b, l.inodeOff(t, bigIno)+4, 1000) },
			path: "big/entry-with-a-rather-long-name-007", pathErr: new(*CorruptError), stillOK: "hello.txt"},
		{name: "encrypted inode", damage: func(b []byte) { off := l.inodeOff(t, helloIno) + 0x20; put32(b, off, binary32(b, off)|flagEncrypt) },
			path: "hello.txt", pathErr: new(*UnsupportedError), stillOK: "dir/a.txt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := append([]byte(nil), clean...)
			if tt.damage != nil {
				tt.damage(b)
			} else {
				b = b[:1500]
			}
			f, err := Open(bytes.NewReader(b), int64(len(b)))
			if tt.openErr != nil {
				if !matches(err, tt.openErr) {
					t.Fatalf("Open: %v, want %T %v", err, tt.openErr, tt.openErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			_, err = fs.ReadFile(f, tt.path)
			if !matches(err, tt.pathErr) {
				t.Errorf("ReadFile(%s): %v, want %T", tt.path, err, tt.pathErr)
			}
			if tt.stillOK != "" {
				if _, err := fs.ReadFile(f, tt.stillOK); err != nil {
					t.Errorf("ReadFile(%s) after the damage: %v", tt.stillOK, err)
				}
			}
		})
	}
}

func binary32(b []byte, off int) uint32 {
	return uint32(b[off]) | uint32(b[off+1])<<8 | uint32(b[off+2])<<16 | uint32(b[off+3])<<24
}

// matches reports whether err is the sentinel want, or has the type *want points to.
func matches(err error, want any) bool {
	switch w := want.(type) {
	case error:
		return errors.Is(err, w)
	case **CorruptError:
		return errors.As(err, w)
	case **UnsupportedError:
		return errors.As(err, w)
	}
	return false
}

// FuzzFS opens whatever bytes it is given as a file system and walks and reads all of it
// within a budget: no panic, no hang, no unbounded allocation.
func FuzzFS(f *testing.F) {
	for _, name := range []string{"fuzz", "inline"} {
		f.Add(image(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fsys, err := Open(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		budget := 200
		buf := make([]byte, 4096)
		fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			budget--
			if budget < 0 {
				return fs.SkipAll
			}
			if err != nil || d.IsDir() {
				return nil
			}
			if d.Type()&fs.ModeSymlink != 0 {
				fsys.ReadLink(p)
			}
			file, err := fsys.OpenFile(p)
			if err != nil {
				return nil
			}
			for off := int64(0); off < min(file.Size(), 1<<20); off += int64(len(buf)) {
				if _, err := file.ReadAt(buf, off); err != nil {
					break
				}
			}
			return nil
		})
	})
}
