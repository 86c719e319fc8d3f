package kernelcfg

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The tests in this file run against the real test kernel (Debian's linux-image-amd64, as
// scripts/deps.sh unpacks it): its .config, and its modules dir with modules.builtin but no
// modules.dep.

func allHooks() []string {
	var out []string
	for _, h := range Hooks() {
		out = append(out, h.Name)
	}
	return out
}

func TestDebianKernelPasses(t *testing.T) {
	config, modules := testKernel(t)
	cfg, err := Load(config)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Compressions {
		t.Run("default hooks, "+c.Name, func(t *testing.T) {
			r, err := Check(cfg, modules, nil, c.Name)
			if err != nil {
				t.Fatal(err)
			}
			if m := r.Missing(); len(m) > 0 {
				t.Errorf("Debian's kernel lacks %q", names(m))
			}
			if w := r.Warnings(); len(w) > 0 {
				t.Errorf("warnings on Debian's kernel: %q", names(w))
			}
			if f := byOption(r)["BLK_DEV_NBD"]; f.State != Module || f.File != "kernel/drivers/block/nbd.ko" {
				t.Errorf("BLK_DEV_NBD: %q %q, want a module in kernel/drivers/block/nbd.ko", f.State, f.File)
			}
		})
	}
	t.Run("every hook", func(t *testing.T) {
		r, err := Check(cfg, modules, allHooks(), "")
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() || len(r.Warnings()) > 0 {
			t.Errorf("missing %q, warnings %q", names(r.Missing()), names(r.Warnings()))
		}
	})
	t.Run("the modules dir alone", func(t *testing.T) {
		r, err := Check(nil, modules, allHooks(), "")
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() {
			t.Errorf("missing %q", names(r.Missing()))
		}
		for _, f := range r.Warnings() {
			if f.State != Unknown || f.Module != "" {
				t.Errorf("%s: %q; only bool options may be left unknown", f.Name(), f.State)
			}
		}
		// CRYPTO_AES=y: the modules dir shows it through modules.builtin.
		if f := byOption(r)["CRYPTO_AES"]; f.State != BuiltIn {
			t.Errorf("CRYPTO_AES: %q, want built-in from modules.builtin", f.State)
		}
	})
}

// TestDebianTableNames checks the table against a real kernel: every option is a symbol
// Debian's config mentions, every =m option's module file exists under the name the table
// gives, every tristate built in is in modules.builtin under that name, and no bool option
// (no module in the table) is =m there.
func TestDebianTableNames(t *testing.T) {
	config, modules := testKernel(t)
	cfg, err := Load(config)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := OpenModulesDir(modules)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range Hooks() {
		for _, req := range h.Requirements {
			for _, o := range req.AnyOf {
				if _, ok := cfg.Value(o.Name); !ok {
					t.Errorf("%s: CONFIG_%s is not a symbol of Debian's kernel", h.Name, o.Name)
					continue
				}
				switch v := cfg.Tristate(o.Name); {
				case o.Module == "" && v == 'm':
					t.Errorf("%s: CONFIG_%s=m but the table gives it no module", h.Name, o.Name)
				case o.Module != "" && v == 'm':
					if _, ok := mods.File(o.Module); !ok {
						t.Errorf("%s: CONFIG_%s=m but there is no module %q", h.Name, o.Name, o.Module)
					}
				case o.Module != "" && v == 'y' && !mods.Builtin(o.Module):
					t.Errorf("%s: CONFIG_%s=y but modules.builtin has no %q", h.Name, o.Name, o.Module)
				}
			}
		}
	}
}

// TestDebianRemoved takes options out of Debian's config and expects the check to name them.
func TestDebianRemoved(t *testing.T) {
	config, modules := testKernel(t)
	text := readFile(t, config)
	for _, name := range []string{"BLK_DEV_NBD", "DM_CRYPT", "BLK_DEV_DM", "CRYPTO_XTS", "EXT4_FS", "RD_ZSTD", "DEVTMPFS"} {
		for _, how := range []string{"", "n"} {
			t.Run(name+"="+how, func(t *testing.T) {
				edited := edit(t, text, map[string]string{name: how})
				if edited == text {
					t.Fatalf("CONFIG_%s is not in Debian's config", name)
				}
				r, err := Check(mustParse(t, edited), modules, nil, "")
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff([]string{name}, names(r.Missing())); diff != "" {
					t.Errorf("Missing (-want +got):\n%s", diff)
				}
			})
		}
	}
}

// TestDebianModuleFileMissing checks Debian's config against a copy of its modules dir (made
// of symlinks) that lacks some module files.
func TestDebianModuleFileMissing(t *testing.T) {
	config, modules := testKernel(t)
	cfg, err := Load(config)
	if err != nil {
		t.Fatal(err)
	}
	drop := map[string]string{"nbd": "BLK_DEV_NBD", "dm_crypt": "DM_CRYPT", "ecb": "CRYPTO_ECB"}
	// The mirror holds the modules of the table only (4000 symlinks take seconds on overlayfs).
	wanted := map[string]bool{}
	for _, h := range Hooks() {
		for _, req := range h.Requirements {
			for _, o := range req.AnyOf {
				wanted[ModuleName(o.Module)] = drop[ModuleName(o.Module)] == ""
			}
		}
	}
	dir := filepath.Join(t.TempDir(), "6.1.0-test")
	linkTree(t, modules, dir, func(rel string) bool { return !isModuleFile(rel) || wanted[ModuleName(rel)] })
	r, err := Check(cfg, dir, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	for module, option := range drop {
		f := byOption(r)[option]
		if f.State != ModuleMissing || !strings.Contains(f.Detail, module) {
			t.Errorf("%s: %q (%s), want module-missing naming %s", option, f.State, f.Detail, module)
		}
	}
	if diff := cmp.Diff([]string{"BLK_DEV_NBD", "DM_CRYPT", "CRYPTO_ECB"}, names(r.Missing())); diff != "" {
		t.Errorf("Missing (-want +got):\n%s", diff)
	}
}

// linkTree mirrors src into dst: directories are created, and each file kept by keep (given
// its path relative to src) becomes a symlink to the original.
func linkTree(t *testing.T, src, dst string, keep func(rel string) bool) {
	t.Helper()
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(target, 0o755)
		case !keep(rel):
			return nil
		}
		return os.Symlink(p, target)
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "modules.builtin")); err != nil {
		t.Fatalf("the mirror lacks modules.builtin: %v", err)
	}
}
