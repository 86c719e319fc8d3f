package dhcpclient

import (
	"io/fs"
	"net"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
)

// TestManagers: each network manager is recognised by what it leaves in the booted root,
// and only by what belongs to this boot.
func TestManagers(t *testing.T) {
	old := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	now := old.Add(time.Hour)
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s), ModTime: now} }
	tests := []struct {
		name string
		// before is the root at the Renewer's first look, after at its second.
		before, after fstest.MapFS
		alive         map[int]bool
		want          Owner
		found         bool
	}{
		{name: "nothing: the root configures the interface statically or not at all",
			after: fstest.MapFS{"etc/network/interfaces": file("iface eth0 inet manual\n"), "run/network/ifstate": file("eth0=eth0\n")}},
		{name: "systemd-networkd's lease of the link",
			after: fstest.MapFS{"run/systemd/netif/leases/2": file("# This is private data.\nADDRESS=10.77.0.100\nNETMASK=255.255.255.0\n")},
			want:  Owner{Manager: "systemd-networkd", Evidence: "/run/systemd/netif/leases/2", Address: net.IPv4(10, 77, 0, 100).To4()}, found: true},
		{name: "systemd-networkd's lease of another link",
			after: fstest.MapFS{"run/systemd/netif/leases/3": file("ADDRESS=10.77.0.100\n")}},
		{name: "systemd-networkd leased another address",
			after: fstest.MapFS{"run/systemd/netif/leases/2": file("ADDRESS=10.77.0.105\n")},
			want:  Owner{Manager: "systemd-networkd", Evidence: "/run/systemd/netif/leases/2", Address: net.IPv4(10, 77, 0, 105).To4()}, found: true},
		{name: "NetworkManager's internal client, lease in /run",
			after: fstest.MapFS{"run/NetworkManager/internal-5f2c-eth0.lease": file("# This is private data.\nADDRESS=10.77.0.100\n")},
			want:  Owner{Manager: "NetworkManager", Evidence: "/run/NetworkManager/internal-5f2c-eth0.lease", Address: net.IPv4(10, 77, 0, 100).To4()}, found: true},
		{name: "the lease file the init seeds for NetworkManager is not NetworkManager's",
			before: fstest.MapFS{"run/NetworkManager/internal-5f2c-eth0.lease": file(NMSeedLeaseHeader + "ADDRESS=10.77.0.100\n")},
			after:  fstest.MapFS{"run/NetworkManager/internal-5f2c-eth0.lease": file(NMSeedLeaseHeader + "ADDRESS=10.77.0.100\n")}},
		{name: "NetworkManager rewrote the seeded lease file with its own lease",
			before: fstest.MapFS{"run/NetworkManager/internal-5f2c-eth0.lease": file(NMSeedLeaseHeader + "ADDRESS=10.77.0.100\n")},
			after:  fstest.MapFS{"run/NetworkManager/internal-5f2c-eth0.lease": file("# This is private data. Do not parse.\nADDRESS=10.77.0.100\n")},
			want:   Owner{Manager: "NetworkManager", Evidence: "/run/NetworkManager/internal-5f2c-eth0.lease", Address: net.IPv4(10, 77, 0, 100).To4()}, found: true},
		{name: "NetworkManager's IPv6 lease does not count",
			after: fstest.MapFS{"run/NetworkManager/internal6-5f2c-eth0.lease": file("")}},
		{name: "a NetworkManager lease the image carries is stale",
			before: fstest.MapFS{"var/lib/NetworkManager/internal-5f2c-eth0.lease": &fstest.MapFile{Data: []byte("ADDRESS=10.0.0.9\n"), ModTime: old}},
			after:  fstest.MapFS{"var/lib/NetworkManager/internal-5f2c-eth0.lease": &fstest.MapFile{Data: []byte("ADDRESS=10.0.0.9\n"), ModTime: old}}},
		{name: "NetworkManager rewrote the lease in /var/lib during this boot",
			before: fstest.MapFS{"var/lib/NetworkManager/internal-5f2c-eth0.lease": &fstest.MapFile{Data: []byte("ADDRESS=10.0.0.9\n"), ModTime: old}},
			after:  fstest.MapFS{"var/lib/NetworkManager/internal-5f2c-eth0.lease": file("ADDRESS=10.77.0.100\n")},
			want:   Owner{Manager: "NetworkManager", Evidence: "/var/lib/NetworkManager/internal-5f2c-eth0.lease", Address: net.IPv4(10, 77, 0, 100).To4()}, found: true},
		{name: "NetworkManager's dhclient plugin",
			after: fstest.MapFS{"var/lib/NetworkManager/dhclient-5f2c-eth0.lease": file("lease {\n  fixed-address 10.77.0.7;\n}\nlease {\n  fixed-address 10.77.0.100;\n}\n")},
			want:  Owner{Manager: "NetworkManager", Evidence: "/var/lib/NetworkManager/dhclient-5f2c-eth0.lease", Address: net.IPv4(10, 77, 0, 100).To4()}, found: true},
		{name: "ifupdown's dhclient, running",
			after: fstest.MapFS{"run/dhclient.eth0.pid": file("412\n"), "var/lib/dhcp/dhclient.eth0.leases": file("lease {\n  fixed-address 10.77.0.100;\n}\n")},
			alive: map[int]bool{412: true},
			want:  Owner{Manager: "dhclient (ifupdown)", Evidence: "/run/dhclient.eth0.pid (pid 412)", Address: net.IPv4(10, 77, 0, 100).To4()}, found: true},
		{name: "ifupdown's dhclient pid file, process gone",
			after: fstest.MapFS{"run/dhclient.eth0.pid": file("412\n")}},
		{name: "dhcpcd",
			after: fstest.MapFS{"run/dhcpcd/eth0-4.pid": file("77\n")}, alive: map[int]bool{77: true},
			want: Owner{Manager: "dhcpcd", Evidence: "/run/dhcpcd/eth0-4.pid (pid 77)"}, found: true},
		{name: "busybox udhcpc",
			after: fstest.MapFS{"run/udhcpc.eth0.pid": file("78")}, alive: map[int]bool{78: true},
			want: Owner{Manager: "udhcpc", Evidence: "/run/udhcpc.eth0.pid (pid 78)"}, found: true},
		{name: "explicit hand-off",
			after: fstest.MapFS{"run/nbdroot/net-eth0.handoff": file("")},
			want:  Owner{Manager: "the administrator", Evidence: "/run/nbdroot/net-eth0.handoff"}, found: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots := []fstest.MapFS{tt.before, tt.after}
			if roots[0] == nil {
				roots[0] = fstest.MapFS{}
			}
			look := 0
			m := &Managers{
				Root: func() (fs.FS, string, error) {
					r := roots[min(look, 1)]
					look++
					// Both looks are at the booted root: the stale files are recorded at
					// the first and compared at the second.
					return r, "booted", nil
				},
				Alive:     func(pid int) bool { return tt.alive[pid] },
				Interface: func() (string, int, error) { return "eth0", 2, nil },
			}
			if o, found := m.Detect(); found && tt.before != nil {
				t.Fatalf("first look found %+v", o)
			}
			o, found := m.Detect()
			if found != tt.found {
				t.Fatalf("Detect found=%v (%+v), want %v", found, o, tt.found)
			}
			if diff := cmp.Diff(tt.want, o); diff != "" {
				t.Errorf("owner (-want +got):\n%s", diff)
			}
		})
	}
}

