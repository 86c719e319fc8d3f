package main

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	synthConfig  = "../../kernelcfg/testdata/synthetic.config"
	synthModules = "../../kernelcfg/testdata/modules/6.1.0-synth"
)

// runK runs "nbdroot kernelcfg ARGS…" and returns its exit status, stdout and stderr.
func runK(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	st := runKernelcfg(args, &out, &errb)
	return st, out.String(), errb.String()
}

// debianKernel returns the test kernel's config and modules dir, skipping (or failing under
// NBDROOT_REQUIRE_PEERS=1) when scripts/deps.sh has not fetched it.
func debianKernel(t *testing.T) (config, modules string) {
	t.Helper()
	dir := os.Getenv("NBDROOT_KERNEL")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "nbdroot", "kernel", "current")
	}
	config, modules = filepath.Join(dir, "config"), filepath.Join(dir, "modules")
	if _, err := os.Stat(config); err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("test kernel: %v (run scripts/deps.sh kernel)", err)
		}
		t.Skipf("no test kernel (%v)", err)
	}
	return config, modules
}

// without writes a copy of the config at src without the line of symbol name.
func without(t *testing.T, src, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^CONFIG_` + name + `=.*\n`)
	if !re.Match(b) {
		t.Fatalf("%s does not set CONFIG_%s", src, name)
	}
	dst := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(dst, re.ReplaceAll(b, nil), 0o644); err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestKernelcfgDebian(t *testing.T) {
	config, modules := debianKernel(t)
	t.Run("passes", func(t *testing.T) {
		st, out, errs := runK("check", "--config", config, "--modules", modules)
		if st != 0 || !strings.Contains(out, "OK: the kernel has all") {
			t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", st, out, errs)
		}
	})
	t.Run("the config found beside --modules", func(t *testing.T) {
		st, out, errs := runK("check", "--modules", modules)
		if st != 0 || !strings.Contains(out, "config-") {
			t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s", st, out, errs)
		}
	})
	for _, name := range []string{"BLK_DEV_NBD", "DM_CRYPT"} {
		t.Run(name+" removed", func(t *testing.T) {
			st, out, errs := runK("check", "--config", without(t, config, name), "--modules", modules)
			if st != 1 {
				t.Errorf("exit %d, want 1; stderr:\n%s", st, errs)
			}
			if !strings.Contains(out, "MISSING: this kernel lacks 1 thing(s)") || !regexp.MustCompile(`(?m)^  - \w+: `+name+`, `).MatchString(out) {
				t.Errorf("output does not name %s as missing:\n%s", name, out)
			}
		})
	}
	t.Run("BLK_DEV_NBD removed, JSON", func(t *testing.T) {
		st, out, _ := runK("check", "--json", "--config", without(t, config, "BLK_DEV_NBD"), "--modules", modules)
		var r struct {
			OK      bool `json:"ok"`
			Missing []struct {
				Option string `json:"option"`
				State  string `json:"state"`
			} `json:"missing"`
		}
		if err := json.Unmarshal([]byte(out), &r); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		if st != 1 || r.OK || len(r.Missing) != 1 || r.Missing[0].Option != "BLK_DEV_NBD" || r.Missing[0].State != "missing" {
			t.Errorf("exit %d, %+v; want 1 and BLK_DEV_NBD missing", st, r)
		}
	})
}

func TestKernelcfgCheck(t *testing.T) {
	gz := filepath.Join(t.TempDir(), "config.gz")
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	b, _ := os.ReadFile(synthConfig)
	zw.Write(b)
	zw.Close()
	os.WriteFile(gz, buf.Bytes(), 0o644)
	noNBD := without(t, synthConfig, "BLK_DEV_NBD")

	for _, tc := range []struct {
		name       string
		args       []string
		wantStatus int
		wantOut    []string
		wantErr    []string
	}{
		{"synthetic kernel", []string{"check", "--config", synthConfig, "--modules", synthModules}, 0,
			[]string{"module (kernel/drivers/block/nbd.ko)", "OK: "}, nil},
		{"gzip config, no modules dir", []string{"check", "--config", gz}, 0,
			[]string{"config " + gz, "no modules dir"}, nil},
		{"hooks separated by commas", []string{"check", "--config", synthConfig, "--hooks", "nbd,base"}, 0,
			[]string{"hooks base nbd;"}, nil},
		{"missing option", []string{"check", "--config", noNBD, "--hooks", "nbd"}, 1,
			[]string{"nbd   BLK_DEV_NBD", "MISSING"}, nil},
		{"a compression the config lacks", []string{"check", "--config", synthConfig, "--compression", "xz"}, 1,
			[]string{"RD_XZ", "MISSING"}, nil},
		{"the modules dir alone", []string{"check", "--modules", synthModules, "--hooks", "nbd"}, 0,
			[]string{"config -", "module (kernel/drivers/block/nbd.ko)"}, nil},
		{"--help", []string{"check", "--help"}, 0, []string{"usage: nbdroot kernelcfg check", "-modules DIR"}, nil},
		{"unknown hook", []string{"check", "--config", synthConfig, "--hooks", "base plymouth"}, 2,
			nil, []string{"--hooks", `"plymouth"`}},
		{"no hook", []string{"check", "--config", synthConfig, "--hooks", " "}, 2, nil, []string{"--hooks"}},
		{"unknown compression", []string{"check", "--config", synthConfig, "--compression", "bzip2"}, 2,
			nil, []string{"--compression", `"bzip2"`}},
		{"config file absent", []string{"check", "--config", "/nonexistent/config"}, 2,
			nil, []string{"--config", "/nonexistent/config"}},
		{"not a config", []string{"check", "--config", synthModules + "/modules.builtin"}, 2,
			nil, []string{"--config", "modules.builtin", "not a kernel .config: line 1"}},
		{"modules dir absent", []string{"check", "--config", synthConfig, "--modules", "/nonexistent/6.1"}, 2,
			nil, []string{"modules dir /nonexistent/6.1: no such file or directory"}},
		{"modules dir absent, no config", []string{"check", "--modules", "/nonexistent/6.1"}, 2,
			nil, []string{"modules dir /nonexistent/6.1: no such file or directory"}},
		{"unknown flag", []string{"check", "--frobnicate"}, 2, nil, []string{"-frobnicate"}},
		{"stray argument", []string{"check", "--config", synthConfig, "extra"}, 2, nil, []string{`"extra"`}},
		{"no subcommand", nil, 2, nil, []string{"usage: nbdroot kernelcfg check"}},
		{"unknown subcommand", []string{"verify"}, 2, nil, []string{`"verify"`}},
		{"help", []string{"--help"}, 0, []string{"usage: nbdroot kernelcfg check", "nbdroot kernelcfg fragment"}, nil},
		{"fragment", []string{"fragment"}, 0, []string{"CONFIG_BLK_DEV_NBD=y\n", "CONFIG_RD_ZSTD=y\n", "CONFIG_DM_CRYPT=y\n"}, nil},
		{"fragment --help", []string{"fragment", "--help"}, 0, []string{"usage: nbdroot kernelcfg fragment", "-compression"}, nil},
		{"fragment, unknown hook", []string{"fragment", "--hooks", "nbd mdadm"}, 2, nil, []string{"--hooks", `"mdadm"`}},
		{"fragment, unknown compression", []string{"fragment", "--compression", "lzo"}, 2, nil, []string{"--compression", `"lzo"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, out, errs := runK(tc.args...)
			if st != tc.wantStatus {
				t.Errorf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", st, tc.wantStatus, out, errs)
			}
			for _, w := range tc.wantOut {
				if !strings.Contains(out, w) {
					t.Errorf("stdout lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(errs, w) {
					t.Errorf("stderr lacks %q:\n%s", w, errs)
				}
			}
		})
	}
}

func TestKernelcfgFragmentOnly(t *testing.T) {
	st, out, _ := runK("fragment", "--hooks", "base", "--compression", "none")
	if st != 0 || strings.Contains(out, "CONFIG_RD_") || strings.Contains(out, "CONFIG_BLK_DEV_NBD") || !strings.Contains(out, "CONFIG_DEVTMPFS=y") {
		t.Errorf("exit %d, fragment for base, no compression:\n%s", st, out)
	}
}
