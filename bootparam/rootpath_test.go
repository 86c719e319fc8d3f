package bootparam

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseRootPath(t *testing.T) {
	rw := true
	ro := false
	one := func(host string, port int) []Server { return []Server{{Host: host, Port: port}} }
	tests := []struct {
		rootPath string
		want     *RootPath
	}{
		{"", &RootPath{}},
		// Plain HOST[:PORT].
		{"10.0.0.1", &RootPath{Host: "10.0.0.1", Port: 10809, Servers: one("10.0.0.1", 10809)}},
		{"nbd.lan:10900", &RootPath{Host: "nbd.lan", Port: 10900, Servers: one("nbd.lan", 10900)}},
		{"[fd00::1]:10900", &RootPath{Host: "fd00::1", Port: 10900, Servers: one("fd00::1", 10900)}},
		// dracut.
		{"nbd:10.0.0.1:10809", &RootPath{Host: "10.0.0.1", Port: 10809, Servers: one("10.0.0.1", 10809)}},
		{"nbd:10.0.0.1:root:ext4:rw,noatime:bs=512,timeout=15",
			&RootPath{Host: "10.0.0.1", Port: 10809, Servers: one("10.0.0.1", 10809), Export: "root", HasExport: true,
				FSType: "ext4", Flags: "noatime", RW: &rw, BlockSize: 512, Timeout: 15 * time.Second}},
		{"nbd:[fd00::1]:10809/root::ro", &RootPath{Host: "fd00::1", Port: 10809, Servers: one("fd00::1", 10809),
			Export: "root", HasExport: true, RW: &ro}},
		// Debian.
		{"192.168.1.1,export,nbd0", &RootPath{Host: "192.168.1.1", Port: 10809, Servers: one("192.168.1.1", 10809),
			Export: "export", HasExport: true, Device: "/dev/nbd0"}},
		{"nbdroot=192.168.1.1,export", &RootPath{Host: "192.168.1.1", Port: 10809, Servers: one("192.168.1.1", 10809),
			Export: "export", HasExport: true}},
		{"192.168.1.1:10900/root", &RootPath{Host: "192.168.1.1", Port: 10900, Servers: one("192.168.1.1", 10900),
			Export: "root", HasExport: true}},
		{"192.168.1.1:/root", &RootPath{Host: "192.168.1.1", Port: 10809, Servers: one("192.168.1.1", 10809),
			Export: "root", HasExport: true}},
		{",root", &RootPath{Export: "root", HasExport: true}},
		{":/root", &RootPath{Export: "root", HasExport: true}},
		{",10900", &RootPath{Port: 10900}},
		// NBD URI.
		{"nbd://10.0.0.1", &RootPath{Host: "10.0.0.1", Port: 10809, Servers: one("10.0.0.1", 10809)}},
		{"nbd://nbd.lan:10900/my%20root", &RootPath{Host: "nbd.lan", Port: 10900, Servers: one("nbd.lan", 10900),
			Export: "my root", HasExport: true}},
		{"nbd://[fd00::1]/root", &RootPath{Host: "fd00::1", Port: 10809, Servers: one("fd00::1", 10809),
			Export: "root", HasExport: true}},
	}
	for _, tt := range tests {
		t.Run(tt.rootPath, func(t *testing.T) {
			got, err := ParseRootPath(tt.rootPath)
			if err != nil {
				t.Fatalf("ParseRootPath(%q): %v", tt.rootPath, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseRootPath(%q) (-want +got):\n%s", tt.rootPath, diff)
			}
		})
	}
}

func TestParseRootPathErrors(t *testing.T) {
	for _, tt := range []struct{ rootPath, reason string }{
		{"nfs:10.0.0.1:/srv/root", "names a nfs root"},
		{"iscsi:10.0.0.1::::iqn.2001-04.com.example:root", "names a iscsi root"},
		{"http://10.0.0.1/root.img", "names a http root"},
		{"nbds://10.0.0.1/root", "not supported"},
		{"nbd+unix:///root?socket=/s", "not supported"},
		{"nbd://10.0.0.1/root?tls=on", "query"},
		{"nbd://10.0.0.1/%zz", "percent-encoding"},
		{"nbd://10.0.0.1:0/root", "port must be 1-65535"},
		{"dhcp", "cannot itself say dhcp"},
		{"nbd:10.0.0.1:99999", "port must be 1-65535"},
		{"10.0.0.1:99999", "port must be 1-65535"},
		{"10.0.0.1,root,sda", "is not an NBD device"},
		{"bad host!", "neither an IP address nor a DNS name"},
	} {
		t.Run(tt.rootPath, func(t *testing.T) {
			_, err := ParseRootPath(tt.rootPath)
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseRootPath(%q) error %v, want a *ParamError", tt.rootPath, err)
			}
			if pe.Param != "root-path" || pe.Value != tt.rootPath || !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("ParseRootPath(%q) = %v; want root-path=%q with reason containing %q", tt.rootPath, err, tt.rootPath, tt.reason)
			}
		})
	}
}

