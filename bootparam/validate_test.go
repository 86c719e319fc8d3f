package bootparam

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestValidate changes one field of a valid plan at a time and checks that Validate names
// the parameter behind the field (from Sources) and says what is wrong.
func TestValidate(t *testing.T) {
	const cmdline = "ip=10.0.0.5:::255.255.255.0::eth0:off nbd_server=10.0.0.1 cryptdevice=/dev/nbd0:c root=/dev/mapper/c init=/sbin/init"
	tests := []struct {
		name   string
		change func(p *Plan)
		param  string
		reason string
	}{
		{"bad host", func(p *Plan) { p.NBD.Host = "bad host"; p.NBD.Servers = nil }, "nbd_server", "neither an IP address"},
		{"port zero", func(p *Plan) { p.NBD.Port = 0; p.NBD.Servers = nil }, "nbd_server", "port must be 1-65535"},
		{"servers disagree", func(p *Plan) { p.NBD.Servers = []Server{{"10.0.0.2", 10809}} }, "nbd_server", "Servers[0] is not Host:Port"},
		{"bad failover server", func(p *Plan) { p.NBD.Servers = append(p.NBD.Servers, Server{"10.0.0.2", 70000}) }, "nbd_server", "port must be 1-65535"},
		{"no server", func(p *Plan) { p.NBD.Host = ""; p.NBD.Servers = nil }, "nbd_server", "no NBD server"},
		{"DHCP gave no server", func(p *Plan) { p.NBD.Host = ""; p.NBD.Servers = nil; p.NBD.FromDHCP = true }, "nbd_server", "root-path (option 17) named no server"},
		{"export not UTF-8", func(p *Plan) { p.NBD.Export = "\xff" }, "nbd.export", "not valid UTF-8"},
		{"device not NBD", func(p *Plan) { p.NBD.Device = "/dev/sda" }, "cryptdevice", "not an NBD device"},
		{"device partition", func(p *Plan) { p.NBD.Device = "/dev/nbd0p1" }, "cryptdevice", "not an NBD device"},
		{"connections", func(p *Plan) { p.NBD.Connections = 100 }, "nbd.connections", "must be 1-64"},
		{"timeout", func(p *Plan) { p.NBD.Timeout = -time.Second }, "nbd.timeout", "must be 0-24h"},
		{"block size", func(p *Plan) { p.NBD.BlockSize = 3000 }, "nbd.block_size", "must be 512, 1024, 2048 or 4096"},
		{"no network", func(p *Plan) { p.IP = nil }, "ip", "no network configuration"},
		{"bad mode", func(p *Plan) { p.IP[0].Mode = "auto" }, "ip", "is not dhcp, dhcp6, auto6, static or off"},
		{"static without netmask", func(p *Plan) { p.IP[0].Netmask = "" }, "ip", "dotted-quad netmask"},
		{"static without address", func(p *Plan) { p.IP[0].Address = "" }, "ip", "without a client IPv4 address"},
		{"IPv6 gateway", func(p *Plan) { p.IP[0].Gateway = "fd00::1" }, "ip", "not of the client address's IP version"},
		{"bad DNS", func(p *Plan) { p.IP[0].DNS = []string{"dns"} }, "ip", `DNS server "dns"`},
		{"bad interface", func(p *Plan) { p.IP[0].Device = "a/b" }, "ip", "interface name"},
		{"crypt device", func(p *Plan) { p.Crypt.Device = "nbd0" }, "cryptdevice", "neither a /dev/ path"},
		{"crypt name", func(p *Plan) { p.Crypt.Name = "a/b" }, "cryptdevice", "device-mapper name"},
		{"no root", func(p *Plan) { p.Root.Device = "" }, "root", "nothing names the root"},
		{"root elsewhere", func(p *Plan) { p.Root.Device = "/dev/sda1" }, "root", "the root is not on NBD"},
		{"root on another NBD device", func(p *Plan) { p.Root.Device = "/dev/nbd1p1" }, "root", "is not on the attached device /dev/nbd0"},
		{"root mapping not opened", func(p *Plan) { p.Root.Device = "/dev/mapper/other" }, "root", "no cryptdevice= opens mapping other"},
		{"fstype", func(p *Plan) { p.Root.FSType = "ext4 x" }, "root.fstype", "not a file system name"},
		{"init", func(p *Plan) { p.Init = "init" }, "init", "absolute path"},
		{"rootdelay", func(p *Plan) { p.RootDelay = 48 * time.Hour }, "rootdelay", "must be 0-24h"},
		{"break", func(p *Plan) { p.Break = "pre-mount" }, "break", "unknown break point"},
		{"client id", func(p *Plan) { p.NBD.ClientID = "a/b" }, "nbd.client_id", "contains '/'"},
		{"overlay kind", func(p *Plan) { p.Overlay = &Overlay{Kind: "zram"} }, "overlay", "unknown overlay kind"},
		{"overlay size", func(p *Plan) { p.Overlay = &Overlay{Kind: OverlayTmpfs, Size: "x"} }, "overlay", "not a number"},
		{"overlay device", func(p *Plan) { p.Overlay = &Overlay{Kind: OverlayDevice, Device: "vda"} }, "overlay", "neither a /dev/ path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(cmdline)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Validate(); err != nil {
				t.Fatalf("Validate() on the unchanged plan: %v", err)
			}
			tt.change(p)
			err = p.Validate()
			var pe *ParamError
			if !errors.As(err, &pe) {
				t.Fatalf("Validate() = %v, want a *ParamError", err)
			}
			if pe.Param != tt.param || !strings.Contains(pe.Reason, tt.reason) {
				t.Errorf("Validate() = %v; want parameter %s and a reason containing %q", err, tt.param, tt.reason)
			}
		})
	}
}

func TestValidateZeroPlan(t *testing.T) {
	err := (&Plan{}).Validate()
	var pe *ParamError
	if !errors.As(err, &pe) || pe.Param != "nbd_server" || !pe.Missing {
		t.Errorf("Validate() of an empty plan = %v, want a missing nbd_server", err)
	}
}
