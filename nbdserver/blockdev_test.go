package nbdserver

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/nbd"
)

// loopDevice attaches a file to a free loop device for the test (root only).
func loopDevice(t *testing.T, size int) (dev, backing string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not installed")
	}
	backing = filepath.Join(t.TempDir(), "backing.img")
	if err := os.WriteFile(backing, pattern(0, size), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "-f", "--show", backing).CombinedOutput()
	if err != nil {
		t.Skipf("no loop device available: %v %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev, backing
}

func TestBlockDevice(t *testing.T) {
	dev, _ := loopDevice(t, testSize)
	s := startServer(t, Config{Exports: []Export{{Name: "disk", Path: dev}}})
	c := connectTest(t, s.addr, "disk", true)
	if c.info.Size != testSize {
		t.Fatalf("block device size %d, want %d", c.info.Size, testSize)
	}
	// Large reads go out with sendfile from the device.
	if got := c.pread(0, 1<<20); !bytes.Equal(got, pattern(0, 1<<20)) {
		t.Error("large read from the block device")
	}
	c.pwrite(4096, []byte("on the device"), nbd.CmdFlagFUA)
	if got := c.pread(4096, 13); string(got) != "on the device" {
		t.Errorf("read back %q", got)
	}
	if rp := c.do(nbd.CmdWriteZeroes, 0, 1<<20, 1<<20, nil); rp.Errno != 0 {
		t.Fatalf("WRITE_ZEROES on a block device: %v", nbd.Errno(rp.Errno))
	}
	if got := c.pread(1<<20, 1<<20); !bytes.Equal(got, make([]byte, 1<<20)) {
		t.Error("zeroed range on the block device")
	}
	if rp := c.do(nbd.CmdTrim, 0, 2<<20, 1<<20, nil); rp.Errno != 0 {
		t.Errorf("TRIM on a block device: %v", nbd.Errno(rp.Errno))
	}
	rp := c.do(nbd.CmdBlockStatus, 0, 0, testSize, nil)
	if len(rp.Extents) != 1 || rp.Extents[0].Flags != 0 || rp.Extents[0].Length != testSize {
		t.Errorf("block status of a block device: %+v", rp.Extents)
	}
	if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != 0 {
		t.Fatal(nbd.Errno(rp.Errno))
	}
	c.disconnect()

	// The device is opened O_EXCL while exported writable: nobody else may claim it.
	if _, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL, 0); err == nil {
		t.Error("a second exclusive open of the exported device succeeded")
	}
}

func TestMountedBlockDeviceRefused(t *testing.T) {
	dev, _ := loopDevice(t, testSize)
	// Claim the device exclusively, as a mount does.
	f, err := os.OpenFile(dev, os.O_RDWR|os.O_EXCL, 0)
	if err != nil {
		t.Skipf("cannot claim %s: %v", dev, err)
	}
	defer f.Close()
	_, err = New(Config{Exports: []Export{{Name: "disk", Path: dev}}})
	if err == nil || !errors.Is(err, os.ErrExist) && !strings.Contains(err.Error(), "busy") {
		t.Fatalf("exporting a claimed device read-write: %v", err)
	}
	// Read-only is fine.
	s, err := New(Config{Exports: []Export{{Name: "disk", Path: dev, ReadOnly: true}}})
	if err != nil {
		t.Fatalf("read-only export of a claimed device: %v", err)
	}
	s.Close()
}
