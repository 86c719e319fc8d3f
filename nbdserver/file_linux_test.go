package nbdserver

import (
	"bytes"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// cached() must tell page-cache hits from misses, so the reader sends hits itself and
// leaves misses (which would wait for the disk) to workers; both paths must serve the
// right data.
func TestCachedResidency(t *testing.T) {
	img := makeImage(t, testSize)
	fb, err := openFile(img, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if fb.residency == nil {
		fb.Close()
		t.Skip("mmap unavailable")
	}
	// Drop the image from the page cache.
	unix.Fdatasync(fb.fd)
	unix.Fadvise(fb.fd, 0, 0, unix.FADV_DONTNEED)
	if fb.cached(0, 1<<20) {
		fb.Close()
		t.Skip("the page cache kept the image after FADV_DONTNEED")
	}
	fb.Close() // releases the image's lock for the server
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: img}}})
	for _, structured := range []bool{false, true} {
		c := connectTest(t, s.addr, "root", structured)
		if got := c.pread(0, 1<<20); !bytes.Equal(got, pattern(0, 1<<20)) {
			t.Errorf("structured=%v: uncached large read returned wrong data", structured)
		}
		if got := c.pread(0, 1<<20); !bytes.Equal(got, pattern(0, 1<<20)) {
			t.Errorf("structured=%v: cached large read returned wrong data", structured)
		}
		c.disconnect()
	}
	s.Close()
	fb2, err := openFile(img, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fb2.Close()
	if !fb2.cached(0, 1<<20) {
		t.Error("a range just read is not reported cached")
	}
	if fb2.cached(testSize-4096, 8192) || fb2.cached(-1, 10) {
		t.Error("ranges outside the image reported cached")
	}
}

// Small cached reads copy from a mapping of the image. If the file is truncated under the
// server, touching the mapping faults (SIGBUS); the server must survive that and serve
// what a read of the file gives: zeroes past the end.
func TestMappedReadsSurviveTruncation(t *testing.T) {
	img := makeImage(t, testSize)
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: img}}})
	c := connectTest(t, s.addr, "root", false)
	for off := 0; off < testSize; off += 64 << 10 {
		if got := c.pread(uint64(off), 4096); !bytes.Equal(got, pattern(off, 4096)) {
			t.Fatalf("read at %d", off)
		}
	}
	if err := os.Truncate(img, testSize/2); err != nil {
		t.Fatal(err)
	}
	if got := c.pread(testSize-8192, 4096); !bytes.Equal(got, make([]byte, 4096)) {
		t.Errorf("read past the truncated end: % x…", got[:8])
	}
	if got := c.pread(4096, 4096); !bytes.Equal(got, pattern(4096, 4096)) {
		t.Error("read before the truncated end")
	}
	s.mu.Lock()
	for _, img := range s.images {
		if img.fb.windows != nil && !img.fb.mapBroke.Load() {
			t.Error("the read past the end did not go through the mapping's fault path")
		}
	}
	s.mu.Unlock()
	c.disconnect()
}
