package bootparam

import (
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The fuzz targets prove that no command line, root-path or ip= value makes the parser
// panic or hang, and that whatever it returns keeps its contract. Their seed corpora live
// in testdata/fuzz/<Target>/ and run as regression tests in plain `go test`.

// checkParamError fails unless err is a *ParamError for one of params with a one-line
// message that starts with the parameter's name.
func checkParamError(t *testing.T, err error, params ...string) {
	t.Helper()
	var pe *ParamError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *ParamError", err, err)
	}
	msg := pe.Error()
	if strings.ContainsAny(msg, "\r\n") {
		t.Fatalf("error message is not one line: %q", msg)
	}
	if !strings.HasPrefix(msg, pe.Param+"=") {
		t.Fatalf("error message %q does not start with %s=", msg, pe.Param)
	}
	if len(params) == 0 {
		return
	}
	for _, p := range params {
		if pe.Param == p {
			return
		}
	}
	t.Fatalf("error names %q, want one of %q: %v", pe.Param, params, err)
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"ip=::::::dhcp nbd_server=192.168.0.1:10809 root=/dev/nbd0",
		"ip=::::::dhcp nbd_server=192.168.0.1:10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt",
		"root=nbd:[fd00::1]:10809/root:ext4:rw,noatime:bs=4096,timeout=30 ip=eth0:dhcp ip=eth1:off",
		"nbdroot=,root,nbd2 ip=10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:h:eth0:off",
		"nbd_host=nbd.lan nbd_name=root nbd_port=10900 root=LABEL=x rw -- single",
		`init="/bin/my init" nbd_server=a,b:1,[::1]:2 root=/dev/nbd0p1 rd.break=pre-mount nbdroot.connections=4`,
		"netroot=nbd:10.0.0.1:root BOOTIF=01-52-54-00-12-34-56 cryptkey=rootfs:/k cryptdevice=UUID=x:c:discard",
		"nbd_server=nbd.lab root=/dev/nbd0 nbdroot.tls=require nbdroot.tlsname=nbd.lab nbdroot.ktls=0",
		"nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.tls=maybe nbdroot.tlsname=a/b nbdroot.ktls=2",
		"ifname=bootnet:52:54:00:ab:cd:ef bond=bond0:bootnet,eth1:mode=1,miimon=100:9000 vlan=bond0.42:bond0 bridge=br0:bond0.42 rd.route=[2001:db8::/48]:[fe80::1]:br0 ip=br0:dhcp root=dhcp",
		"vlan=vlan0042:eth0 rd.route=10.8.0.0/255.255.0.0::eth0 bridge bond ip=eth0:dhcp nbd_server=[2001:db8::1]:10809 root=/dev/nbd0",
		"nbd_server=10.0.0.1 root=/dev/mapper/vg--0-root resume=/dev/vg-0/swap rd.lvm.lv=vg-0/root rd.lvm.vg=data",
		"nbd_server=10.0.0.1 rd.luks.name=0b1d0f70-8f2c-4b4c-9d6e-3f1c2a4b5c6d=c luks.options=discard rd.luks.key=/k:LABEL=K root=/dev/vg/root",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		p, err := Parse(cmdline)
		if err != nil {
			checkParamError(t, err)
			return
		}
		if err := p.check(true); err != nil {
			t.Fatalf("Parse returned a plan that fails its own check: %v", err)
		}
		if p.NBD.Host != "" && (len(p.NBD.Servers) == 0 || p.NBD.Servers[0] != (Server{p.NBD.Host, p.NBD.Port})) {
			t.Fatalf("Servers[0] %v is not Host:Port %s:%d", p.NBD.Servers, p.NBD.Host, p.NBD.Port)
		}
		if p.NBD.Host == "" && !p.NBD.FromDHCP {
			t.Fatalf("no server and not waiting for DHCP")
		}
		if p.Root.Device == "" || p.Init == "" || len(p.IP) == 0 {
			t.Fatalf("incomplete plan: root %q init %q ip %v", p.Root.Device, p.Init, p.IP)
		}
		again, err := Parse(cmdline)
		if err != nil {
			t.Fatalf("second Parse failed: %v", err)
		}
		if diff := cmp.Diff(p, again); diff != "" {
			t.Fatalf("Parse is not deterministic (-first +second):\n%s", diff)
		}
		b, err := json.Marshal(p)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		var back Plan
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("Unmarshal: %v", err)
		}
		// Words after -- belong to the init and are kept byte for byte in the Plan; JSON
		// can only carry them as UTF-8 (invalid bytes become U+FFFD), so compare them so.
		want := *p
		want.InitArgs = nil
		for _, a := range p.InitArgs {
			var s string
			j, _ := json.Marshal(a)
			json.Unmarshal(j, &s)
			want.InitArgs = append(want.InitArgs, s)
		}
		if diff := cmp.Diff(&want, &back); diff != "" {
			t.Fatalf("JSON round trip (-parsed +decoded):\n%s", diff)
		}
		if err := p.Explain(io.Discard); err != nil {
			t.Fatalf("Explain: %v", err)
		}
		if p.NBD.FromDHCP && p.NBD.Host == "" {
			// Completing the plan never panics and never leaves it invalid without saying so.
			if tg, err := p.Resolve(&DHCP{RootPath: "nbd:10.0.0.1:root", ServerAddr: "10.0.0.9"}); err != nil {
				checkParamError(t, err)
			} else if err := withTarget(p, tg).Validate(); err != nil {
				t.Fatalf("Resolve succeeded but Validate fails: %v", err)
			}
		}
	})
}

