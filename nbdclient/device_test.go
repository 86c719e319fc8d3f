package nbdclient

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sysTree(t *testing.T, index int, maxKB string) string {
	t.Helper()
	sys := t.TempDir()
	q := filepath.Join(sys, "block", "nbd"+string(rune('0'+index)), "queue")
	if err := os.MkdirAll(q, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(q, "max_sectors_kb"), []byte(maxKB+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return sys
}

func TestLimitRequestSize(t *testing.T) {
	tests := []struct {
		name string
		max  uint32
		want string
	}{
		{"server allows less", 64 << 10, "64"},
		{"server allows more: never raised", 32 << 20, "1280\n"},
		{"below a page", 1000, "4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := sysTree(t, 3, "1280")
			if err := LimitRequestSize(sys, 3, tt.max); err != nil {
				t.Fatal(err)
			}
			b, _ := os.ReadFile(filepath.Join(sys, "block/nbd3/queue/max_sectors_kb"))
			if string(b) != tt.want {
				t.Errorf("max_sectors_kb = %q, want %q", b, tt.want)
			}
		})
	}
	if err := LimitRequestSize(t.TempDir(), 3, 4096); err == nil || !strings.Contains(err.Error(), "request size limit") {
		t.Errorf("missing sysfs file: err = %v", err)
	}
}

func TestSetupDevice(t *testing.T) {
	sys := sysTree(t, 1, "1280")
	dev := t.TempDir()
	// Not a block device: the partition scan fails and says so; the request size was set.
	if err := os.WriteFile(filepath.Join(dev, "nbd1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := SetupDevice(dev, sys, 1, Device{MaxRequest: 128 << 10})
	if err == nil || !strings.Contains(err.Error(), "partition scan of "+filepath.Join(dev, "nbd1")) {
		t.Errorf("err = %v, want the partition scan's failure", err)
	}
	b, _ := os.ReadFile(filepath.Join(sys, "block/nbd1/queue/max_sectors_kb"))
	if string(b) != "128" {
		t.Errorf("max_sectors_kb = %q, want 128", b)
	}
}

func TestSetReadAhead(t *testing.T) {
	sys := t.TempDir()
	q := filepath.Join(sys, "block/nbd2/queue")
	if err := os.MkdirAll(q, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(q, "read_ahead_kb"), []byte("128\n"), 0o644)
	if err := SetReadAhead(sys, 2, 1024); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(q, "read_ahead_kb")); string(b) != "1024" {
		t.Errorf("read_ahead_kb = %q, want 1024", b)
	}
	if err := SetReadAhead(sys, 7, 1024); err == nil {
		t.Error("no error for a device without sysfs queue")
	}
}