func TestResolveDHCP(t *testing.T) {
	tests := []struct {
		name       string
		cmdline    string
		rootPath   string
		serverAddr string
		nbd        NBD
		root       Root
		sources    map[string]string
		from       ServerSource
	}{
		{"root-path names everything", "ip=dhcp root=/dev/nbd0", "nbd:10.0.0.1:10900/root:ext4:rw", "10.0.0.9",
			withExport(server("10.0.0.1", 10900), "root"), Root{Device: "/dev/nbd0", FSType: "ext4", RW: true},
			map[string]string{"nbd.host": "root-path=nbd:10.0.0.1:10900/root:ext4:rw (DHCP option 17)"}, ServerFromRootPath},
		{"empty root-path: the DHCP server", "ip=dhcp root=/dev/nbd0", "", "10.0.0.9",
			server("10.0.0.9", 10809), Root{Device: "/dev/nbd0"},
			map[string]string{"nbd.host": "DHCP server address 10.0.0.9"}, ServerFromDHCPServer},
		{"root-path without server: the DHCP server", "ip=dhcp root=/dev/nbd0", ",root", "10.0.0.9",
			withExport(server("10.0.0.9", 10809), "root"), Root{Device: "/dev/nbd0"}, nil, ServerFromDHCPServer},
		{"cmdline export beats the root-path", "ip=dhcp nbdroot=dhcp,mine root=/dev/nbd0", "10.0.0.1:/theirs", "",
			withExport(server("10.0.0.1", 10809), "mine"), Root{Device: "/dev/nbd0"},
			map[string]string{"nbd.export": "nbdroot=dhcp,mine"}, ServerFromRootPath},
		{"cmdline port applies to the root-path server", "ip=dhcp nbdroot=dhcp,10900 root=/dev/nbd0", "10.0.0.1", "",
			server("10.0.0.1", 10900), Root{Device: "/dev/nbd0"}, nil, ServerFromRootPath},
		{"root-path port without server", "ip=dhcp root=/dev/nbd0", ",10900", "10.0.0.9",
			server("10.0.0.9", 10900), Root{Device: "/dev/nbd0"}, nil, ServerFromDHCPServer},
		{"Debian root-path device moves a derived root", "ip=dhcp root=dhcp", "10.0.0.1,root,nbd3", "",
			withDevice(withExport(server("10.0.0.1", 10809), "root"), "/dev/nbd3"), Root{Device: "/dev/nbd3"}, nil, ServerFromRootPath},
		{"cmdline device beats the root-path's", "ip=dhcp root=/dev/nbd1p1", "10.0.0.1,root,nbd3", "",
			withDevice(withExport(server("10.0.0.1", 10809), "root"), "/dev/nbd1"), Root{Device: "/dev/nbd1p1"},
			map[string]string{"nbd.device": "root=/dev/nbd1p1"}, ServerFromRootPath},
		{"cmdline fstype and mode beat the root-path's", "ip=dhcp root=/dev/nbd0 rootfstype=xfs ro", "nbd:10.0.0.1:root:ext4:rw:bs=1024", "",
			NBD{Host: "10.0.0.1", Port: 10809, Export: "root", Device: DefaultDevice, Servers: []Server{{"10.0.0.1", 10809}}, BlockSize: 1024},
			Root{Device: "/dev/nbd0", FSType: "xfs"}, nil, ServerFromRootPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.cmdline, err)
			}
			if err := p.Validate(); err == nil {
				t.Errorf("Validate() before the DHCP answer succeeded; the plan has no server yet")
			}
			before := marshalPlan(t, p)
			tg, err := p.Resolve(&DHCP{RootPath: tt.rootPath, ServerAddr: tt.serverAddr})
			if err != nil {
				t.Fatalf("Resolve(%q, %q): %v", tt.rootPath, tt.serverAddr, err)
			}
			if after := marshalPlan(t, p); after != before {
				t.Errorf("Resolve changed the Plan:\nbefore %s\nafter  %s", before, after)
			}
			tt.nbd.FromDHCP = true
			if diff := cmp.Diff(tt.nbd, tg.NBD); diff != "" {
				t.Errorf("NBD (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.root, tg.Root); diff != "" {
				t.Errorf("Root (-want +got):\n%s", diff)
			}
			if tg.Server != tt.from {
				t.Errorf("Server = %v, want %v", tg.Server, tt.from)
			}
			for k, want := range tt.sources {
				if tg.Sources[k] != want {
					t.Errorf("Sources[%q] = %q, want %q", k, tg.Sources[k], want)
				}
			}
			if err := withTarget(p, tg).Validate(); err != nil {
				t.Errorf("Validate() of the resolved plan: %v", err)
			}
		})
	}
}

