package netboot

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/bootparam"
)

// planOf parses a command line as the init does (and `nbdroot cmdline` prints it).
func planOf(t *testing.T, cmdline string) *bootparam.Plan {
	t.Helper()
	p, err := bootparam.Parse(cmdline)
	if err != nil {
		t.Fatalf("bootparam.Parse(%q): %v", cmdline, err)
	}
	return p
}

// planFacts are the fields of a Plan the command line decides.
type planFacts struct {
	Host          string
	Port          int
	Export        string
	Root          string
	CryptDev      string
	CryptName     string
	BootIF        string
	DHCP          bool
	ServerFromCmd bool
}

func factsOf(p *bootparam.Plan) planFacts {
	f := planFacts{Host: p.NBD.Host, Port: p.NBD.Port, Export: p.NBD.Export, Root: p.Root.Device, BootIF: p.BootIF,
		DHCP: len(p.IP) == 1 && p.IP[0].Mode == bootparam.ModeDHCP, ServerFromCmd: !p.NBD.FromDHCP}
	if p.Crypt != nil {
		f.CryptDev, f.CryptName = p.Crypt.Device, p.Crypt.Name
	}
	return f
}

// TestCmdlineParses proves that every command line netboot writes means to the init what
// netboot meant: bootparam (the init's parser) reads back the server, export, root and
// LUKS device.
func TestCmdlineParses(t *testing.T) {
	tests := []struct {
		name string
		c    Cmdline
		want planFacts
	}{
		{"whole-image root", Cmdline{Host: "10.0.0.1", Port: 10809, Export: "root", Root: Root{Device: "/dev/nbd0"}},
			planFacts{Host: "10.0.0.1", Port: 10809, Export: "root", Root: "/dev/nbd0", DHCP: true, ServerFromCmd: true}},
		{"default export", Cmdline{Host: "10.0.2.100", Port: 41234, Root: Root{Device: "/dev/nbd0"}},
			planFacts{Host: "10.0.2.100", Port: 41234, Root: "/dev/nbd0", DHCP: true, ServerFromCmd: true}},
		{"root on partition 1", Cmdline{Host: "nbd.lab.test", Port: 10809, Export: "fleet/debian-12", Root: Root{Device: "/dev/nbd0p1"}},
			planFacts{Host: "nbd.lab.test", Port: 10809, Export: "fleet/debian-12", Root: "/dev/nbd0p1", DHCP: true, ServerFromCmd: true}},
		{"LUKS on the whole image", Cmdline{Host: "10.0.0.1", Port: 10809, Export: "secret", Root: Root{Device: "/dev/nbd0", LUKS: true}},
			planFacts{Host: "10.0.0.1", Port: 10809, Export: "secret", Root: "/dev/mapper/nbdcrypt", CryptDev: "/dev/nbd0", CryptName: "nbdcrypt", DHCP: true, ServerFromCmd: true}},
		{"LUKS on partition 2", Cmdline{Host: "10.0.0.1", Port: 10809, Root: Root{Device: "/dev/nbd0p2", LUKS: true}},
			planFacts{Host: "10.0.0.1", Port: 10809, Root: "/dev/mapper/nbdcrypt", CryptDev: "/dev/nbd0p2", CryptName: "nbdcrypt", DHCP: true, ServerFromCmd: true}},
		{"IPv6 server", Cmdline{Host: "fd00::1", Port: 10809, Export: "root", Root: Root{Device: "/dev/nbd0"}},
			planFacts{Host: "fd00::1", Port: 10809, Export: "root", Root: "/dev/nbd0", DHCP: true, ServerFromCmd: true}},
		{"BOOTIF", Cmdline{Host: "10.0.0.1", Port: 10809, Root: Root{Device: "/dev/nbd0"}, BootIF: "01-52-54-00-12-34-56"},
			planFacts{Host: "10.0.0.1", Port: 10809, Root: "/dev/nbd0", BootIF: "52:54:00:12:34:56", DHCP: true, ServerFromCmd: true}},
		{"append overrides root", Cmdline{Host: "10.0.0.1", Port: 10809, Root: Root{Device: "/dev/nbd0"}, Append: "console=ttyS0 root=/dev/nbd0p3"},
			planFacts{Host: "10.0.0.1", Port: 10809, Root: "/dev/nbd0p3", DHCP: true, ServerFromCmd: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := factsOf(planOf(t, tt.c.String()))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("%s\n(-want +got):\n%s", tt.c, diff)
			}
		})
	}
}

