package dm

import (
	"errors"
	"fmt"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestLayoutMatchesKernelHeaders checks our offsets against the struct layouts x/sys/unix
// generates from the kernel's dm-ioctl.h for this architecture.
func TestLayoutMatchesKernelHeaders(t *testing.T) {
	var io unix.DmIoctl
	var ts unix.DmTargetSpec
	checks := []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(dm_ioctl)", ioctlSize, unsafe.Sizeof(io)},
		{"sizeof(dm_target_spec)", targetSpecSize, unsafe.Sizeof(ts)},
		{"version", offVersion, unsafe.Offsetof(io.Version)},
		{"data_size", offDataSize, unsafe.Offsetof(io.Data_size)},
		{"data_start", offDataStart, unsafe.Offsetof(io.Data_start)},
		{"target_count", offTargetCount, unsafe.Offsetof(io.Target_count)},
		{"open_count", offOpenCount, unsafe.Offsetof(io.Open_count)},
		{"flags", offFlags, unsafe.Offsetof(io.Flags)},
		{"event_nr", offEventNr, unsafe.Offsetof(io.Event_nr)},
		{"dev", offDev, unsafe.Offsetof(io.Dev)},
		{"name", offName, unsafe.Offsetof(io.Name)},
		{"uuid", offUUID, unsafe.Offsetof(io.Uuid)},
		{"len(name)", nameLen, uintptr(len(io.Name))},
		{"len(uuid)", uuidLen, uintptr(len(io.Uuid))},
		{"spec.next", 20, unsafe.Offsetof(ts.Next)},
		{"spec.target_type", 24, unsafe.Offsetof(ts.Target_type)},
		{"DM_MAX_TYPE_NAME", maxTypeName, unix.DM_MAX_TYPE_NAME},
		{"DM_SECURE_DATA_FLAG", uintptr(SecureData), unix.DM_SECURE_DATA_FLAG},
		{"DM_SUSPEND_FLAG", uintptr(suspendFlag), unix.DM_SUSPEND_FLAG},
		{"DM_READONLY_FLAG", uintptr(ReadOnly), unix.DM_READONLY_FLAG},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: ours %d, kernel %d", c.name, c.got, c.want)
		}
	}

	// And the header we encode reads back through the kernel's struct.
	buf, err := Message{Name: "nbdcrypt", UUID: "u", Flags: SecureData, Targets: []Target{{Length: 8, Type: "zero"}}}.Encode()
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

// TestDecodeDevMatchesUnix checks decodeDev against x/sys/unix for devices the kernel
// encodes with huge_encode_dev (which agrees with glibc's dev_t for 32-bit numbers).
func TestDecodeDevMatchesUnix(t *testing.T) {
	for _, d := range []struct{ ma, mi uint32 }{{253, 0}, {253, 7}, {253, 300}, {254, 1 << 19}, {7, 3}} {
		dev := unix.Mkdev(d.ma, d.mi)
		ma, mi := decodeDev(dev)
		if ma != unix.Major(dev) || mi != unix.Minor(dev) {
			t.Errorf("decodeDev(%#x) = %d:%d, unix says %d:%d", dev, ma, mi, unix.Major(dev), unix.Minor(dev))
		}
	}
}

// TestRealDeviceMapper drives the real kernel through /dev/mapper/control with a "zero"
// target: version, create, load, resume, check sysfs, remove. It needs root and dm_mod;
// this project's build host has neither device-mapper nor module loading, so it skips
// there and runs wherever device-mapper exists. dm-crypt, linear and striped tables are
// exercised by the QEMU boot tests.
func TestRealDeviceMapper(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	c, err := Open()
	if err != nil {
		if errors.Is(err, ErrNoDeviceMapper) || errors.Is(err, unix.ENODEV) {
			t.Skipf("no device-mapper in this kernel: %v", err)
		}
		t.Fatal(err)
	}
	defer c.Close()
	major, minor, patch, err := c.Version()
	if err != nil {
		t.Fatalf("DM_VERSION: %v", err)
	}
	t.Logf("device-mapper interface %d.%d.%d", major, minor, patch)
	c.DevDir = t.TempDir()
	name := fmt.Sprintf("nbdroot-dm-test-%d", os.Getpid())
	dev, err := c.Create(name, "", 0, []Target{{Length: 8, Type: "zero"}})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	defer func() {
		if err := c.Remove(name); err != nil {
			t.Errorf("Remove: %v", err)
		}
	}()
	got, err := os.ReadFile(fmt.Sprintf("/sys/dev/block/%d:%d/dm/name", dev.Major, dev.Minor))
	if err != nil {
		t.Fatalf("sysfs for %d:%d: %v", dev.Major, dev.Minor, err)
	}
	if string(got) != name+"\n" {
		t.Errorf("sysfs name %q, want %q", got, name)
	}
}
