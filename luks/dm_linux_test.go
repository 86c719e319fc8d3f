package luks

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestDMLayoutMatchesKernelHeaders checks our offsets against the struct layouts x/sys/unix
// generates from the kernel's dm-ioctl.h for this architecture.
func TestDMLayoutMatchesKernelHeaders(t *testing.T) {
	var io unix.DmIoctl
	var ts unix.DmTargetSpec
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(dm_ioctl)", dmIoctlSize, unsafe.Sizeof(io)},
		{"sizeof(dm_target_spec)", dmTargetSpecSize, unsafe.Sizeof(ts)},
		{"version", dmOffVersion, unsafe.Offsetof(io.Version)},
		{"data_size", dmOffDataSize, unsafe.Offsetof(io.Data_size)},
		{"data_start", dmOffDataStart, unsafe.Offsetof(io.Data_start)},
		{"target_count", dmOffTargetCount, unsafe.Offsetof(io.Target_count)},
		{"open_count", dmOffOpenCount, unsafe.Offsetof(io.Open_count)},
		{"flags", dmOffFlags, unsafe.Offsetof(io.Flags)},
		{"event_nr", dmOffEventNr, unsafe.Offsetof(io.Event_nr)},
		{"dev", dmOffDev, unsafe.Offsetof(io.Dev)},
		{"name", dmOffName, unsafe.Offsetof(io.Name)},
		{"uuid", dmOffUUID, unsafe.Offsetof(io.Uuid)},
		{"len(name)", dmNameLen, uintptr(len(io.Name))},
		{"len(uuid)", dmUUIDLen, uintptr(len(io.Uuid))},
		{"spec.next", 20, unsafe.Offsetof(ts.Next)},
		{"spec.target_type", 24, unsafe.Offsetof(ts.Target_type)},
		{"DM_MAX_TYPE_NAME", dmMaxTypeName, unix.DM_MAX_TYPE_NAME},
		{"DM_SECURE_DATA_FLAG", dmSecureDataFlag, unix.DM_SECURE_DATA_FLAG},
		{"DM_SUSPEND_FLAG", dmSuspendFlag, unix.DM_SUSPEND_FLAG},
		{"DM_READONLY_FLAG", dmReadOnlyFlag, unix.DM_READONLY_FLAG},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: ours %d, kernel %d", c.name, c.got, c.want)
		}
	}

	// And the header we encode reads back through the kernel's struct.
	buf, err := dmMessage("nbdcrypt", "u", dmSecureDataFlag, []dmTarget{{length: 8, targetType: "zero"}})
	if err != nil {
		t.Fatal(err)
	}
	hdr := (*unix.DmIoctl)(unsafe.Pointer(&buf[0]))
	spec := (*unix.DmTargetSpec)(unsafe.Pointer(&buf[hdr.Data_start]))
	if hdr.Version != [3]uint32{4, 0, 0} || hdr.Data_size != uint32(len(buf)) || hdr.Target_count != 1 ||
		hdr.Flags != unix.DM_SECURE_DATA_FLAG || cString(hdr.Name[:]) != "nbdcrypt" || cString(hdr.Uuid[:]) != "u" ||
		spec.Length != 8 || cString(spec.Target_type[:]) != "zero" || spec.Next != 48 {
		t.Errorf("decoded through unix.DmIoctl: %+v / %+v", *hdr, *spec)
	}
}

// TestDecodeDevMatchesUnix checks dmDecodeDev against x/sys/unix for devices the kernel
// encodes with huge_encode_dev (which agrees with glibc's dev_t for 32-bit numbers).
func TestDecodeDevMatchesUnix(t *testing.T) {
	for _, d := range []struct{ ma, mi uint32 }{{253, 0}, {253, 7}, {253, 300}, {254, 1 << 19}, {7, 3}} {
		dev := unix.Mkdev(d.ma, d.mi)
		ma, mi := dmDecodeDev(dev)
		if ma != unix.Major(dev) || mi != unix.Minor(dev) {
			t.Errorf("dmDecodeDev(%#x) = %d:%d, unix says %d:%d", dev, ma, mi, unix.Major(dev), unix.Minor(dev))
		}
	}
}

// TestRealDeviceMapper drives the real kernel through /dev/mapper/control with a "zero"
// target (no dm-crypt needed): create, load, resume, check sysfs, remove. It needs root and
// dm_mod; this project's build host has neither device-mapper nor module loading, so it
// skips there and runs wherever device-mapper exists. dm-crypt itself is exercised by the
// QEMU boot tests.
func TestRealDeviceMapper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	ctl, err := openDMControl()
	if err != nil {
		if errors.Is(err, syscall.ENODEV) || strings.Contains(err.Error(), "missing") {
			t.Skipf("no device-mapper in this kernel: %v", err)
		}
		t.Fatal(err)
	}
	defer ctl.Close()
	version, err := dmMessage("v", "", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	// DM_VERSION ignores the name; it answers with the kernel's interface version.
	if err := ctl.ioctl(dmVersion, version); err != nil {
		t.Fatalf("DM_VERSION: %v", err)
	}
	t.Logf("device-mapper interface %d.%d.%d", ne32(version, 0), ne32(version, 4), ne32(version, 8))

	dir := t.TempDir()
	c := &dmClient{ctl: ctl, nodes: osNodes{}, devDir: dir}
	name := fmt.Sprintf("nbdroot-luks-test-%d", os.Getpid())
	major, minor, err := c.createDevice(name, "", 0, []dmTarget{{length: 8, targetType: "zero"}})
	if err != nil {
		t.Fatalf("createDevice: %v", err)
	}
	defer func() {
		if err := c.remove(name); err != nil {
			t.Errorf("remove: %v", err)
		}
	}()
	got, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/dm/name", major, minor))
	if err != nil {
		t.Fatalf("sysfs for %d:%d: %v", major, minor, err)
	}
	if strings.TrimSpace(string(got)) != name {
		t.Errorf("sysfs name %q, want %q", got, name)
	}
}

func ne32(b []byte, off int) uint32 {
	return *(*uint32)(unsafe.Pointer(&b[off]))
}
