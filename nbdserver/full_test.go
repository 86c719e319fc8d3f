package nbdserver

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// needRoot skips a privileged test without root, or fails it under NBDROOT_REQUIRE_PEERS=1.
func needRoot(t *testing.T, why string, err error) {
	t.Helper()
	if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
		t.Fatalf("%s: %v", why, err)
	}
	t.Skipf("%s: %v", why, err)
}

// smallTmpfs mounts a tmpfs of size bytes for the test.
func smallTmpfs(t *testing.T, size int) string {
	t.Helper()
	if os.Geteuid() != 0 {
		needRoot(t, "mounting a small file system needs root", nil)
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		needRoot(t, "mount tmpfs", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// Bad input, issue 13: a full overlay directory fails that client's writes with EIO and a
// log line naming client and overlay; the client's acknowledged data, other clients and
// the image are untouched, and writes work again once space is freed.
func TestOverlayDirFull(t *testing.T) {
	const imgSize = 8 << 20
	full := smallTmpfs(t, 1<<20)
	img := makeImage(t, imgSize)
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: img, Cow: true, CowDir: full}}})

	other, otherID := mustGoAs(t, s.addr, "127.0.0.2", "root", "pc-b", nbd.OverlayID{})
	other.pwrite(0, fill(64<<10, 'b'), 0)
	flush(t, other)

	c, id := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc-a", nbd.OverlayID{})
	block := fill(64<<10, 'a')
	var written int
	var errno uint32
	for off := 0; off < imgSize; off += len(block) {
		rp := c.do(nbd.CmdWrite, 0, uint64(off), uint32(len(block)), block)
		if errno = rp.Errno; errno != 0 {
			break
		}
		written = off + len(block)
	}
	if errno != nbd.EIO {
		t.Fatalf("writing 8 MiB into a 1 MiB directory: last error %v, want EIO", nbd.Errno(errno))
	}
	if written == 0 || written >= 1<<20 {
		t.Fatalf("%d bytes written before the directory was full", written)
	}
	log := s.logs.String()
	for _, want := range []string{`export "root": temporary overlay ` + id.String() + " of client pc-a: no space left in", "EIO"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	// What was acknowledged stays, and a FLUSH still works: a failed write is no failed sync.
	flush(t, c)
	if got := c.pread(0, uint32(written)); !bytes.Equal(got, fill(written, 'a')) {
		t.Error("acknowledged writes before the directory filled up are damaged")
	}
	// Nothing else is touched: the other client's overlay, the image.
	if got := other.pread(0, 64<<10); !bytes.Equal(got, fill(64<<10, 'b')) {
		t.Error("another client's overlay changed")
	}
	if got := other.pread(1<<20, 4096); !bytes.Equal(got, pattern(1<<20, 4096)) {
		t.Error("another client reads something else than the image")
	}
	if _, err := os.Stat(ovstore.Local{Root: full}.Dir("root", ovstore.Client{ID: "pc-b"}, otherID)); err != nil {
		t.Errorf("other overlay: %v", err)
	}
	if file, _ := os.ReadFile(img); !bytes.Equal(file, pattern(0, imgSize)) {
		t.Error("the image changed")
	}
	// Freeing space (here: the client trims what it wrote) makes writes work again.
	if rp := c.do(nbd.CmdTrim, 0, 0, uint32(written), nil); rp.Errno != 0 {
		t.Fatalf("TRIM: %v", nbd.Errno(rp.Errno))
	}
	c.pwrite(uint64(written), block, nbd.CmdFlagFUA)
}
