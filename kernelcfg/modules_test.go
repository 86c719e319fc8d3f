package kernelcfg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"dm-crypt":                                  "dm_crypt",
		"dm_crypt":                                  "dm_crypt",
		"kernel/drivers/md/dm-crypt.ko":             "dm_crypt",
		"kernel/drivers/md/dm-crypt.ko.xz":          "dm_crypt",
		"kernel/drivers/md/dm-crypt.ko.zst":         "dm_crypt",
		"kernel/arch/x86/crypto/crc32c-intel.ko.gz": "crc32c_intel",
		"8139too.ko":                                "8139too",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenModulesDir(t *testing.T) {
	link := filepath.Join(t.TempDir(), "modules")
	abs, _ := filepath.Abs(synthModules)
	if err := os.Symlink(abs, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{synthModules, link} {
		t.Run(dir, func(t *testing.T) {
			m, err := OpenModulesDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, name := range []string{"nbd", "dm_mod", "dm-crypt", "xts", "crc32c_intel", "e1000", "README", "ext3"} {
				f, _ := m.File(name)
				got[name] = f
			}
			want := map[string]string{
				"nbd":          "kernel/drivers/block/nbd.ko",
				"dm_mod":       "kernel/drivers/md/dm-mod.ko.xz",
				"dm-crypt":     "kernel/drivers/md/dm-crypt.ko.zst",
				"xts":          "kernel/crypto/xts.ko.gz",
				"crc32c_intel": "kernel/arch/x86/crypto/crc32c-intel.ko",
				"e1000":        "updates/e1000.ko", // outside kernel/, not in modules.order
				"README":       "",                 // README.kobj is no module
				"ext3":         "",                 // an alias, not a file
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("File (-want +got):\n%s", diff)
			}
			if !m.Builtin("af-packet") || m.Builtin("nbd") || !m.HasBuiltinList() {
				t.Errorf("Builtin(af-packet) = %v, Builtin(nbd) = %v, HasBuiltinList = %v; want true, false, true",
					m.Builtin("af-packet"), m.Builtin("nbd"), m.HasBuiltinList())
			}
		})
	}
}

func TestOpenModulesDirErrors(t *testing.T) {
	empty := t.TempDir()
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for name, dir := range map[string]string{
		"absent":          filepath.Join(empty, "absent"),
		"a file":          file,
		"no module in it": empty,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := OpenModulesDir(dir); err == nil || !strings.Contains(err.Error(), dir) {
				t.Errorf("OpenModulesDir(%s) = %v, want an error naming the dir", dir, err)
			}
		})
	}
}
