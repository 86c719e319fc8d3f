package vm

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nbdroot/nbdroot/lvm/lvmtest"
)

// LVMOptions shape an LVM root image.
type LVMOptions struct {
	// VG is the volume group's name (default nbd-vg: its dash is doubled in device-mapper
	// names, nbd--vg-root).
	VG string
	// Striped puts two GPT partitions on the disk, one PV each, and stripes the root LV over
	// both (64 KiB chunks); otherwise the whole disk is one PV and the root LV linear.
	Striped bool
	// SwapMB adds a linear LV "swap" of that size.
	SwapMB int
	// LUKS, when set, wraps the whole disk in a LUKS container (LVM inside LUKS).
	LUKS *LUKSOptions
	Root RootOptions
}

// LVMRootImage builds a disk image whose root filesystem lies in logical volume VG/root,
// made with the real lvm2 tools (pvcreate, vgcreate, lvcreate on a loop device, without
// device-mapper), the busybox root written into the LV's extents where lvm2 reports them.
// The test needs root and lvm2 (it skips without them, fails under NBDROOT_REQUIRE_PEERS).
func (e *Env) LVMRootImage(t *testing.T, o LVMOptions) string {
	t.Helper()
	if o.VG == "" {
		o.VG = "nbd-vg"
	}
	if o.Root.SizeMB == 0 {
		o.Root.SizeMB = 64
	}
	key := fmt.Sprintf("lvm %q %v %d %+v %+v", o.VG, o.Striped, o.SwapMB, o.LUKS, o.Root)
	base := e.cached(t, key, func(path string) error {
		tree := path + ".tree"
		if err := RootTree(tree, o.Root); err != nil {
			return err
		}
		fs := path + ".ext4"
		if err := MkfsExt4(fs, tree, o.Root.SizeMB, 4096); err != nil {
			return err
		}
		size := int64(o.Root.SizeMB+o.SwapMB+16) << 20
		l := lvmtest.New(t, 1, size)
		pvs := []string{l.Loops[0]}
		if o.Striped {
			pvs = l.Partition(0, 2)
		}
		l.Run("pvcreate", append([]string{"-q"}, pvs...)...)
		l.Run("vgcreate", append([]string{"-q", "-s", "4m", o.VG}, pvs...)...)
		lv := []string{"-q", "-an", "-Zn", "-y", "-L", fmt.Sprintf("%dm", o.Root.SizeMB), "-n", "root"}
		if o.Striped {
			lv = append(lv, "-i", "2", "-I", "64k")
		}
		l.Run("lvcreate", append(lv, o.VG)...)
		if o.SwapMB > 0 {
			l.Run("lvcreate", "-q", "-an", "-Zn", "-y", "-L", fmt.Sprintf("%dm", o.SwapMB), "-n", "swap", o.VG)
		}
		f, err := os.Open(fs)
		if err != nil {
			return err
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return err
		}
		l.WriteLV(o.VG, "root", f, st.Size())
		// lvm2 is done with the disk: the image is the PV(s) as written through the loop.
		disk := filepath.Join(filepath.Dir(path), filepath.Base(path)+".disk")
		if err := copyFile(l.Images[0], disk); err != nil {
			return err
		}
		if o.LUKS != nil {
			return LUKSFormat(path, disk, *o.LUKS)
		}
		return os.Rename(disk, path)
	})
	img := filepath.Join(t.TempDir(), "lvm-root.img")
	if err := copyFile(base, img); err != nil {
		t.Fatal(err)
	}
	return img
}