// TestManagersNewRoot: the stale-file record is taken at the first look at each root, so
// files the initramfs's root never had are not taken for this boot's.
func TestManagersNewRoot(t *testing.T) {
	stale := fstest.MapFS{"var/lib/NetworkManager/internal-u-eth0.lease": &fstest.MapFile{Data: []byte("ADDRESS=10.0.0.9\n")}}
	id := "initramfs"
	root := fstest.MapFS{}
	m := &Managers{
		Root:      func() (fs.FS, string, error) { return root, id, nil },
		Alive:     func(int) bool { return false },
		Interface: func() (string, int, error) { return "eth0", 2, nil },
	}
	if _, found := m.Detect(); found {
		t.Fatal("found a manager in the initramfs")
	}
	id, root = "booted", stale // switch_root
	if o, found := m.Detect(); found {
		t.Fatalf("the image's stale lease counts as a hand-off: %+v", o)
	}
}

// FuzzLeaseFiles feeds what the Renewer reads in the booted root — lease files of
// systemd-networkd, NetworkManager and dhclient, pid files — through their readers: no
// panic, an address only when it is IPv4, a pid only when positive.
func FuzzLeaseFiles(f *testing.F) {
	f.Add([]byte("# This is private data. Do not parse.\nADDRESS=10.77.0.100\nNETMASK=255.255.255.0\n"))
	f.Add([]byte("lease {\n  interface \"eth0\";\n  fixed-address 10.77.0.100;\n}\n"))
	f.Add([]byte("1234\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		root := fstest.MapFS{"f": &fstest.MapFile{Data: b}}
		for _, ip := range []net.IP{leaseAddress(root, "f"), envAddress(root, "f")} {
			if ip != nil && len(ip) != net.IPv4len {
				t.Fatalf("address %v is not IPv4", ip)
			}
		}
		if pid, ok := readPid(root, "f"); ok && pid <= 0 {
			t.Fatalf("pid %d", pid)
		}
	})
}
