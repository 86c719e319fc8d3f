package bootparam

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// ignoreExplain drops the explanation fields from comparisons: the tables below check the
// decisions; TestSources checks where they came from.
var ignoreExplain = cmpopts.IgnoreFields(Plan{}, "Sources", "Notes")

// seedNBD is the NBD part of the seed's plan: 192.168.0.1:10809, default export, /dev/nbd0.
func seedNBD() NBD {
	return NBD{Host: "192.168.0.1", Port: 10809, Device: "/dev/nbd0",
		Servers: []Server{{Host: "192.168.0.1", Port: 10809}}}
}

func TestParseSeed(t *testing.T) {
	tests := []struct {
		name    string
		cmdline string
		want    *Plan
	}{
		{
			name:    "plain",
			cmdline: "initrd=kernel26.img ip=::::::dhcp nbd_server=192.168.0.1:10809 root=/dev/nbd0",
			want: &Plan{
				IP:   []IPConfig{{Mode: ModeDHCP, Autoconf: "dhcp"}},
				NBD:  seedNBD(),
				Root: Root{Device: "/dev/nbd0"},
				Init: "/sbin/init",
			},
		},
		{
			name:    "encrypted",
			cmdline: "initrd=kernel26.img ip=::::::dhcp nbd_server=192.168.0.1:10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt",
			want: &Plan{
				IP:    []IPConfig{{Mode: ModeDHCP, Autoconf: "dhcp"}},
				NBD:   seedNBD(),
				Crypt: &Crypt{Device: "/dev/nbd0", Name: "nbdcrypt"},
				Root:  Root{Device: "/dev/mapper/nbdcrypt"},
				Init:  "/sbin/init",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.cmdline)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.cmdline, err)
			}
			if diff := cmp.Diff(tt.want, got, ignoreExplain); diff != "" {
				t.Errorf("Parse(%q) mismatch (-want +got):\n%s", tt.cmdline, diff)
			}
		})
	}
}

func TestParseSeedErrors(t *testing.T) {
	_, err := Parse("ip=::::::dhcp nbd_server=10.0.0.1:99999 root=/dev/nbd0")
	var pe *ParamError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *ParamError", err)
	}
	want := `nbd_server="10.0.0.1:99999": port must be 1-65535 (form: HOST[:PORT], [IPV6]:PORT; several separated by commas)`
	if got := err.Error(); got != want {
		t.Errorf("error:\n got %s\nwant %s", got, want)
	}
}
