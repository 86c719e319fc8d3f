package kernelcfg

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCheckSynthetic(t *testing.T) {
	base := readFile(t, synthConfig)
	for _, tc := range []struct {
		name        string
		set         map[string]string // edits to the synthetic config
		header      string            // a line put before the synthetic config
		noConfig    bool              // check the modules dir alone
		modules     string            // "" = no modules dir
		hooks       []string
		compression string
		// want holds the states of some findings, by Name().
		want        map[string]State
		wantFiles   map[string]string // Name() → module file found
		wantMissing []string          // Names of Missing(), in report order
		wantWarn    []string          // Names of Warnings()
		absent      []string          // Names that must have no finding
	}{
		{
			name:    "the synthetic kernel has what the default hooks need",
			modules: synthModules,
			want: map[string]State{
				"BLK_DEV_INITRD": BuiltIn, "RD_ZSTD": BuiltIn, "MODULES": BuiltIn,
				"BLK_DEV_NBD": Module, "BLK_DEV_DM": Module, "DM_CRYPT": Module, "CRYPTO_XTS": Module,
				"CRYPTO_AES": BuiltIn, "CRYPTO_CRC32C_INTEL": Module, "VIRTIO_NET": Module,
				"CRYPTO_ESSIV": Missing, "kernel >= 4.12": VersionOK, "kernel >= 5.14": VersionOK,
			},
			wantFiles: map[string]string{
				"BLK_DEV_NBD":         "kernel/drivers/block/nbd.ko",
				"BLK_DEV_DM":          "kernel/drivers/md/dm-mod.ko.xz",
				"DM_CRYPT":            "kernel/drivers/md/dm-crypt.ko.zst",
				"CRYPTO_XTS":          "kernel/crypto/xts.ko.gz",
				"CRYPTO_CRC32C_INTEL": "kernel/arch/x86/crypto/crc32c-intel.ko",
			},
			wantWarn: []string{"CRYPTO_ESSIV"},
			absent:   []string{"RD_GZIP", "RD_XZ", "RD_LZ4"},
		},
		{
			name:        "BLK_DEV_NBD removed",
			set:         map[string]string{"BLK_DEV_NBD": ""},
			modules:     synthModules,
			want:        map[string]State{"BLK_DEV_NBD": Missing},
			wantMissing: []string{"BLK_DEV_NBD"},
			wantWarn:    []string{"CRYPTO_ESSIV"},
		},
		{
			name:        "DM_CRYPT not set",
			set:         map[string]string{"DM_CRYPT": "n"},
			modules:     synthModules,
			want:        map[string]State{"DM_CRYPT": Missing},
			wantMissing: []string{"DM_CRYPT"},
			wantWarn:    []string{"CRYPTO_ESSIV"},
		},
		{
			name:        "a module whose file is not in the modules dir",
			set:         map[string]string{"CRYPTO_SHA256": "m", "CRYPTO_AES": "n", "CRYPTO_AES_NI_INTEL": "m"},
			modules:     synthModules,
			want:        map[string]State{"CRYPTO_AES|CRYPTO_AES_NI_INTEL|CRYPTO_AES_TI": ModuleMissing, "CRYPTO_SHA256|CRYPTO_SHA256_SSSE3": ModuleMissing},
			wantMissing: []string{"CRYPTO_AES|CRYPTO_AES_NI_INTEL|CRYPTO_AES_TI"},
			wantWarn:    []string{"CRYPTO_ESSIV", "CRYPTO_SHA256|CRYPTO_SHA256_SSSE3"},
		},
		{
			name:     "an alternative built in beats one that is a module",
			set:      map[string]string{"CRYPTO_CRC32C": "y"},
			modules:  synthModules,
			want:     map[string]State{"CRYPTO_CRC32C": BuiltIn},
			wantWarn: []string{"CRYPTO_ESSIV"},
		},
		{
			name:     "no modules dir: =m options are trusted",
			set:      map[string]string{"CRYPTO_ESSIV": "m"},
			want:     map[string]State{"BLK_DEV_NBD": Module, "CRYPTO_ESSIV": Module},
			wantWarn: nil,
		},
		{
			name:        "a value that is neither y nor m",
			set:         map[string]string{"BLK_DEV_INITRD": `"y"`},
			want:        map[string]State{"BLK_DEV_INITRD": Missing},
			wantMissing: []string{"BLK_DEV_INITRD"},
			wantWarn:    []string{"CRYPTO_ESSIV"},
		},
		{
			name:        "modules needed but CONFIG_MODULES off",
			set:         map[string]string{"MODULES": "n"},
			modules:     synthModules,
			want:        map[string]State{"MODULES": Missing},
			wantMissing: []string{"MODULES"},
			wantWarn:    []string{"CRYPTO_ESSIV"},
		},
		{
			name:   "everything built in: CONFIG_MODULES not needed",
			set:    map[string]string{"MODULES": "n", "BLK_DEV_NBD": "y", "VIRTIO_PCI": "y"},
			hooks:  []string{"base", "udev", "nbd"},
			want:   map[string]State{"BLK_DEV_NBD": BuiltIn},
			absent: []string{"MODULES", "DM_CRYPT"},
		},
		{
			name:        "xz compression",
			compression: "xz",
			hooks:       []string{"base"},
			want:        map[string]State{"RD_XZ": Missing},
			wantMissing: []string{"RD_XZ"},
			absent:      []string{"RD_ZSTD"},
		},
		{
			name:        "lz4 compression: a symbol the config does not mention",
			compression: "lz4",
			hooks:       []string{"base"},
			wantMissing: []string{"RD_LZ4"},
		},
		{
			name:        "gzip compression",
			compression: "gzip",
			hooks:       []string{"base"},
			want:        map[string]State{"RD_GZIP": BuiltIn},
		},
		{
			name:        "no compression needs no RD_ option",
			set:         map[string]string{"RD_ZSTD": "n"},
			compression: "none",
			hooks:       []string{"base"},
			absent:      []string{"RD_ZSTD", "RD_GZIP", "RD_XZ", "RD_LZ4"},
		},
		{
			name:        "a NIC other than the first alternative",
			set:         map[string]string{"VIRTIO_NET": "n", "E1000": "m"},
			modules:     synthModules,
			hooks:       []string{"net"},
			want:        map[string]State{"E1000": Module},
			wantFiles:   map[string]string{"E1000": "updates/e1000.ko"},
			wantMissing: nil,
		},
		{
			name:        "no NIC driver at all",
			set:         map[string]string{"VIRTIO_NET": "n", "E1000": ""},
			hooks:       []string{"net"},
			wantMissing: []string{"VIRTIO_NET|E1000|E1000E|VMXNET3|HYPERV_NET|IGB|IGC|IXGBE|R8169|8139CP|8139TOO|TIGON3|BNX2|ATL1C|ALX"},
		},
		{
			name:     "a kernel too old for the keeper: optional, so a warning",
			header:   "# Linux/x86 4.9.0 Kernel Configuration", // the first header line counts
			hooks:    []string{"nbd"},
			want:     map[string]State{"kernel >= 4.12": TooOld, "kernel >= 5.14": TooOld},
			wantWarn: []string{"kernel >= 4.12", "kernel >= 5.14"},
		},
		{
			name:        "the modules dir alone",
			noConfig:    true,
			modules:     synthModules,
			hooks:       []string{"base", "udev", "net", "nbd", "filesystems"},
			want:        map[string]State{"BLK_DEV_NBD": Module, "PACKET": BuiltIn, "DEVTMPFS": Unknown, "MODULES": BuiltIn, "kernel >= 5.14": VersionOK},
			wantWarn:    []string{"BLK_DEV_INITRD", "RD_ZSTD", "BINFMT_ELF", "FUTEX", "EPOLL", "DEVTMPFS", "PROC_FS", "SYSFS", "TMPFS", "INET", "IPV6"},
			wantMissing: nil,
		},
		{
			name:        "the modules dir alone, a module absent from it and from modules.builtin",
			noConfig:    true,
			modules:     synthModules,
			hooks:       []string{"encrypt"},
			want:        map[string]State{"CRYPTO_AES": BuiltIn, "CRYPTO_CBC": BuiltIn, "CRYPTO_ESSIV": Missing},
			wantWarn:    []string{"CRYPTO_ESSIV"},
			wantMissing: nil,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg *Config
			if !tc.noConfig {
				cfg = mustParse(t, tc.header+"\n"+edit(t, base, tc.set))
			}
			r, err := Check(cfg, tc.modules, tc.hooks, tc.compression)
			if err != nil {
				t.Fatal(err)
			}
			got := byOption(r)
			for name, want := range tc.want {
				if f, ok := got[name]; !ok || f.State != want {
					t.Errorf("%s: state %q (found: %v), want %q", name, f.State, ok, want)
				}
			}
			for name, want := range tc.wantFiles {
				if f := got[name]; f.File != want {
					t.Errorf("%s: file %q, want %q", name, f.File, want)
				}
			}
			for _, name := range tc.absent {
				if _, ok := got[name]; ok {
					t.Errorf("%s: a finding, want none", name)
				}
			}
			if diff := cmp.Diff(tc.wantMissing, names(r.Missing())); diff != "" {
				t.Errorf("Missing (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantWarn, names(r.Warnings())); diff != "" {
				t.Errorf("Warnings (-want +got):\n%s", diff)
			}
			if r.OK() != (len(tc.wantMissing) == 0) {
				t.Errorf("OK() = %v with %d missing", r.OK(), len(tc.wantMissing))
			}
		})
	}
}

