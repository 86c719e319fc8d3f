package kernelcfg

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestWriteTableExact(t *testing.T) {
	cfg := mustParse(t, "# Linux/x86 4.9.0 Kernel Configuration\n# CONFIG_BLK_DEV_NBD is not set\n")
	cfg.Source = "old.config"
	r, err := Check(cfg, "", []string{"nbd"}, "none")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := r.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := `HOOK  OPTION          NEEDED FOR                                                      STATE
nbd   BLK_DEV_NBD     /dev/nbdN, the NBD block device                                 MISSING
nbd   kernel >= 4.12  NBD netlink: the keeper's reconnect (older: ioctl attach only)  too old (4.9.0) (optional)
nbd   kernel >= 5.14  the export's name in /sys/block/nbdN/backend                    too old (4.9.0) (optional)

notes:
  - no modules dir: options set to m are assumed to have their module file.

kernel 4.9.0; config old.config; modules -; hooks nbd; compression none
optional, missing:
  - nbd: kernel >= 4.12, for NBD netlink: the keeper's reconnect (older: ioctl attach only): kernel 4.9.0 is older than 4.12
  - nbd: kernel >= 5.14, for the export's name in /sys/block/nbdN/backend: kernel 4.9.0 is older than 5.14
MISSING: this kernel lacks 1 thing(s) these hooks need:
  - nbd: BLK_DEV_NBD, for /dev/nbdN, the NBD block device: not set
`
	if diff := cmp.Diff(want, b.String()); diff != "" {
		t.Errorf("WriteTable (-want +got):\n%s", diff)
	}
}

func TestWriteTable(t *testing.T) {
	base := readFile(t, synthConfig)
	for _, tc := range []struct {
		name     string
		set      map[string]string
		noConfig bool
		hooks    []string
		want     []string
	}{
		{
			name: "all there",
			want: []string{"nbd          BLK_DEV_NBD ", "module (kernel/drivers/block/nbd.ko)\n",
				"module (kernel/drivers/md/dm-mod.ko.xz)\n", "OK: the kernel has all 21 things these hooks need.\n",
				"  - encrypt: CRYPTO_ESSIV, for aes-cbc-essiv:sha256 volumes (kernels from 5.4): not set\n"},
		},
		{
			name: "a module file missing, and no NIC",
			set:  map[string]string{"CRYPTO_XTS": "", "CRYPTO_AES": "n", "CRYPTO_AES_NI_INTEL": "m", "VIRTIO_NET": "n", "E1000": "n"},
			want: []string{
				"CRYPTO_AES|CRYPTO_AES_NI_INTEL|CRYPTO_AES_TI  ", "module missing from " + synthModules + "\n",
				"VIRTIO_NET|E1000|E1000E|… (15 options)  ",
				"MISSING: this kernel lacks 3 thing(s) these hooks need:\n",
				"  - net: one of VIRTIO_NET, E1000, E1000E, VMXNET3, HYPERV_NET, IGB, IGC, IXGBE, R8169, 8139CP, 8139TOO, TIGON3, BNX2, ATL1C, ALX, for a network card driver (any one): not set\n",
				"  - encrypt: one of CRYPTO_AES, CRYPTO_AES_NI_INTEL, CRYPTO_AES_TI, for the AES cipher (LUKS default): set to m, but no aesni_intel module file in " + synthModules + "\n",
				"  - encrypt: CRYPTO_XTS, for the xts mode of aes-xts-plain64 (LUKS default): not set\n",
			},
		},
		{
			name:     "the modules dir alone",
			noConfig: true,
			hooks:    []string{"base", "nbd"},
			want: []string{"base  DEVTMPFS        /dev", "unknown\n", "unknown (the inputs cannot tell): BLK_DEV_INITRD RD_ZSTD BINFMT_ELF FUTEX EPOLL DEVTMPFS PROC_FS SYSFS TMPFS\n",
				"OK: nothing these hooks need is missing (10 checked, 9 of them unknown).\n", "config -; modules " + synthModules},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *Config
			if !tc.noConfig {
				cfg = mustParse(t, edit(t, base, tc.set))
			}
			r, err := Check(cfg, synthModules, tc.hooks, "")
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := r.WriteTable(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

func TestWriteJSON(t *testing.T) {
	cfg := mustParse(t, edit(t, readFile(t, synthConfig), map[string]string{"DM_CRYPT": ""}))
	r, err := Check(cfg, synthModules, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := r.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		OK            bool      `json:"ok"`
		KernelVersion string    `json:"kernel_version"`
		Hooks         []string  `json:"hooks"`
		Findings      []Finding `json:"findings"`
		Missing       []Finding `json:"missing"`
	}
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatalf("%v:\n%s", err, b.String())
	}
	if got.OK || got.KernelVersion != "6.1.0" || len(got.Findings) != len(r.Findings) {
		t.Errorf("ok %v, kernel_version %q, %d findings; want false, 6.1.0, %d", got.OK, got.KernelVersion, len(got.Findings), len(r.Findings))
	}
	if diff := cmp.Diff(r.Missing(), got.Missing); diff != "" {
		t.Errorf("missing (-Missing() +json):\n%s", diff)
	}
	if len(got.Missing) != 1 || got.Missing[0].Option != "DM_CRYPT" || got.Missing[0].State != Missing || got.Missing[0].Module != "dm_crypt" {
		t.Errorf("missing = %+v, want DM_CRYPT (dm_crypt) missing", got.Missing)
	}

	// A kernel with everything: "missing" is an empty list, not null.
	r, err = Check(mustParse(t, readFile(t, synthConfig)), synthModules, []string{"nbd"}, "")
	if err != nil {
		t.Fatal(err)
	}
	b.Reset()
	r.WriteJSON(&b)
	if !strings.Contains(b.String(), `"ok": true`) || !strings.Contains(b.String(), `"missing": []`) {
		t.Errorf("JSON of a passing check:\n%s", b.String())
	}
}
