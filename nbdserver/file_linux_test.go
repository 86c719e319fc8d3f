package nbdserver

import (
	"bytes"
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
