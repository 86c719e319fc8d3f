package nbdserver

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// The paths are nbd-server's: treefiles.c construct_path, compiled and run on each case.
func TestTreeBlockPath(t *testing.T) {
	for _, tt := range []struct {
		size, off int64
		want      string
	}{
		{4194304, 0, "/TREE0000/FILE0000"},
		{4194304, 4095, "/TREE0000/FILE0000"},
		{4194304, 4096, "/TREE0000/FILE0001"},
		{4194304, 4194303, "/TREE0000/FILE03FF"},
		{4194303, 4190208, "/FILE03FF"},
		{12345, 8192, "/FILE0002"},
		{8388608, 4194304, "/TREE0001/FILE0000"},
		{8388608, 4206592, "/TREE0001/FILE0003"},
		{1073741824, 1073741823, "/TREE00FF/FILE03FF"},
		{4294967296, 4294963200, "/TREE0000/TREE03FF/FILE03FF"},
		{4294971392, 4294967296, "/TREE0001/TREE0000/FILE0000"},
		{1099511627776, 1099511627775, "/TREE00FF/TREE03FF/FILE03FF"},
		{1099511627776, 123456789012, "/TREE001C/TREE02FA/FILE0191"},
	} {
		if got := treeBlockPath("/srv/t", treeLevels(tt.size), tt.off>>treeBlockShift); got != "/srv/t"+tt.want {
			t.Errorf("size %d offset %d: got %s, want /srv/t%s", tt.size, tt.off, got, tt.want)
		}
	}
}

func openTestTree(t *testing.T, root string, size int64, readOnly bool) *treeBackend {
	t.Helper()
	e := Export{Name: "t", Path: root, Tree: true, CreateSize: size, ReadOnly: readOnly}
	if _, err := treeKey(&e); err != nil {
		t.Fatal(err)
	}
	b, err := openTree(root, size, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

// filesUnder lists the regular files under root, relative to it.
func filesUnder(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			out = append(out, rel)
		}
		return nil
	})
	return out
}

// Missing blocks read as zeroes, in a tree that does not exist (read-only) and in an empty
// one, and reading creates nothing.
func TestTreeReadMissing(t *testing.T) {
	for _, readOnly := range []bool{true, false} {
		root := filepath.Join(t.TempDir(), "tree")
		b := openTestTree(t, root, 4<<20, readOnly)
		p := bytes.Repeat([]byte{0xAA}, 3*treeBlock)
		if err := b.ReadAt(p, 100); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(p, make([]byte, len(p))) {
			t.Errorf("readOnly=%v: missing blocks do not read as zeroes", readOnly)
		}
		if f := filesUnder(t, root); len(f) != 0 {
			t.Errorf("readOnly=%v: reading created %v", readOnly, f)
		}
	}
}

// Random writes across block boundaries read back as a flat image would, and each block
// file is where nbd-server looks for it, 4096 bytes long.
func TestTreeWritesAcrossBlocks(t *testing.T) {
	const size = 8<<20 + 1000 // two TREE directories and a short last block
	root := filepath.Join(t.TempDir(), "tree")
	b := openTestTree(t, root, size, false)
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(16, 6))
	for i := 0; i < 200; i++ {
		n := 1 + rng.Int64N(3*treeBlock)
		off := rng.Int64N(size - n + 1)
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if err := b.WriteAt(p, off, i%50 == 0); err != nil {
			t.Fatal(err)
		}
		copy(model[off:], p)
	}
	for _, w := range [][2]int64{{treeBlock - 3, 10}, {size - 1000, 1000}} { // a boundary; the end
		p := bytes.Repeat([]byte{7}, int(w[1]))
		if err := b.WriteAt(p, w[0], false); err != nil {
			t.Fatal(err)
		}
		copy(model[w[0]:], p)
	}
	got := make([]byte, size)
	if err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, model) {
		t.Fatal("the tree does not read back what was written")
	}
	for _, blk := range []int64{0, 1, size >> treeBlockShift} {
		path := treeBlockPath(root, 1, blk)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != treeBlock {
			t.Errorf("%s is %d bytes, want %d", path, len(data), treeBlock)
		}
		end := min((blk+1)*treeBlock, size)
		if !bytes.Equal(data[:end-blk*treeBlock], model[blk*treeBlock:end]) {
			t.Errorf("%s does not hold block %d", path, blk)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "TREE0002", "FILE0000")); err != nil {
		t.Errorf("the last block is not in TREE0002: %v", err)
	}
}

