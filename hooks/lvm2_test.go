package hooks

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/lvm/lvmtest"
)

// TestLVM2 runs the lvm2 stage on volume groups the real lvm2 tools made on loop devices,
// which the fake block devices hand out as the NBD device, its partitions or the LUKS
// mapping; the fake mapper records the tables the stage loads.
func TestLVM2(t *testing.T) {
	l := lvmtest.New(t, 2, 64<<20)
	// Disk 0: a PV on the whole device, vg0 with root and swap. Disk 1: two partitions,
	// vg1 striped over both.
	l.Run("pvcreate", "-q", l.Loops[0])
	l.Run("vgcreate", "-q", "-s", "4m", "vg0", l.Loops[0])
	t.Cleanup(func() { l.Run("vgremove", "-q", "-f", "vg0") })
	l.Run("lvcreate", "-q", "-an", "-Zn", "-y", "-L", "24m", "-n", "root", "vg0")
	l.Run("lvcreate", "-q", "-an", "-Zn", "-y", "-L", "8m", "-n", "swap", "vg0")
	parts := l.Partition(1, 2)
	l.Run("pvcreate", "-q", parts[0], parts[1])
	l.Run("vgcreate", "-q", "-s", "4m", "vg1", parts[0], parts[1])
	t.Cleanup(func() { l.Run("vgremove", "-q", "-f", "vg1") })
	l.Run("lvcreate", "-q", "-an", "-Zn", "-y", "-i", "2", "-I", "64k", "-L", "16m", "-n", "data", "vg1")
	// lvm2's own view of where the volumes lie: the expected table offsets.
	chunks := l.Chunks("vg0", "root")
	rootOff := chunks[0].Offset / 512

	tests := []struct {
		name    string
		cmdline string
		devices map[string]string
		crypt   string
		wantLVs []string
		tables  []string // prefixes of the recorded table lines, in order
		err     string
	}{
		{name: "root on the NBD device, swap beside it",
			cmdline: "nbd_server=10.0.0.1 root=/dev/vg0/root", devices: map[string]string{"/dev/nbd0": l.Loops[0]},
			wantLVs: []string{"/dev/mapper/vg0-root", "/dev/mapper/vg0-swap"},
			tables:  []string{"vg0/root: 0 49152 linear /dev/nbd0 " + itoa(rootOff), "vg0/swap: 0 16384 linear /dev/nbd0 "}},
		{name: "rd.lvm.lv narrows to the root",
			cmdline: "nbd_server=10.0.0.1 root=/dev/mapper/vg0-root rd.lvm.lv=vg0/root", devices: map[string]string{"/dev/nbd0": l.Loops[0]},
			wantLVs: []string{"/dev/mapper/vg0-root"}, tables: []string{"vg0/root: 0 49152 linear /dev/nbd0 "}},
		{name: "striped over the NBD device's partitions",
			cmdline: "nbd_server=10.0.0.1 root=/dev/vg1/data", devices: map[string]string{"/dev/nbd0": l.Loops[1], "/dev/nbd0p1": parts[0], "/dev/nbd0p2": parts[1]},
			wantLVs: []string{"/dev/mapper/vg1-data"}, tables: []string{"vg1/data: 0 32768 striped 2 128 /dev/nbd0p1 "}},
		{name: "inside the unlocked LUKS volume",
			cmdline: "nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c root=/dev/vg0/root rd.lvm.lv=vg0/root",
			devices: map[string]string{"/dev/nbd0": "/dev/null", "/dev/mapper/c": l.Loops[0]}, crypt: "/dev/mapper/c",
			wantLVs: []string{"/dev/mapper/vg0-root"}, tables: []string{"vg0/root: 0 49152 linear /dev/mapper/c "}},
		{name: "no rd.lvm.*: every volume group found",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0", devices: map[string]string{"/dev/nbd0": l.Loops[0]},
			wantLVs: []string{"/dev/mapper/vg0-root", "/dev/mapper/vg0-swap"}},
		{name: "rd.lvm=0", cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 rd.lvm=0", devices: map[string]string{"/dev/nbd0": l.Loops[0]}},
		{name: "the volume group is not there",
			cmdline: "nbd_server=10.0.0.1 root=/dev/vg9/root", devices: map[string]string{"/dev/nbd0": l.Loops[0]},
			err: "find the volume groups of vg9/root: not on /dev/nbd0 within 300ms (volume groups found: vg0)"},
		{name: "no such volume",
			cmdline: "nbd_server=10.0.0.1 root=/dev/vg0/home", devices: map[string]string{"/dev/nbd0": l.Loops[0]},
			err: "activate vg0/home: volume group vg0 has no logical volume home (it has: root, swap)"},
		{name: "a striped volume missing a partition",
			cmdline: "nbd_server=10.0.0.1 root=/dev/vg1/data", devices: map[string]string{"/dev/nbd0": l.Loops[1], "/dev/nbd0p1": parts[0]},
			err: "find the volume groups of vg1/data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes()
			f.blocks.devices = tt.devices
			s, _, err := newTestState(tt.cmdline, f)
			if err != nil {
				t.Fatal(err)
			}
			s.CryptDevice = tt.crypt
			err = LVM2{Wait: 300 * time.Millisecond}.Run(context.Background(), s)
			if tt.err != "" {
				var fl *Failure
				if !errors.As(err, &fl) || fl.Hook != "lvm2" || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want an lvm2 failure with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.wantLVs, s.LVs); diff != "" {
				t.Errorf("activated (-want +got):\n%s", diff)
			}
			for i, p := range tt.tables {
				if i >= len(f.mapper.lvs) || !strings.HasPrefix(f.mapper.lvs[i], p) {
					t.Errorf("table %d: got %q, want it to start with %q", i, f.mapper.lvs, p)
				}
			}
		})
	}
}

func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