// TestCmdlineSeed: for the seed's setup the line is the seed's own append line.
func TestCmdlineSeed(t *testing.T) {
	got := Cmdline{Host: "192.168.0.1", Port: 10809, Root: Root{Device: "/dev/nbd0", LUKS: true}}.String()
	want := "ip=::::::dhcp nbd_server=192.168.0.1:10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func testBoot(export string, def bool) *Boot {
	return &Boot{Export: export, Default: def, Source: "/srv/root.img", Root: Root{Device: "/dev/nbd0"},
		Kernels: []Kernel{{Version: "6.1.0-18-amd64", Kernel: "vmlinuz-6.1.0-18-amd64", Initrd: "nbdroot.img-6.1.0-18-amd64"},
			{Version: "6.1.0-9-amd64", Kernel: "vmlinuz-6.1.0-9-amd64", Initrd: "nbdroot.img-6.1.0-9-amd64"}}}
}

// kernelLine extracts the command line of an iPXE script's kernel line (after the image
// and initrd=), with iPXE's MAC expansion done as iPXE would.
func kernelLine(t *testing.T, script string) (image, cmdline string) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^kernel (\S+) initrd=\S+ (.*)$`).FindStringSubmatch(script)
	if m == nil {
		t.Fatalf("no kernel line in\n%s", script)
	}
	return m[1], strings.ReplaceAll(m[2], "${netX/mac:hexhyp}", "52-54-00-12-34-56")
}

func TestIPXEScript(t *testing.T) {
	for _, tt := range []struct {
		name, export string
		def          bool
		wantURL      string
		wantExport   string
	}{
		{"named export", "root", false, "http://10.0.2.100:8080/root/", "root"},
		{"default export", "root", true, "http://10.0.2.100:8080/", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := testBoot(tt.export, tt.def)
			c := Cmdline{Host: "10.0.2.100", Port: 10809, Export: exportOf(b), Root: b.Root, Append: "console=ttyS0"}
			s := IPXEScript(b, "http://10.0.2.100:8080", c)
			if !strings.HasPrefix(s, "#!ipxe\n") {
				t.Errorf("no #!ipxe header:\n%s", s)
			}
			img, line := kernelLine(t, s)
			if img != tt.wantURL+"vmlinuz-6.1.0-18-amd64" {
				t.Errorf("kernel %s", img)
			}
			if !strings.Contains(s, "\ninitrd "+tt.wantURL+"nbdroot.img-6.1.0-18-amd64\n") || !strings.HasSuffix(s, "\nboot\n") {
				t.Errorf("script:\n%s", s)
			}
			got := factsOf(planOf(t, line))
			want := planFacts{Host: "10.0.2.100", Port: 10809, Export: tt.wantExport, Root: "/dev/nbd0", BootIF: "52:54:00:12:34:56", DHCP: true, ServerFromCmd: true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPXELinuxConfig(t *testing.T) {
	b := testBoot("root", false)
	cfg := PXELinuxConfig(b, Cmdline{Host: "10.77.0.1", Port: 10809, Export: "root", Root: b.Root})
	for _, want := range []string{"default nbdroot\n", "  kernel root/vmlinuz-6.1.0-18-amd64\n",
		"  append initrd=root/nbdroot.img-6.1.0-18-amd64 ip=::::::dhcp nbd_server=10.77.0.1:10809 nbd_export=root root=/dev/nbd0\n",
		"  ipappend 2\n"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("no %q in\n%s", want, cfg)
		}
	}
	line := regexp.MustCompile(`(?m)^  append initrd=\S+ (.*)$`).FindStringSubmatch(cfg)[1]
	if got := factsOf(planOf(t, line+" BOOTIF=01-52-54-00-12-34-56")); got.Export != "root" || got.Host != "10.77.0.1" {
		t.Errorf("parsed %+v", got)
	}
}

func TestCheckExportName(t *testing.T) {
	for name, ok := range map[string]bool{
		"": true, "root": true, "fleet/debian-12": true, "a.b_c-d+e~f@g": true,
		"my disk": false, "a$b": false, "${x}": false, "a;b": false, "../x": false, "a/../b": false,
		"/abs": false, "a//b": false, "trail/": false, "a\"b": false, "a#b": false, "%41": false, "./a": false,
	} {
		if err := CheckExportName(name); (err == nil) != ok {
			t.Errorf("CheckExportName(%q) = %v, want ok=%v", name, err, ok)
		}
		if ok && name != "" {
			// An accepted name survives the command line.
			c := Cmdline{Host: "10.0.0.1", Port: 10809, Export: name, Root: Root{Device: "/dev/nbd0"}}
			if got := planOf(t, c.String()).NBD.Export; got != name {
				t.Errorf("export %q parsed back as %q", name, got)
			}
		}
	}
}