// A FLUSH syncs the block files written since the last one, and every directory that
// gained or lost an entry; a failed sync is an error, and the next FLUSH tries again.
func TestTreeFlushSyncs(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	b := openTestTree(t, root, 8<<30, false) // two directory levels
	var mu sync.Mutex
	var synced []string
	var failWith error
	record := func(name string) error {
		mu.Lock()
		defer mu.Unlock()
		if failWith != nil {
			return failWith
		}
		synced = append(synced, strings.TrimPrefix(name, root))
		return nil
	}
	b.syncFile = func(f *os.File) error { return record(f.Name()) }
	b.syncDirectory = record
	flushed := func() []string {
		t.Helper()
		mu.Lock()
		synced = nil
		mu.Unlock()
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		slices.Sort(synced)
		return synced
	}

	if err := b.WriteAt(make([]byte, 2), treeBlock-1, false); err != nil { // blocks 0 and 1
		t.Fatal(err)
	}
	want := []string{"", "/TREE0000", "/TREE0000/TREE0000", "/TREE0000/TREE0000/FILE0000", "/TREE0000/TREE0000/FILE0001"}
	if got := flushed(); !slices.Equal(got, want) {
		t.Errorf("first flush synced %q, want %q", got, want)
	}
	if got := flushed(); len(got) != 0 {
		t.Errorf("a flush with nothing written synced %q", got)
	}
	if err := b.WriteAt([]byte{1}, 5, false); err != nil { // an existing file: no directory changes
		t.Fatal(err)
	}
	if got, want := flushed(), []string{"/TREE0000/TREE0000/FILE0000"}; !slices.Equal(got, want) {
		t.Errorf("rewrite: flush synced %q, want %q", got, want)
	}
	if err := b.Zero(treeBlock, treeBlock, false, false, false); err != nil { // unlinks block 1
		t.Fatal(err)
	}
	if got, want := flushed(), []string{"/TREE0000/TREE0000"}; !slices.Equal(got, want) {
		t.Errorf("zeroing a block: flush synced %q, want %q", got, want)
	}

	if err := b.WriteAt([]byte{2}, 4<<30, false); err != nil { // block 1<<20: a new top directory
		t.Fatal(err)
	}
	mu.Lock()
	failWith = errors.New("injected EIO")
	mu.Unlock()
	err := b.Flush()
	if err == nil || errnoOf(err) != nbd.EIO {
		t.Fatalf("a failed sync: Flush = %v (errno %d), want EIO", err, errnoOf(err))
	}
	mu.Lock()
	failWith = nil
	mu.Unlock()
	want = []string{"", "/TREE0001", "/TREE0001/TREE0000", "/TREE0001/TREE0000/FILE0000"}
	if got := flushed(); !slices.Equal(got, want) {
		t.Errorf("after a failed flush the next synced %q, want %q", got, want)
	}
	// A FUA write syncs before it returns.
	mu.Lock()
	synced = nil
	mu.Unlock()
	if err := b.WriteAt([]byte{3}, 6<<30, true); err != nil { // TREE0001/TREE0200/FILE0000
		t.Fatal(err)
	}
	mu.Lock()
	n := len(synced)
	mu.Unlock()
	if n != 3 {
		t.Errorf("a FUA write creating a file in a new directory synced %d things, want 3 (the file, its directory and that one's parent)", n)
	}
}

