package nbdclient

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeSys builds /sys/block/nbdN trees: size in sectors and optional other attributes.
func fakeSys(t *testing.T, devs map[string]map[string]string) string {
	t.Helper()
	sys := t.TempDir()
	for dev, attrs := range devs {
		dir := filepath.Join(sys, "block", dev)
		if err := os.MkdirAll(filepath.Join(dir, "queue"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range attrs {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return sys
}

func TestFreeDevice(t *testing.T) {
	tests := []struct {
		name    string
		devs    map[string]map[string]string
		want    int
		wantErr string
	}{
		{"first", map[string]map[string]string{"nbd0": {"size": "0"}, "nbd1": {"size": "0"}}, 0, ""},
		{"skips connected", map[string]map[string]string{
			"nbd0": {"size": "131072", "pid": "1"}, "nbd1": {"size": "0", "pid": "55"}, "nbd2": {"size": "0"}, "nbd10": {"size": "0"},
			"sda": {"size": "0"}}, 2, ""},
		{"numeric order", map[string]map[string]string{"nbd10": {"size": "0"}, "nbd9": {"size": "0"}}, 9, ""},
		{"all busy", map[string]map[string]string{"nbd0": {"size": "8", "pid": "1"}}, -1, "all 1 NBD devices are connected"},
		{"no driver", map[string]map[string]string{"sda": {"size": "8"}}, -1, "is the nbd module loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FreeDevice(fakeSys(t, tt.devs))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FreeDevice = %d, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("FreeDevice = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestDeviceNumber(t *testing.T) {
	for in, want := range map[string]int{"/dev/nbd0": 0, "nbd12": 12, "/dev/nbd0p1": -1, "/dev/sda": -1, "/dev/nbd": -1, "/dev/nbd-1": -1, "/dev/nbd01": -1} {
		got, err := DeviceNumber(in)
		if got != want || (want < 0) != (err != nil) {
			t.Errorf("DeviceNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestDeviceInfos(t *testing.T) {
	sys := fakeSys(t, map[string]map[string]string{
		"nbd0": {"size": "131072", "pid": "1", "ro": "0", "backend": "10.0.2.100:10809/root"},
		"nbd1": {"size": "2048", "pid": "300", "ro": "1"},
		"nbd2": {"size": "0"},
	})
	os.WriteFile(filepath.Join(sys, "block/nbd0/queue/logical_block_size"), []byte("512\n"), 0o644)
	keeper := func(i int) (*KeeperState, error) {
		if i == 0 {
			return &KeeperState{Device: "/dev/nbd0", Pid: 125, State: "watching"}, nil
		}
		return nil, ErrNoKeeper
	}
	got := DeviceInfos(sys, []DeviceStatus{{0, true}, {1, true}, {2, false}}, keeper)
	want := []DeviceInfo{
		{Device: "/dev/nbd0", Index: 0, Connected: true, Size: 64 << 20, BlockSize: 512, Backend: "10.0.2.100:10809/root", Pid: 1,
			Keeper: &KeeperState{Device: "/dev/nbd0", Pid: 125, State: "watching"}},
		{Device: "/dev/nbd1", Index: 1, Connected: true, Size: 1 << 20, ReadOnly: true, Pid: 300},
		{Device: "/dev/nbd2", Index: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestKeeperErrorWording(t *testing.T) {
	err := error(&KeeperError{Device: "/dev/nbd3", Err: ErrKeeperRunning})
	if !errors.Is(err, ErrKeeperRunning) || !strings.Contains(err.Error(), "nbdroot detach /dev/nbd3") {
		t.Errorf("%v", err)
	}
}
