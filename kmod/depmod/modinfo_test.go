package depmod

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/kmod/kmodtest"
)

func TestParseModinfo(t *testing.T) {
	tests := []struct {
		name    string
		sec     string
		want    *Modinfo
		wantErr bool
	}{
		{
			name: "ext4",
			sec:  "softdep=pre: crypto-crc32c\x00license=GPL\x00alias=fs-ext4\x00\x00alias=ext3\x00depends=jbd2,mbcache,crc16\x00name=ext4\x00vermagic=6.1.0 SMP\x00",
			want: &Modinfo{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, SoftPre: []string{"crypto-crc32c"},
				Aliases: []string{"fs-ext4", "ext3"}, Vermagic: "6.1.0 SMP"},
		},
		{
			name: "dashes in names become underscores",
			sec:  "depends=dm-mod,dm-bufio\x00name=dm-crypt\x00",
			want: &Modinfo{Name: "dm_crypt", Depends: []string{"dm_mod", "dm_bufio"}},
		},
		{
			name: "empty depends",
			sec:  "depends=\x00name=nbd\x00",
			want: &Modinfo{Name: "nbd"},
		},
		{
			name: "softdep pre and post, several lines",
			sec:  "softdep=pre: a b post: c\x00softdep=post: d\x00name=x\x00",
			want: &Modinfo{Name: "x", SoftPre: []string{"a", "b"}, SoftPost: []string{"c", "d"}},
		},
		{
			name: "softdep words before a list are ignored",
			sec:  "softdep=stray pre: a\x00name=x\x00",
			want: &Modinfo{Name: "x", SoftPre: []string{"a"}},
		},
		{
			name: "firmware and glob alias",
			sec:  "firmware=rtl_nic/rtl8168h-2.fw\x00alias=pci:v000010ECd00008168sv*sd*bc*sc*i*\x00name=r8169",
			want: &Modinfo{Name: "r8169", Firmware: []string{"rtl_nic/rtl8168h-2.fw"}, Aliases: []string{"pci:v000010ECd00008168sv*sd*bc*sc*i*"}},
		},
		{
			name: "value containing '='",
			sec:  "parm=x:a=b\x00name=y\x00",
			want: &Modinfo{Name: "y"},
		},
		{name: "empty section", sec: "", want: &Modinfo{}},
		{name: "entry without =", sec: "name=x\x00garbage\x00", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseModinfo([]byte(tt.sec))
			if tt.wantErr {
				if err == nil {
					t.Fatalf("ParseModinfo = %+v, want an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseModinfo (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadModinfoSyntheticELF(t *testing.T) {
	dir := t.TempDir()
	kv := []string{"alias=crypto-xts", "softdep=pre: ecb", "depends=", "name=xts"}
	want := &Modinfo{Name: "xts", SoftPre: []string{"ecb"}, Aliases: []string{"crypto-xts"}}
	for _, suffix := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		t.Run(suffix, func(t *testing.T) {
			m := kmodtest.Module{Path: "xts" + suffix, Modinfo: kv}
			if err := (kmodtest.Tree{Modules: []kmodtest.Module{m}}).Write(dir); err != nil {
				t.Fatal(err)
			}
			got, err := ReadModinfoFile(filepath.Join(dir, m.Path))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ReadModinfoFile (-want +got):\n%s", diff)
			}
			raw, err := ReadModuleFile(filepath.Join(dir, m.Path))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(raw, []byte("\x7fELF")) {
				t.Errorf("ReadModuleFile did not decompress to ELF: % x", raw[:8])
			}
		})
	}
}

func TestReadModinfoNotAModule(t *testing.T) {
	elfNoModinfo := kmodtest.ELF(map[string][]byte{".text": {0xc3}})
	if _, err := ReadModinfo(bytes.NewReader(elfNoModinfo)); !errors.Is(err, ErrNoModinfo) {
		t.Errorf("ELF without .modinfo: err = %v, want ErrNoModinfo", err)
	}
	if _, err := ReadModinfo(bytes.NewReader([]byte("not an ELF file at all, really"))); err == nil {
		t.Error("garbage: no error")
	}
	if _, err := ReadModuleFile("/x/y.txt"); err == nil {
		t.Error("ReadModuleFile of a non-module name: no error")
	}
}

// testKernelModules returns the cached test kernel's modules directory, or skips (fails
// when NBDROOT_REQUIRE_PEERS=1, as under make test, where the kernel is fetched first).
func testKernelModules(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("NBDROOT_KERNEL")
	if dir == "" {
		home, _ := os.UserHomeDir()
		cache := os.Getenv("NBDROOT_CACHE")
		if cache == "" {
			cache = filepath.Join(home, ".cache", "nbdroot")
		}
		dir = filepath.Join(cache, "kernel", "current")
	}
	mods := filepath.Join(dir, "modules")
	if _, err := os.Stat(filepath.Join(mods, "modules.builtin")); err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("test kernel modules not found at %s (run scripts/deps.sh kernel): %v", mods, err)
		}
		t.Skipf("test kernel modules not found at %s", mods)
	}
	return mods
}

func TestReadModinfoRealKernel(t *testing.T) {
	mods := testKernelModules(t)
	tests := []struct {
		file string
		want func(*Modinfo) string // "" when fine
	}{
		{"kernel/fs/ext4/ext4.ko", func(m *Modinfo) string {
			if m.Name != "ext4" || !cmp.Equal(m.SoftPre, []string{"crypto-crc32c"}) || !strings.Contains(strings.Join(m.Depends, ","), "jbd2") {
				return "want name ext4, softdep pre crypto-crc32c, depends jbd2"
			}
			return ""
		}},
		{"kernel/drivers/md/dm-crypt.ko", func(m *Modinfo) string {
			if m.Name != "dm_crypt" || !cmp.Equal(m.Depends, []string{"dm_mod"}) {
				return "want dm_crypt depending on dm_mod"
			}
			return ""
		}},
		{"kernel/drivers/virtio/virtio_pci.ko", func(m *Modinfo) string {
			for _, a := range m.Aliases {
				if strings.HasPrefix(a, "pci:v00001AF4d*") {
					return ""
				}
			}
			return "want a pci:v00001AF4d* alias"
		}},
		{"kernel/drivers/block/nbd.ko", func(m *Modinfo) string {
			if m.Name != "nbd" || !strings.HasPrefix(m.Vermagic, "6.") {
				return "want nbd with a 6.x vermagic"
			}
			return ""
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			mi, err := ReadModinfoFile(filepath.Join(mods, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.want(mi); msg != "" {
				t.Errorf("%+v: %s", mi, msg)
			}
		})
	}
}

// FuzzParseModinfo feeds arbitrary section contents: the parser must not panic, and what it
// accepts must have normalised names.
func FuzzParseModinfo(f *testing.F) {
	f.Add([]byte("softdep=pre: crypto-crc32c\x00depends=jbd2,mbcache\x00name=ext4\x00"))
	f.Add([]byte("alias=pci:v00001AF4d*sv*sd*bc*sc*i*\x00\x00\x00name=virtio-pci"))
	f.Add([]byte("softdep=post: a pre: b c post:\x00"))
	f.Add([]byte("="))
	f.Fuzz(func(t *testing.T, sec []byte) {
		mi, err := ParseModinfo(sec)
		if err != nil {
			return
		}
		for _, d := range append([]string{mi.Name}, mi.Depends...) {
			if strings.Contains(d, "-") {
				t.Errorf("name %q not normalised", d)
			}
		}
	})
}

// FuzzReadModinfo feeds arbitrary bytes as a module file: debug/elf and the parser must
// return an error, not panic, on a corrupt or hostile module.
func FuzzReadModinfo(f *testing.F) {
	f.Add(kmodtest.ELF(map[string][]byte{".modinfo": kmodtest.ModinfoSection([]string{"name=x", "depends=y"})}))
	f.Add(kmodtest.ELF(map[string][]byte{".text": {0xc3}}))
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	f.Fuzz(func(t *testing.T, data []byte) {
		ReadModinfo(bytes.NewReader(data))
	})
}
