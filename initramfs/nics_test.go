package initramfs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/kmod/depmod"
	"github.com/nbdroot/nbdroot/kmod/kmodtest"
)

func mustTime(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t
}

// fakeNet builds a /sys/class/net look-alike: name → (type, driver module or "", wireless).
func fakeNet(t *testing.T, ifaces map[string][3]string) string {
	t.Helper()
	root := t.TempDir()
	net := filepath.Join(root, "class", "net")
	for name, v := range ifaces {
		dir := filepath.Join(net, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(dir, "type"), []byte(v[0]+"\n"), 0o444)
		if v[1] != "" {
			drv := filepath.Join(dir, "device", "driver")
			os.MkdirAll(drv, 0o755)
			if err := os.Symlink("../../../../module/"+v[1], filepath.Join(drv, "module")); err != nil {
				t.Fatal(err)
			}
		}
		if v[2] != "" {
			os.MkdirAll(filepath.Join(dir, "wireless"), 0o755)
		}
	}
	return net
}

func TestHostNICDrivers(t *testing.T) {
	net := fakeNet(t, map[string][3]string{
		"eth0":   {"1", "e1000e", ""},
		"enp2s0": {"1", "r8169", ""},
		"eth1":   {"1", "e1000e", ""},
		"wlan0":  {"1", "iwlwifi", "yes"},
		"lo":     {"772", "", ""},
		"br0":    {"1", "", ""},      // virtual: no device
		"ib0":    {"32", "mlx5", ""}, // InfiniBand
	})
	got, err := HostNICDrivers(net)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"e1000e", "r8169"}, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if _, err := HostNICDrivers(filepath.Join(t.TempDir(), "none")); err == nil {
		t.Error("missing /sys/class/net: no error")
	}
}

func TestNICRequests(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	if err := kmodtest.Debian61().Write(dir); err != nil {
		t.Fatal(err)
	}
	d, err := depmod.OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	net := fakeNet(t, map[string][3]string{"eth0": {"1", "igc", ""}})
	tests := []struct {
		policy       string
		wantRequired []string
		wantOptional []string
		wantErr      string
	}{
		{policy: "", wantOptional: CommonNICs},
		{policy: "common", wantOptional: CommonNICs},
		{policy: "host-only", wantRequired: []string{"igc"}},
		{policy: "universal", wantOptional: []string{"virtio_pci", "virtio_net", "e1000", "e1000e", "igc", "r8169", "tg3"}},
		{policy: "e1000, tg3", wantRequired: []string{"e1000", "tg3"}},
		{policy: "common,tg3", wantRequired: []string{"tg3"}, wantOptional: CommonNICs},
	}
	for _, tt := range tests {
		t.Run(tt.policy, func(t *testing.T) {
			reqs, _, err := nicRequests(tt.policy, d, net)
			if err != nil {
				t.Fatal(err)
			}
			var req, opt []string
			for _, r := range reqs {
				if r.Optional {
					opt = append(opt, r.Name)
				} else {
					req = append(req, r.Name)
				}
			}
			if diff := cmp.Diff(tt.wantRequired, req); diff != "" {
				t.Errorf("required (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantOptional, opt); diff != "" {
				t.Errorf("optional (-want +got):\n%s", diff)
			}
		})
	}
	_, notes, err := nicRequests("host-only", d, fakeNet(t, map[string][3]string{"lo": {"772", "", ""}}))
	if err != nil || len(notes) != 1 || !strings.Contains(notes[0], "host-only") {
		t.Errorf("host-only without NICs: notes %q err %v, want one note", notes, err)
	}
}
