package kmod

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// writeDevice creates a fake sysfs device directory with a modalias file.
func writeDevice(t *testing.T, dir, modalias string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "modalias"), []byte(modalias+"\n"), 0o444); err != nil {
		t.Fatal(err)
	}
}

func TestColdplug(t *testing.T) {
	sys := filepath.Join(t.TempDir(), "devices")
	// A QEMU-like machine: a virtio NIC behind PCI, an e1000, a CPU, and a device no
	// module of the image drives.
	writeDevice(t, filepath.Join(sys, "pci0000:00/0000:00:03.0"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	writeDevice(t, filepath.Join(sys, "pci0000:00/0000:00:04.0"), "pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00")
	writeDevice(t, filepath.Join(sys, "system/cpu/cpu0"), "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094")
	writeDevice(t, filepath.Join(sys, "platform/serial8250"), "platform:serial8250")
	// A symlink loop must not be followed.
	if err := os.Symlink("..", filepath.Join(sys, "pci0000:00", "loop")); err != nil {
		t.Fatal(err)
	}

	ix := validIndex(t)
	fl := newFakeLoader(ix)
	// Loading virtio_pci makes the virtio device appear, as the real driver does on probe.
	fl.onLoad = func(name string) {
		if name == "virtio_pci" {
			writeDevice(t, filepath.Join(sys, "pci0000:00/0000:00:03.0/virtio0"), "virtio:d00000001v00001AF4")
		}
	}
	b := NewBoot(ix, "/m", fl, BootOptions{})
	loaded, err := b.Coldplug(context.Background(), sys)
	if err != nil {
		t.Fatal(err)
	}
	// Round one in modalias order, round two what virtio_pci exposed.
	want := []string{"crc32c_intel", "virtio_pci", "e1000", "virtio_net"}
	if diff := cmp.Diff(want, loaded); diff != "" {
		t.Errorf("Coldplug loaded (-want +got):\n%s", diff)
	}
	if len(fl.violations) > 0 {
		t.Errorf("dependency order violated: %v", fl.violations)
	}
	// A second run finds nothing new to load.
	before := len(fl.started)
	if _, err := b.Coldplug(context.Background(), sys); err != nil {
		t.Fatal(err)
	}
	if len(fl.started) != before {
		t.Errorf("second coldplug loaded again: %v", fl.started[before:])
	}
}

func TestColdplugMissingSysfs(t *testing.T) {
	b := NewBoot(validIndex(t), "/m", newFakeLoader(validIndex(t)), BootOptions{})
	if _, err := b.Coldplug(context.Background(), filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("Coldplug of a missing directory: no error")
	}
}

func TestModaliasesThroughBus(t *testing.T) {
	sys := t.TempDir()
	devices := filepath.Join(sys, "devices")
	writeDevice(t, filepath.Join(devices, "pci0000:00/0000:00:03.0"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	writeDevice(t, filepath.Join(devices, "pci0000:00/0000:00:03.0/virtio0"), "virtio:d00000001v00001AF4")
	// A device outside any bus directory is not seen: the bus directories are the index.
	writeDevice(t, filepath.Join(devices, "virtual/misc/x"), "misc:x")
	for bus, dev := range map[string]string{
		"pci":    "pci0000:00/0000:00:03.0",
		"virtio": "pci0000:00/0000:00:03.0/virtio0",
	} {
		dir := filepath.Join(sys, "bus", bus, "devices")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("../../../devices", dev), filepath.Join(dir, filepath.Base(dev))); err != nil {
			t.Fatal(err)
		}
	}
	got, err := Modaliases(devices)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "virtio:d00000001v00001AF4"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Modaliases (-want +got):\n%s", diff)
	}
}

func TestModaliases(t *testing.T) {
	sys := t.TempDir()
	writeDevice(t, filepath.Join(sys, "a"), "pci:x")
	writeDevice(t, filepath.Join(sys, "b"), "pci:x")
	writeDevice(t, filepath.Join(sys, "c/d"), "acpi:PNP0501:")
	if err := os.WriteFile(filepath.Join(sys, "c", "modalias"), []byte("\n"), 0o444); err != nil {
		t.Fatal(err)
	}
	got, err := Modaliases(sys)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"acpi:PNP0501:", "pci:x"}, got); diff != "" {
		t.Errorf("Modaliases (-want +got):\n%s", diff)
	}
}

// TestColdplugBlacklist: a driver modprobe.d blacklists is not loaded for its device.
func TestColdplugBlacklist(t *testing.T) {
	sys := filepath.Join(t.TempDir(), "devices")
	writeDevice(t, filepath.Join(sys, "pci0000:00/0000:00:04.0"), "pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00")
	writeDevice(t, filepath.Join(sys, "pci0000:00/0000:00:03.0"), "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	ix := confIndex()
	if err := ix.Validate(); err != nil {
		t.Fatal(err)
	}
	fl := newFakeLoader(ix)
	loaded, err := NewBoot(ix, "/m", fl, BootOptions{}).Coldplug(context.Background(), sys)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"virtio_pci"}, loaded); diff != "" {
		t.Errorf("Coldplug loaded (-want +got):\n%s", diff)
	}
}