func FuzzParseRootPath(f *testing.F) {
	for _, s := range []string{
		"", "10.0.0.1", "nbd.lan:10900", "[fd00::1]:10900", "nbd:10.0.0.1:root:ext4:rw,noatime:bs=512,timeout=15",
		"192.168.1.1,export,nbd0", "nbdroot=192.168.1.1,export", "192.168.1.1:10900/root", ":/root", ",10900",
		"nbd://nbd.lan:10900/my%20root", "nfs:10.0.0.1:/srv", "nbds://x/y",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rootPath string) {
		rp, err := ParseRootPath(rootPath)
		if err != nil {
			checkParamError(t, err, "root-path")
			return
		}
		if rp.Host != "" {
			if r := checkHost(rp.Host); r != "" {
				t.Fatalf("accepted host %q: %s", rp.Host, r)
			}
			if len(rp.Servers) == 0 || rp.Servers[0] != (Server{rp.Host, rp.Port}) {
				t.Fatalf("Servers %v do not start with Host:Port", rp.Servers)
			}
		}
		if rp.Port < 0 || rp.Port > 65535 {
			t.Fatalf("port %d", rp.Port)
		}
		if r := checkExport(rp.Export); r != "" {
			t.Fatalf("accepted export %q: %s", rp.Export, r)
		}
		p, err := Parse("ip=dhcp root=/dev/nbd0")
		if err != nil {
			t.Fatal(err)
		}
		if tg, err := p.Resolve(&DHCP{RootPath: rootPath, ServerAddr: "10.0.0.9"}); err != nil {
			checkParamError(t, err)
		} else if err := withTarget(p, tg).Validate(); err != nil {
			t.Fatalf("Resolve(%q) succeeded but Validate fails: %v", rootPath, err)
		}
	})
}

func FuzzParseIP(f *testing.F) {
	for _, s := range []string{
		"", "off", "dhcp", "::::::dhcp", ":::::eth0:", "eth0:dhcp", "eth1:any:1400",
		"10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:thin01.lab:eth0:off:10.0.0.53:10.0.0.54:10.0.0.123",
		"10.0.0.5::10.0.0.1:24::eth0:none:9000", "10.1.2.3", "[fd00::2]::[fd00::1]:64::eth0:none",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, value string) {
		c, err := ParseIP(value)
		if err != nil {
			checkParamError(t, err, "ip")
			return
		}
		if r := checkIPConfig(c); r != "" {
			t.Fatalf("ParseIP(%q) = %+v, which the net hook would refuse: %s", value, c, r)
		}
	})
}

func FuzzTokenize(f *testing.F) {
	for _, s := range []string{
		"", "ro root=/dev/nbd0", `a="b c" "d=e f" g=h"i j"k`, "a -- b c", `"`, "=a=b", "x=\"\"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmdline string) {
		params, initArgs := Tokenize(cmdline)
		if len(params)+len(initArgs) > len(cmdline) {
			t.Fatalf("%d words out of %d bytes", len(params)+len(initArgs), len(cmdline))
		}
		for _, p := range params {
			if !p.HasValue && p.Value != "" {
				t.Fatalf("value without '=': %+v", p)
			}
			// A word without quotes, spaces or a leading '=' reads back as itself.
			s := p.String()
			if s == "" || s == "--" || s[0] == '=' || strings.ContainsAny(s, "\" \t\n\v\f\r") {
				continue
			}
			again, rest := Tokenize(s)
			if len(again) != 1 || again[0] != p || len(rest) != 0 {
				t.Fatalf("Tokenize(%q) = %+v %q, want [%+v]", s, again, rest, p)
			}
		}
	})
}
