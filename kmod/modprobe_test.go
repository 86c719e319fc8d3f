package kmod

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseModprobeArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    modprobeArgs
		wantErr string
	}{
		{"kernel request", []string{"-q", "--", "fs-ext4"}, modprobeArgs{quiet: true, names: []string{"fs-ext4"}}, ""},
		{"crypto template", []string{"-q", "--", "crypto-ecb(aes)"}, modprobeArgs{quiet: true, names: []string{"crypto-ecb(aes)"}}, ""},
		{"params", []string{"nbd", "nbds_max=4", "max_part=8"}, modprobeArgs{names: []string{"nbd"}, params: "nbds_max=4 max_part=8"}, ""},
		{"all", []string{"-a", "nbd", "ext4"}, modprobeArgs{all: true, names: []string{"nbd", "ext4"}}, ""},
		{"combined short flags", []string{"-qbv", "x"}, modprobeArgs{quiet: true, verbose: true, blacklist: true, names: []string{"x"}}, ""},
		{"long flags", []string{"--quiet", "--use-blacklist", "--dry-run", "x"}, modprobeArgs{quiet: true, dryRun: true, blacklist: true, names: []string{"x"}}, ""},
		{"name starting with dash after --", []string{"--", "-x"}, modprobeArgs{names: []string{"-x"}}, ""},
		{"remove refused", []string{"-r", "nbd"}, modprobeArgs{}, "removal"},
		{"unknown flag", []string{"-z", "nbd"}, modprobeArgs{}, "unknown option -z"},
		{"no module", []string{"-q"}, modprobeArgs{}, "no module"},
		{"nothing", nil, modprobeArgs{}, "no module"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseModprobeArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errModprobeUsage) {
					t.Fatalf("err = %v, want a usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(modprobeArgs{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// modprobeDir writes the test index into a modules directory.
func modprobeDir(t *testing.T) string {
	t.Helper()
	return indexDir(t, testIndex())
}

// indexDir writes ix into a new modules directory.
func indexDir(t *testing.T, ix *Index) string {
	t.Helper()
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, IndexName))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ix.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestRunModprobe(t *testing.T) {
	dir := modprobeDir(t)
	tests := []struct {
		name       string
		args       []string
		fail       map[string]error
		wantStatus int
		wantLoaded []string
		wantParams map[string]string
		wantStderr string // substring; "" means stderr must be empty
		wantStdout string
	}{
		{name: "kernel asks for an alias", args: []string{"-q", "--", "crypto-xts"}, wantLoaded: []string{"ecb", "xts"}},
		{name: "fs alias with dependencies", args: []string{"-q", "--", "fs-ext4"},
			wantLoaded: []string{"crc32c_generic", "crc32c_intel", "ext4", "jbd2", "mbcache"}},
		{name: "accelerated variant refuses the CPU", args: []string{"-q", "--", "crypto-crc32c"},
			fail: map[string]error{"crc32c_intel": syscall.ENODEV}, wantLoaded: []string{"crc32c_generic", "crc32c_intel"}},
		{name: "built in", args: []string{"-q", "--", "net-pf-17"}},
		{name: "unknown, quiet", args: []string{"-q", "--", "crypto-ecb(aes)"}, wantStatus: 1},
		{name: "unknown, loud", args: []string{"nosuch"}, wantStatus: 1, wantStderr: "module nosuch not found"},
		{name: "params go to the named module", args: []string{"nbd", "nbds_max=4"}, wantLoaded: []string{"nbd"},
			wantParams: map[string]string{"nbd": "nbds_max=4"}},
		{name: "all", args: []string{"-a", "nbd", "e1000"}, wantLoaded: []string{"e1000", "nbd"}},
		{name: "load failure is reported even quiet", args: []string{"-q", "dm_crypt"},
			fail: map[string]error{"dm_mod": syscall.ENOEXEC}, wantStatus: 1, wantLoaded: []string{"dm_mod"}, wantStderr: "dm_mod"},
		{name: "remove refused", args: []string{"-r", "nbd"}, wantStatus: 1, wantStderr: "not supported"},
		{name: "dry run", args: []string{"-n", "dm_crypt"}, wantStdout: "insmod " + filepath.Join(dir, "kernel/drivers/md/dm-mod.ko") + "\ninsmod " + filepath.Join(dir, "kernel/drivers/md/dm-crypt.ko") + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fl := newFakeLoader(testIndex())
			for k, v := range tt.fail {
				fl.fail[k] = v
			}
			var stdout, stderr bytes.Buffer
			status := RunModprobe(context.Background(), tt.args, ModprobeEnv{Dir: dir, Loader: fl, Stdout: &stdout, Stderr: &stderr})
			if status != tt.wantStatus {
				t.Errorf("status = %d, want %d (stderr %q)", status, tt.wantStatus, stderr.String())
			}
			if diff := cmp.Diff(tt.wantLoaded, fl.startedSorted(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("loaded (-want +got):\n%s", diff)
			}
			if tt.wantStderr == "" && stderr.Len() > 0 {
				t.Errorf("stderr = %q, want nothing", stderr.String())
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("stderr = %q, want it to contain %q", stderr.String(), tt.wantStderr)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantStdout)
			}
			for m, p := range tt.wantParams {
				if fl.params[m] != p {
					t.Errorf("params of %s = %q, want %q", m, fl.params[m], p)
				}
			}
		})
	}
}

func TestRunModprobeNoIndex(t *testing.T) {
	var stderr bytes.Buffer
	status := RunModprobe(context.Background(), []string{"-q", "nbd"}, ModprobeEnv{Dir: t.TempDir(), Loader: loaderFunc(func(string, string) error { return nil }), Stderr: &stderr})
	if status != 1 || !strings.Contains(stderr.String(), IndexName) {
		t.Errorf("status %d, stderr %q; want 1 and a message naming the index", status, stderr.String())
	}
}

// confIndex is testIndex with what modconf takes from modprobe.d: options for nbd, e1000
// blacklisted.
func confIndex() *Index {
	ix := testIndex()
	ix.Options = []ModuleOptions{{Module: "nbd", Params: "nbds_max=4"}}
	ix.Blacklist = []string{"e1000"}
	return ix
}

// TestModprobeDConfig: modprobe.d's options come before those of the command line, and -b
// keeps a blacklisted module out of an alias but not out of a request by name.
func TestModprobeDConfig(t *testing.T) {
	dir := indexDir(t, confIndex())
	run := func(args ...string) (*fakeLoader, int, string) {
		fl := newFakeLoader(confIndex())
		var stderr bytes.Buffer
		status := RunModprobe(context.Background(), args, ModprobeEnv{Dir: dir, Loader: fl, Stderr: &stderr})
		return fl, status, stderr.String()
	}
	fl, status, _ := run("nbd", "max_part=8")
	if status != 0 || fl.params["nbd"] != "nbds_max=4 max_part=8" {
		t.Errorf("modprobe nbd max_part=8: status %d, params %q; want 0 and the config's first", status, fl.params["nbd"])
	}
	fl, status, _ = run("-q", "fs-ext4")
	if status != 0 || fl.params["ext4"] != "" {
		t.Errorf("ext4 got params %q (status %d), want none", fl.params["ext4"], status)
	}
	alias := "pci:v00008086d0000100Esv00008086sd0000001Ebc02sc00i00"
	fl, status, _ = run("-b", "-q", alias)
	if len(fl.started) != 0 || status != 1 {
		t.Errorf("modprobe -b ALIAS of a blacklisted module loaded %v (status %d), want nothing", fl.started, status)
	}
	fl, status, _ = run("-q", alias)
	if diff := cmp.Diff([]string{"e1000"}, fl.startedSorted()); diff != "" || status != 0 {
		t.Errorf("modprobe ALIAS without -b (status %d): (-want +got):\n%s", status, diff)
	}
	fl, status, _ = run("-b", "e1000")
	if diff := cmp.Diff([]string{"e1000"}, fl.startedSorted()); diff != "" || status != 0 {
		t.Errorf("modprobe -b NAME (status %d): a request by name loads a blacklisted module (-want +got):\n%s", status, diff)
	}
}