func TestCheckReportFields(t *testing.T) {
	cfg, err := Load(synthConfig)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Check(cfg, synthModules, []string{"nbd", "consolefont", "base", "nbd"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"base", "nbd", "consolefont"}, r.Hooks); diff != "" {
		t.Errorf("Hooks: want table order, each once (-want +got):\n%s", diff)
	}
	if r.Config != synthConfig || r.ModulesDir != synthModules || r.KernelVersion != "6.1.0" || r.Compression != "zstd" {
		t.Errorf("report = config %q modules %q version %q compression %q", r.Config, r.ModulesDir, r.KernelVersion, r.Compression)
	}
	font := Hooks()[slices.IndexFunc(Hooks(), func(h Hook) bool { return h.Name == "consolefont" })]
	if !slices.Contains(r.Notes, font.Notes[0]) {
		t.Errorf("notes %q lack the consolefont note", r.Notes)
	}
	for _, f := range r.Findings {
		if f.Hook != "base" && f.Hook != "nbd" {
			t.Errorf("finding for hook %q, not checked", f.Hook)
		}
	}

	// Without a header, the version comes from the modules dir name.
	r, err = Check(mustParse(t, "CONFIG_BLK_DEV_NBD=m\n"), synthModules, []string{"nbd"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.KernelVersion != "6.1.0-synth" {
		t.Errorf("KernelVersion = %q, want 6.1.0-synth from the dir name", r.KernelVersion)
	}
	r, err = Check(mustParse(t, "CONFIG_BLK_DEV_NBD=m\n"), "", []string{"nbd"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if f := byOption(r)["kernel >= 4.12"]; f.State != Unknown {
		t.Errorf("version requirement without any version: %q, want unknown", f.State)
	}
}

func TestCheckErrors(t *testing.T) {
	cfg := mustParse(t, "CONFIG_A=y\n")
	for _, tc := range []struct {
		name        string
		cfg         *Config
		modules     string
		hooks       []string
		compression string
		wantArg     string // ArgError.Arg, or "" for another error
	}{
		{"an unknown hook", cfg, "", []string{"base", "plymouth"}, "", "hook"},
		{"an unknown compression", cfg, "", nil, "lzma", "compression"},
		{"nothing to check", nil, "", nil, "", ""},
		{"a modules dir that is not one", cfg, t.TempDir(), nil, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.cfg, tc.modules, tc.hooks, tc.compression)
			if err == nil {
				t.Fatal("Check succeeded")
			}
			var ae *ArgError
			if got := errors.As(err, &ae); got != (tc.wantArg != "") || (got && ae.Arg != tc.wantArg) {
				t.Errorf("Check error %v: ArgError %v, want arg %q", err, got, tc.wantArg)
			}
		})
	}
}

func TestMajorMinor(t *testing.T) {
	for _, tc := range []struct {
		in       string
		maj, min int
		ok       bool
	}{
		{"6.1.192", 6, 1, true},
		{"6.1.0-56-amd64", 6, 1, true},
		{"4.12", 4, 12, true},
		{"5.14-rc3", 5, 14, true},
		{"6", 0, 0, false},
		{"current", 0, 0, false},
		{"", 0, 0, false},
	} {
		maj, min, ok := majorMinor(tc.in)
		if maj != tc.maj || min != tc.min || ok != tc.ok {
			t.Errorf("majorMinor(%q) = %d, %d, %v; want %d, %d, %v", tc.in, maj, min, ok, tc.maj, tc.min, tc.ok)
		}
	}
	for _, tc := range []struct {
		version, min string
		want         State
	}{
		{"4.11.0", "4.12", TooOld},
		{"4.12.0", "4.12", VersionOK},
		{"4.9.0", "4.12", TooOld},
		{"5.0", "4.12", VersionOK},
		{"10.0", "5.14", VersionOK},
		{"", "4.12", Unknown},
	} {
		if got, _ := checkVersion(tc.version, tc.min); got != tc.want {
			t.Errorf("checkVersion(%q, %q) = %q, want %q", tc.version, tc.min, got, tc.want)
		}
	}
}

// Without modules.builtin, a module that has no file may still be built in: unknown, not
// missing.
func TestCheckWithoutBuiltinList(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "6.1.0-nolist")
	os.MkdirAll(filepath.Join(dir, "kernel", "drivers", "block"), 0o755)
	os.WriteFile(filepath.Join(dir, "modules.order"), []byte("kernel/drivers/block/nbd.ko\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "kernel", "drivers", "block", "nbd.ko"), nil, 0o644)
	r, err := Check(nil, dir, []string{"nbd", "filesystems"}, "")
	if err != nil {
		t.Fatal(err)
	}
	got := byOption(r)
	if got["BLK_DEV_NBD"].State != Module || got["EXT4_FS"].State != Unknown {
		t.Errorf("BLK_DEV_NBD %q, EXT4_FS %q; want module, unknown", got["BLK_DEV_NBD"].State, got["EXT4_FS"].State)
	}
	if !r.OK() {
		t.Errorf("missing %q", names(r.Missing()))
	}
}

func TestCheckKernel(t *testing.T) {
	// A chroot holding the synthetic kernel: ROOT/lib/modules/VER with no config beside it yet.
	root := t.TempDir()
	mods := filepath.Join(root, "lib", "modules", "6.1.0-synth")
	os.MkdirAll(filepath.Join(root, "boot"), 0o755)
	abs, _ := filepath.Abs(synthModules)
	os.MkdirAll(filepath.Dir(mods), 0o755)
	if err := os.Symlink(abs, mods); err != nil {
		t.Fatal(err)
	}
	r, err := CheckKernel(mods, []string{"base", "nbd"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Config != "" || byOption(r)["DEVTMPFS"].State != Unknown || byOption(r)["BLK_DEV_NBD"].State != Module {
		t.Errorf("without a config: config %q, DEVTMPFS %q, BLK_DEV_NBD %q; want none, unknown, module",
			r.Config, byOption(r)["DEVTMPFS"].State, byOption(r)["BLK_DEV_NBD"].State)
	}

	config := filepath.Join(root, "boot", "config-6.1.0-synth")
	os.WriteFile(config, []byte(edit(t, readFile(t, synthConfig), map[string]string{"BLK_DEV_NBD": "n"})), 0o644)
	r, err = CheckKernel(mods, []string{"base", "nbd"}, "")
	if err != nil {
		t.Fatal(err)
	}
	if r.Config != config || byOption(r)["DEVTMPFS"].State != BuiltIn {
		t.Errorf("config %q, DEVTMPFS %q; want %s, built-in", r.Config, byOption(r)["DEVTMPFS"].State, config)
	}
	if diff := cmp.Diff([]string{"BLK_DEV_NBD"}, names(r.Missing())); diff != "" {
		t.Errorf("Missing (-want +got):\n%s", diff)
	}

	os.WriteFile(config, []byte("garbage\n"), 0o644)
	var pe *ParseError
	if _, err := CheckKernel(mods, nil, ""); !errors.As(err, &pe) {
		t.Errorf("a malformed config beside the modules: %v, want a ParseError", err)
	}
}