func TestResolveDHCPErrors(t *testing.T) {
	for _, tt := range []struct{ name, cmdline, rootPath, serverAddr, param string }{
		{"nothing names a server", "ip=dhcp root=/dev/nbd0", "", "", "nbd_server"},
		{"root-path names another root", "ip=dhcp root=/dev/nbd0", "nfs:10.0.0.1:/srv", "10.0.0.9", "root-path"},
		{"bad DHCP server address", "ip=dhcp root=/dev/nbd0", "", "bad host!", "dhcp-server"},
		{"root-path with a bad NBD option", "ip=dhcp root=/dev/nbd0", "nbd:10.0.0.1:root:ext4::bs=3", "", "root-path"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.cmdline, err)
			}
			_, err = p.Resolve(&DHCP{RootPath: tt.rootPath, ServerAddr: tt.serverAddr})
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param != tt.param {
				t.Errorf("Resolve(%q, %q) = %v; want a *ParamError for %s", tt.rootPath, tt.serverAddr, err, tt.param)
			}
		})
	}
}

func TestResolveKeepsCmdlineServer(t *testing.T) {
	p, err := Parse("ip=dhcp nbd_server=10.0.0.1 root=/dev/nbd0")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := p.Resolve(&DHCP{RootPath: "nbd:10.0.0.2:other", ServerAddr: "10.0.0.9"})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(p.NBD, tg.NBD); diff != "" || tg.Server != ServerFromCmdline {
		t.Errorf("the DHCP answer changed a target whose cmdline named the server (-plan +target):\n%s", diff)
	}
}

func TestResolveWithoutDHCP(t *testing.T) {
	p, err := Parse("ip=dhcp root=/dev/nbd0")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := p.Resolve(nil)
	if err != nil || tg.Server != ServerMissing || tg.NBD.Host != "" {
		t.Errorf("Resolve(nil) = %+v, %v; want a target without a server", tg, err)
	}
}

// marshalPlan is the Plan as `nbdroot cmdline --json` prints it.
func marshalPlan(t *testing.T, p *Plan) string {
	t.Helper()
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// withTarget is p with the target's connection and root, for Validate.
func withTarget(p *Plan, tg *Target) *Plan {
	q := *p
	q.NBD, q.Root, q.Sources = tg.NBD, tg.Root, tg.Sources
	return &q
}