// Zeroing and trimming: whole blocks lose their file, parts of blocks read as zeroes,
// NO_HOLE keeps (or makes) a file, TRIM leaves partly covered blocks alone; block status
// reports blocks without a file as holes.
func TestTreeZeroTrimExtents(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	b := openTestTree(t, root, 4<<20, false)
	ones := bytes.Repeat([]byte{1}, 8*treeBlock)
	if err := b.WriteAt(ones, 0, false); err != nil {
		t.Fatal(err)
	}
	if err := b.Zero(100, 2*treeBlock, false, false, false); err != nil { // parts of 0 and 2, block 1
		t.Fatal(err)
	}
	if err := b.Zero(3*treeBlock, treeBlock, true, false, false); err != nil { // NO_HOLE: block 3 kept
		t.Fatal(err)
	}
	if err := b.Zero(6*treeBlock, treeBlock, true, false, false); err != nil { // NO_HOLE on a block not written before
		t.Fatal(err)
	}
	if err := b.Trim(4*treeBlock+1, 2*treeBlock, false); err != nil { // covers only block 5 whole
		t.Fatal(err)
	}
	if err := b.Zero(7*treeBlock, 2*treeBlock, false, false, false); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(ones)
	clear(want[100 : 100+2*treeBlock])
	clear(want[3*treeBlock : 4*treeBlock])
	clear(want[6*treeBlock:])
	got := make([]byte, 8*treeBlock)
	if err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 8; i++ {
		g, w := got[i*treeBlock:(i+1)*treeBlock], want[i*treeBlock:(i+1)*treeBlock]
		if i == 5 {
			continue // trimmed: unspecified
		}
		if !bytes.Equal(g, w) {
			t.Errorf("block %d reads wrong after zeroing", i)
		}
	}
	var files []string
	for _, f := range filesUnder(t, root) {
		files = append(files, filepath.Base(f))
	}
	if want := []string{"FILE0000", "FILE0002", "FILE0003", "FILE0004", "FILE0006"}; !slices.Equal(files, want) {
		t.Errorf("block files %q, want %q", files, want)
	}
	type extent struct {
		n     int64
		flags uint32
	}
	var ext []extent
	if err := b.Extents(0, 10*treeBlock, func(n int64, f uint32) bool { ext = append(ext, extent{n, f}); return true }); err != nil {
		t.Fatal(err)
	}
	hole := nbd.StateHole | nbd.StateZero
	wantExt := []extent{{treeBlock, 0}, {treeBlock, hole}, {3 * treeBlock, 0}, {treeBlock, hole}, {treeBlock, 0}, {3 * treeBlock, hole}}
	if !slices.Equal(ext, wantExt) {
		t.Errorf("extents %v, want %v", ext, wantExt)
	}
}

