package ext4

import (
	"bytes"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// needMke2fs skips a test without e2fsprogs' mke2fs, or fails it under
// NBDROOT_REQUIRE_PEERS=1 (make test installs it).
func needMke2fs(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("mke2fs")
	if err == nil {
		return p
	}
	if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
		t.Fatal("mke2fs (e2fsprogs) is missing and NBDROOT_REQUIRE_PEERS=1 says this test must run")
	}
	t.Skip("mke2fs (e2fsprogs) is not installed")
	return ""
}

// randomTree writes a tree of files of every size class (empty, inline-sized, one block,
// many blocks, sparse), nested directories, a directory of many entries and symbolic links.
func randomTree(t *testing.T, dir string, seed uint64) {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, seed))
	dirs := []string{"."}
	for i := 0; i < 8; i++ {
		d := filepath.Join(dirs[r.IntN(len(dirs))], fmt.Sprintf("d%d", i))
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, d)
	}
	var files []string
	sizes := []int{0, 1, 59, 60, 61, 200, 1023, 1024, 4097, 70000, 300000}
	for i := 0; i < 60; i++ {
		p := filepath.Join(dirs[r.IntN(len(dirs))], fmt.Sprintf("file-%d-%s", i, strings.Repeat("n", r.IntN(40))))
		b := make([]byte, sizes[r.IntN(len(sizes))])
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, p)
	}
	// A sparse file: holes between short runs of data.
	sp, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 50; i++ {
		sp.WriteAt([]byte(fmt.Sprintf("run %d", i)), int64(i)*int64(5000+r.IntN(20000)))
	}
	sp.Close()
	os.MkdirAll(filepath.Join(dir, "many"), 0o755)
	for i := 0; i < 200; i++ {
		os.WriteFile(filepath.Join(dir, "many", fmt.Sprintf("entry-%03d-%s", i, strings.Repeat("x", r.IntN(50)))), nil, 0o644)
	}
	for i := 0; i < 10; i++ {
		target := files[r.IntN(len(files))]
		if r.IntN(2) == 0 {
			target = "/" + target
		} else {
			target = strings.Repeat("../", 3) + target // climbs past the root, as under chroot
		}
		os.Symlink(target, filepath.Join(dir, fmt.Sprintf("link%d", i)))
	}
	os.Symlink(strings.Repeat("long/", 30), filepath.Join(dir, "longlink"))
}

// TestAgainstMke2fs builds random trees into file systems of every layout this reader
// handles with mke2fs -d, and checks every name, type, size, link target and byte.
func TestAgainstMke2fs(t *testing.T) {
	mke2fs := needMke2fs(t)
	layouts := []struct{ name, args string }{
		{"ext4 1k", "-t ext4 -b 1024"},
		{"ext4 4k no 64bit", "-t ext4 -b 4096 -O ^64bit"},
		{"ext4 2k inline_data", "-t ext4 -b 2048 -I 256 -O inline_data"},
		{"ext4 meta_bg", "-t ext4 -b 1024 -g 1024 -O meta_bg,^resize_inode"},
		{"ext4 bigalloc", "-t ext4 -b 4096 -O bigalloc -C 16384"},
		{"ext3", "-t ext3 -b 1024"},
		{"ext2 128-byte inodes", "-t ext2 -b 4096 -I 128"},
		{"ext4 64k blocks", "-t ext4 -b 65536"},
	}
	for i, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			t.Parallel()
			tmp := t.TempDir()
			tree := filepath.Join(tmp, "tree")
			randomTree(t, tree, uint64(i+1))
			img := filepath.Join(tmp, "img")
			args := append(strings.Fields(l.args), "-q", "-F", "-N", "2048", "-E", "root_owner=0:0", "-d", tree, img, "64M")
			if out, err := exec.Command(mke2fs, args...).CombinedOutput(); err != nil {
				t.Fatalf("mke2fs %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			file, err := os.Open(img)
			if err != nil {
				t.Fatal(err)
			}
			defer file.Close()
			st, _ := file.Stat()
			f, err := Open(file, st.Size())
			if err != nil {
				t.Fatal(err)
			}
			compareTree(t, f, tree)
		})
	}
}

// compareTree checks that f holds exactly the tree at dir.
func compareTree(t *testing.T, f *FS, dir string) {
	t.Helper()
	root := os.DirFS(dir)
	err := fs.WalkDir(root, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		want, _ := d.Info()
		got, err := f.Lstat(p)
		if err != nil {
			t.Errorf("%s: %v", p, err)
			return nil
		}
		if got.Mode().Type() != want.Mode().Type() || !got.IsDir() && got.Size() != want.Size() {
			t.Errorf("%s: %v %d bytes, want %v %d", p, got.Mode(), got.Size(), want.Mode(), want.Size())
			return nil
		}
		switch {
		case d.IsDir():
			wantNames, _ := fs.ReadDir(root, p)
			gotEnts, err := f.ReadDir(p)
			if err != nil {
				t.Errorf("ReadDir(%s): %v", p, err)
				return nil
			}
			var w, g []string
			for _, e := range wantNames {
				w = append(w, e.Name())
			}
			for _, e := range gotEnts {
				if p == "." && e.Name() == "lost+found" { // made by mke2fs
					continue
				}
				g = append(g, e.Name())
			}
			if !slices.Equal(w, g) {
				t.Errorf("ReadDir(%s) = %v, want %v", p, g, w)
			}
		case d.Type() == fs.ModeSymlink:
			wantT, _ := os.Readlink(filepath.Join(dir, p))
			if gotT, err := f.ReadLink(p); err != nil || gotT != wantT {
				t.Errorf("ReadLink(%s) = %q, %v; want %q", p, gotT, err, wantT)
			}
		default:
			wantB, _ := os.ReadFile(filepath.Join(dir, p))
			gotB, err := fs.ReadFile(f, p)
			if err != nil || !bytes.Equal(gotB, wantB) {
				t.Errorf("%s: content differs (%v)", p, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
