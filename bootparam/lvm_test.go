package bootparam

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const srv = "nbd_server=10.0.0.1 "

func TestParseLVM(t *testing.T) {
	tests := []struct {
		name, cmdline string
		root          string
		want          *LVM
	}{
		{"root /dev/VG/LV", srv + "root=/dev/vg0/root", "/dev/vg0/root",
			&LVM{LVs: []string{"vg0/root"}, VGs: []string{"vg0"}}},
		{"a volume group named nbd-something", srv + "root=/dev/nbd-vg/root", "/dev/nbd-vg/root",
			&LVM{LVs: []string{"nbd-vg/root"}, VGs: []string{"nbd-vg"}}},
		{"root /dev/mapper/VG-LV", srv + "root=/dev/mapper/my--vg-root", "/dev/mapper/my--vg-root",
			&LVM{LVs: []string{"my-vg/root"}, VGs: []string{"my-vg"}}},
		{"LVM inside LUKS", srv + "cryptdevice=/dev/nbd0:nbdcrypt root=/dev/vg0/root", "/dev/vg0/root",
			&LVM{LVs: []string{"vg0/root"}, VGs: []string{"vg0"}}},
		{"a LUKS mapping whose name has one dash is the LUKS root", srv + "cryptdevice=/dev/nbd0:nbd-crypt root=/dev/mapper/nbd-crypt",
			"/dev/mapper/nbd-crypt", nil},
		{"dracut narrows to rd.lvm.lv", srv + "root=/dev/vg0/root rd.lvm.lv=vg0/root rd.lvm.lv=vg0/swap", "/dev/vg0/root",
			&LVM{LVs: []string{"vg0/root", "vg0/swap"}}},
		{"rd.lvm.vg", srv + "root=/dev/nbd0 rd.lvm.vg=data rd.lvm.vg=data", "/dev/nbd0",
			&LVM{VGs: []string{"data"}}},
		{"resume on an LV", srv + "root=/dev/vg0/root resume=/dev/vg0/swap", "/dev/vg0/root",
			&LVM{LVs: []string{"vg0/root", "vg0/swap"}, VGs: []string{"vg0"}}},
		{"resume elsewhere is the kernel's", srv + "root=/dev/nbd0 resume=UUID=1234", "/dev/nbd0", nil},
		{"rd.lvm=0", srv + "root=/dev/nbd0 rd.lvm=0 rd.lvm.vg=x", "/dev/nbd0", &LVM{Off: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			if p.Root.Device != tt.root {
				t.Errorf("root %q, want %q", p.Root.Device, tt.root)
			}
			if diff := cmp.Diff(tt.want, p.LVM); diff != "" {
				t.Errorf("LVM (-want +got):\n%s", diff)
			}
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
}

func TestParseLVMErrors(t *testing.T) {
	tests := []struct {
		name, cmdline, param, reason string
	}{
		{"rd.lvm=0 with an LVM root", srv + "root=/dev/vg0/root rd.lvm=0", "rd.lvm", "turns LVM off"},
		{"bad rd.lvm.lv", srv + "root=/dev/nbd0 rd.lvm.lv=vg0", "rd.lvm.lv", "not a logical volume"},
		{"bad rd.lvm.vg", srv + "root=/dev/nbd0 rd.lvm.vg=a/b", "rd.lvm.vg", "not a volume group name"},
		{"a mapper name neither LUKS nor LVM", srv + "root=/dev/mapper/root", "root", "needs cryptdevice="},
		{"a disk path", srv + "root=/dev/disk/by-label/x", "root", "the root is not on NBD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.cmdline)
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param != tt.param || !strings.Contains(pe.Reason, tt.reason) {
				t.Fatalf("err = %v, want a ParamError for %s with %q", err, tt.param, tt.reason)
			}
		})
	}
}

func TestValidateLVMRoot(t *testing.T) {
	p, err := Parse(srv + "root=/dev/vg0/root")
	if err != nil {
		t.Fatal(err)
	}
	p.LVM = nil
	var pe *ParamError
	if err := p.Validate(); !errors.As(err, &pe) || !strings.Contains(pe.Reason, "logical volume the plan does not activate") {
		t.Errorf("a plan that does not activate its LVM root: %v", err)
	}
}

func TestParseSystemdLUKS(t *testing.T) {
	const u = "0b1d0f70-8f2c-4b4c-9d6e-3f1c2a4b5c6d"
	tests := []struct {
		name, cmdline string
		want          *Crypt
		note          string
	}{
		{"uuid", srv + "rd.luks.uuid=" + u + " root=/dev/mapper/luks-" + u,
			&Crypt{Device: "UUID=" + u, Name: "luks-" + u}, ""},
		{"uuid with the luks- prefix, upper case", srv + "luks.uuid=luks-" + strings.ToUpper(u) + " root=/dev/mapper/luks-" + u,
			&Crypt{Device: "UUID=" + u, Name: "luks-" + u}, ""},
		{"name, options and a key in the image", srv + "rd.luks.name=" + u + "=cryptroot rd.luks.options=discard,no-read-workqueue,tries=3 rd.luks.key=/etc/keys/root.key root=/dev/mapper/cryptroot",
			&Crypt{Device: "UUID=" + u, Name: "cryptroot", Options: []string{"allow-discards", "no-read-workqueue"}, Key: &CryptKey{Kind: "rootfs", Path: "/etc/keys/root.key"}},
			`option "tries=3" is not one nbdroot applies`},
		{"per-volume options win, key on a device", srv + "rd.luks.uuid=" + u + " rd.luks.options=discard rd.luks.options=" + u + "=no-write-workqueue rd.luks.key=" + u + "=/root.key:LABEL=KEYS root=/dev/mapper/luks-" + u,
			&Crypt{Device: "UUID=" + u, Name: "luks-" + u, Options: []string{"no-write-workqueue"}, Key: &CryptKey{Kind: "file", Device: "LABEL=KEYS", Path: "/root.key"}}, ""},
		{"LVM inside", srv + "rd.luks.uuid=" + u + " rd.lvm.lv=vg0/root root=/dev/vg0/root",
			&Crypt{Device: "UUID=" + u, Name: "luks-" + u}, ""},
		{"cryptdevice wins", srv + "cryptdevice=/dev/nbd0:c rd.luks.uuid=" + u + " root=/dev/mapper/c",
			&Crypt{Device: "/dev/nbd0", Name: "c"}, "rd.luks.*/luks.* are ignored"},
		{"rd.luks=0", srv + "rd.luks=0 rd.luks.uuid=" + u + " root=/dev/nbd0", nil, "turns the rd.luks.*/luks.* parameters off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, p.Crypt); diff != "" {
				t.Errorf("Crypt (-want +got):\n%s", diff)
			}
			if tt.note != "" && !strings.Contains(strings.Join(p.Notes, "\n"), tt.note) {
				t.Errorf("notes %q lack %q", p.Notes, tt.note)
			}
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	for _, tt := range []struct{ name, cmdline, param, reason string }{
		{"two volumes", srv + "rd.luks.uuid=" + u + " rd.luks.uuid=11111111-2222-3333-4444-555555555555 root=/dev/nbd0", "rd.luks.uuid", "second LUKS volume"},
		{"not a uuid", srv + "rd.luks.uuid=root root=/dev/nbd0", "rd.luks.uuid", "not a LUKS UUID"},
		{"bad name", srv + "rd.luks.name=root root=/dev/nbd0", "rd.luks.name", "not UUID=NAME"},
		{"options without a volume", srv + "rd.luks.options=discard root=/dev/nbd0", "rd.luks.uuid", "names the volume"},
		{"relative key", srv + "rd.luks.uuid=" + u + " rd.luks.key=key root=/dev/nbd0", "rd.luks.key", "absolute path"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(tt.cmdline)
			var pe *ParamError
			if !errors.As(err, &pe) || pe.Param != tt.param || !strings.Contains(pe.Reason, tt.reason) {
				t.Fatalf("err = %v, want a ParamError for %s with %q", err, tt.param, tt.reason)
			}
		})
	}
}