// Concurrent writes to disjoint bytes of the same blocks, some zeroing the others, all
// land: per-block locking keeps a file's creation, writes and unlinking apart.
func TestTreeConcurrentSameBlock(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	b := openTestTree(t, root, 4<<20, false)
	const writers = 16
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for blk := int64(0); blk < 8; blk++ {
				// Each writer owns 256 bytes of every block; the first zeroes its part.
				off := blk*treeBlock + int64(w)*256
				var err error
				if w == 0 {
					err = b.Zero(off, 256, false, false, false)
				} else {
					err = b.WriteAt(bytes.Repeat([]byte{byte(w)}, 256), off, blk%3 == 0)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := make([]byte, 8*treeBlock)
	if err := b.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	for i, c := range got {
		if want := byte(i % treeBlock / 256); c != want {
			t.Fatalf("byte %d is %d, want %d", i, c, want)
		}
	}
}

// Writes to a read-only tree are EPERM; a write the file system refuses is an error with
// its errno, never a success.
func TestTreeWriteErrors(t *testing.T) {
	ro := openTestTree(t, filepath.Join(t.TempDir(), "tree"), 4<<20, true)
	if err := ro.WriteAt([]byte{1}, 0, false); errnoOf(err) != nbd.EPERM {
		t.Errorf("write to a read-only tree: %v, want EPERM", err)
	}
	if err := ro.Zero(0, treeBlock, false, false, false); errnoOf(err) != nbd.EPERM {
		t.Errorf("zero on a read-only tree: %v, want EPERM", err)
	}

	root := filepath.Join(t.TempDir(), "tree")
	b := openTestTree(t, root, 4<<20, false)
	// A file where the block's directory should be: mkdir says EEXIST, open ENOTDIR.
	if err := os.WriteFile(filepath.Join(root, "TREE0000"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := b.WriteAt([]byte{1}, 0, false)
	var be *BackendError
	if !errors.As(err, &be) || errnoOf(err) == 0 {
		t.Errorf("write under a file: %v, want a BackendError with an errno", err)
	}
	if err := b.Flush(); err != nil {
		t.Errorf("flush after a failed write: %v", err)
	}
}

// A tree export's configuration: what nbd-server's treefiles needs (copyonwrite is
// allowed, as there), and the combinations refused with the treefiles line named.
func TestTreeServerFile(t *testing.T) {
	for _, tt := range []struct {
		name, text string
		want       Export
		wantErr    string
	}{
		{name: "tests/run tree", text: "[generic]\n[export1]\n\texportname = /tmp/nbd.tree\n\ttreefiles = true\n\tfilesize = 4194304\n",
			want: Export{Name: "export1", Path: "/tmp/nbd.tree", Tree: true, CreateSize: 4194304}},
		{name: "treefiles false", text: "[generic]\n[a]\nexportname = /a\ntreefiles = false\n", want: Export{Name: "a", Path: "/a"}},
		{name: "no filesize", text: "[generic]\n[a]\nexportname = /t\ntreefiles = true\n", wantErr: "cfg:4: [a] treefiles needs filesize"},
		{name: "copyonwrite", text: "[generic]\n[a]\nexportname = /t\ncopyonwrite = true\ntreefiles = true\nfilesize = 4096\n",
			want: Export{Name: "a", Path: "/t", Tree: true, Cow: true, CreateSize: 4096}},
		{name: "temporary", text: "[generic]\n[a]\nexportname = /t\ntreefiles = true\nfilesize = 4096\ntemporary = true\n", wantErr: "cfg:4: [a] treefiles and temporary"},
		{name: "object", text: "[generic]\n[a]\nexportname = s3://b/k\ntreefiles = true\nfilesize = 4096\n", wantErr: "cfg:4: [a] treefiles: the tree is a local directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sf, err := ParseServerFile(strings.NewReader(tt.text), "cfg", nil, nil)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sf.Exports[0]; got.Name != tt.want.Name || got.Path != tt.want.Path || got.Tree != tt.want.Tree || got.Cow != tt.want.Cow || got.CreateSize != tt.want.CreateSize {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// Served through Server: a tree export written on one connection and flushed reads back on
// another; the read-only twin is refused on the same directory while the writer's is open.
func TestTreeServed(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "tree")
	ts := startServer(t, Config{Exports: []Export{{Name: "t", Path: root, Tree: true, CreateSize: 8 << 20}}})
	c := connectTest(t, ts.addr, "t", false)
	data := bytes.Repeat([]byte("tree"), 3000)
	c.pwrite(4<<20-6000, data, 0)
	if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
		t.Fatalf("FLUSH: %v", nbd.Errno(rp.Errno))
	}
	c.disconnect()
	c = connectTest(t, ts.addr, "t", false)
	if got := c.pread(4<<20-6000, uint32(len(data))); !bytes.Equal(got, data) {
		t.Error("a second connection does not read back the tree's data")
	}
	c.disconnect()
	for _, f := range []string{"TREE0000/FILE03FE", "TREE0000/FILE03FF", "TREE0001/FILE0000", "TREE0001/FILE0001"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("block file: %v", err)
		}
	}
	if _, err := New(Config{Exports: []Export{{Name: "t", Path: root, Tree: true, CreateSize: 8 << 20}}}); !errors.Is(err, ErrLocked) {
		t.Errorf("a second server on the same tree: %v, want ErrLocked", err)
	}
}

// The server process is killed (SIGKILL) while writes and flushes to a tree export are in
// flight; after a restart on the same tree every write acknowledged before an answered
// FLUSH reads back, in every trial, and the directory lock died with the process.
func TestTreeCrashSIGKILL(t *testing.T) {
	const trials, region = 6, 512 << 10
	dir := t.TempDir()
	cfg := filepath.Join(dir, "nbd.conf")
	text := "[generic]\n[tree]\nexportname = " + filepath.Join(dir, "tree") + "\ntreefiles = true\nfilesize = 8388608\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Options{ConfigFile: cfg, Listen: []string{"127.0.0.1:0"}}
	type write struct {
		off  int
		data []byte
	}
	var durable []write
	rng := rand.New(rand.NewPCG(16, 16))
	for trial := 0; trial < trials; trial++ {
		p := startProc(t, o)
		c := connectTest(t, p.addr, "tree", false)
		c.nc.SetDeadline(time.Now().Add(60 * time.Second))
		inflight := map[uint64]write{}
		var acked []write
		pos := trial * region
		killAt := 30 + rng.IntN(120)
		for i := 0; ; i++ {
			n := 1 + rng.IntN(3*treeBlock)
			if i == killAt || pos+n > (trial+1)*region {
				p.cmd.Process.Signal(syscall.SIGKILL)
				break
			}
			w := write{pos, make([]byte, n)}
			for j := range w.data {
				w.data[j] = byte(rng.Uint32() | 1)
			}
			pos += n
			inflight[c.send(nbd.CmdWrite, 0, uint64(w.off), uint32(n), w.data)] = w
			if i%10 == 4 {
				inflight[c.send(nbd.CmdFlush, 0, 0, 0, nil)] = write{} // in flight at the kill, maybe
			}
			if i%10 != 9 {
				continue
			}
			for len(inflight) > 0 {
				rp, err := c.recv()
				if err != nil {
					t.Fatal(err)
				}
				if rp.Errno != 0 {
					t.Fatalf("write: %v", nbd.Errno(rp.Errno))
				}
				if w := inflight[rp.Handle]; w.data != nil {
					acked = append(acked, w)
				}
				delete(inflight, rp.Handle)
			}
			if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
				t.Fatalf("flush: %v", nbd.Errno(rp.Errno))
			}
			durable = append(durable, acked...)
			acked = nil
		}
		p.wait(t)

		p = startProc(t, o)
		r := connectTest(t, p.addr, "tree", false)
		r.nc.SetDeadline(time.Now().Add(60 * time.Second))
		for _, w := range durable {
			if got := r.pread(uint64(w.off), uint32(len(w.data))); !bytes.Equal(got, w.data) {
				t.Fatalf("trial %d: write at %d (%d bytes), acknowledged before an answered FLUSH, lost across SIGKILL", trial, w.off, len(w.data))
			}
		}
		r.disconnect()
		p.cmd.Process.Signal(syscall.SIGTERM)
		p.wait(t)
	}
	if len(durable) == 0 {
		t.Fatal("no write was made durable: the test proved nothing")
	}
}

// A copy-on-write tree export (allowed by nbd-server too): each client's writes go to its
// overlay over the tree, which is never written.
func TestTreeCow(t *testing.T) {
	root := filepath.Join(t.TempDir(), "tree")
	seed := openTestTree(t, root, 4<<20, false)
	if err := seed.WriteAt(bytes.Repeat([]byte{9}, 2*treeBlock), treeBlock, false); err != nil {
		t.Fatal(err)
	}
	seed.Close()
	before := filesUnder(t, root)
	ts := startServer(t, Config{Exports: []Export{{Name: "t", Path: root, Tree: true, CreateSize: 4 << 20, Cow: true}}})
	c := connectTest(t, ts.addr, "t", false)
	c.pwrite(treeBlock+10, []byte("overlay"), 0)
	c.pwrite(3<<20, []byte("new block"), 0)
	want := bytes.Repeat([]byte{9}, 2*treeBlock)
	copy(want[10:], "overlay")
	if got := c.pread(treeBlock, 2*treeBlock); !bytes.Equal(got, want) {
		t.Error("the overlay over the tree reads wrong")
	}
	if got := c.pread(3<<20, 9); string(got) != "new block" {
		t.Errorf("a block written to the overlay reads %q", got)
	}
	c.disconnect()
	if after := filesUnder(t, root); !slices.Equal(after, before) {
		t.Errorf("a copy-on-write client changed the tree: files %q, were %q", after, before)
	}
	data, _ := os.ReadFile(treeBlockPath(root, 1, 1))
	if !bytes.Equal(data, bytes.Repeat([]byte{9}, treeBlock)) {
		t.Error("a copy-on-write client changed a block file")
	}
}

// Block status covers the whole range asked for, across directories of block files (an
// overlay over the tree relies on that), in extents that alternate.
func TestTreeExtentsCover(t *testing.T) {
	const size = 12 << 20
	b := openTestTree(t, filepath.Join(t.TempDir(), "tree"), size, false)
	for _, off := range []int64{0, 1500 * treeBlock, 1501 * treeBlock, size - 1} {
		if err := b.WriteAt([]byte{1}, off, false); err != nil {
			t.Fatal(err)
		}
	}
	hole := nbd.StateHole | nbd.StateZero
	type extent struct {
		n     int64
		flags uint32
	}
	var got []extent
	if err := b.Extents(0, size, func(n int64, f uint32) bool { got = append(got, extent{n, f}); return true }); err != nil {
		t.Fatal(err)
	}
	want := []extent{{treeBlock, 0}, {1499 * treeBlock, hole}, {2 * treeBlock, 0}, {size - 1502*treeBlock - treeBlock, hole}, {treeBlock, 0}}
	if !slices.Equal(got, want) {
		t.Errorf("extents %v, want %v", got, want)
	}
}
