package depmod

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/kmod"
)

func TestParseModulesDep(t *testing.T) {
	in := `kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/drivers/md/dm-crypt.ko.zst: kernel/drivers/md/dm-mod.ko.zst

/opt/extra/out-of-tree.ko:
`
	paths, deps, err := parseModulesDep(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	wantPaths := map[string]string{
		"ext4": "kernel/fs/ext4/ext4.ko.xz", "crc16": "kernel/lib/crc16.ko.xz",
		"dm_crypt": "kernel/drivers/md/dm-crypt.ko.zst", "out_of_tree": "/opt/extra/out-of-tree.ko",
	}
	if diff := cmp.Diff(wantPaths, paths); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	wantDeps := map[string][]string{
		"ext4": {"crc16", "mbcache", "jbd2"}, "crc16": nil, "dm_crypt": {"dm_mod"}, "out_of_tree": nil,
	}
	if diff := cmp.Diff(wantDeps, deps); diff != "" {
		t.Errorf("deps (-want +got):\n%s", diff)
	}
}

func TestParseModulesAliasAndSoftdep(t *testing.T) {
	aliases, err := parseModulesAlias(strings.NewReader(`# Aliases extracted from modules themselves.
alias fs-ext4 ext4
alias crypto-crc32c crc32c_generic
alias pci:v00008086d0000100Esv*sd*bc*sc*i* e1000
alias mdio:0000000000011100110010010001???? realtek
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []kmod.Alias{
		{Pattern: "fs_ext4", Module: "ext4"},
		{Pattern: "crypto_crc32c", Module: "crc32c_generic"},
		{Pattern: "pci:v00008086d0000100Esv*sd*bc*sc*i*", Module: "e1000"},
		{Pattern: "mdio:0000000000011100110010010001????", Module: "realtek"},
	}
	if diff := cmp.Diff(want, aliases); diff != "" {
		t.Errorf("aliases (-want +got):\n%s", diff)
	}
	soft, err := parseModulesSoftdep(strings.NewReader(`# Soft dependencies extracted from modules themselves.
softdep ext4 pre: crypto-crc32c
softdep r8169 pre: realtek
softdep x pre: a post: b c
`))
	if err != nil {
		t.Fatal(err)
	}
	wantSoft := map[string][]string{"ext4": {"crypto-crc32c"}, "r8169": {"realtek"}, "x": {"a", "b", "c"}}
	if diff := cmp.Diff(wantSoft, soft); diff != "" {
		t.Errorf("softdeps (-want +got):\n%s", diff)
	}
}

func TestParseIndexErrors(t *testing.T) {
	tests := []struct {
		name     string
		parse    func(string) error
		in       string
		wantLine int
	}{
		{"dep without colon", depErr, "kernel/a.ko: \nkernel/b.ko kernel/c.ko\n", 2},
		{"dep of a non-module", depErr, "kernel/a.ko: kernel/README\n", 1},
		{"dep line not a module", depErr, "# c\nhello: kernel/a.ko\n", 2},
		{"alias with two fields", aliasErr, "alias fs-ext4\n", 1},
		{"alias keyword", aliasErr, "alias a b\nblacklist x y\n", 2},
		{"softdep keyword", softErr, "options x y=1\n", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.parse(tt.in)
			var le *IndexLineError
			if !errors.As(err, &le) || le.Line != tt.wantLine {
				t.Fatalf("err = %v, want an IndexLineError for line %d", err, tt.wantLine)
			}
		})
	}
}

func depErr(s string) error      { _, _, err := parseModulesDep(strings.NewReader(s)); return err }
func aliasErr(s string) error    { _, err := parseModulesAlias(strings.NewReader(s)); return err }
func softErr(s string) error     { _, err := parseModulesSoftdep(strings.NewReader(s)); return err }
func okOrLineErr(err error) bool { var le *IndexLineError; return err == nil || errors.As(err, &le) }

// FuzzParseIndexes feeds arbitrary text to the three index parsers: no panic, an error is
// an IndexLineError (or the scanner's line-too-long), and whatever parses is normalised.
func FuzzParseIndexes(f *testing.F) {
	f.Add("kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz\nkernel/lib/crc16.ko.xz:\n")
	f.Add("# Aliases extracted from modules themselves.\nalias crypto-crc32c crc32c_generic\nalias pci:v00008086d*sv*sd*bc*sc*i* e1000e\n")
	f.Add("softdep ext4 pre: crypto-crc32c\nsoftdep a post: b pre: c\n")
	f.Add(":\nalias\nsoftdep\n.ko:\n")
	f.Fuzz(func(t *testing.T, in string) {
		if _, deps, err := parseModulesDep(strings.NewReader(in)); err == nil {
			for m, ds := range deps {
				for _, n := range append([]string{m}, ds...) {
					if strings.Contains(n, "-") || n == "" {
						t.Errorf("modules.dep name %q not normalised", n)
					}
				}
			}
		} else if !okOrLineErr(err) && !strings.Contains(err.Error(), "too long") {
			t.Errorf("modules.dep: unexpected error type %T: %v", err, err)
		}
		if aliases, err := parseModulesAlias(strings.NewReader(in)); err == nil {
			for _, a := range aliases {
				if strings.Contains(a.Module, "-") || a.Pattern == "" {
					t.Errorf("alias %+v not normalised", a)
				}
			}
		} else if !okOrLineErr(err) && !strings.Contains(err.Error(), "too long") {
			t.Errorf("modules.alias: unexpected error type %T: %v", err, err)
		}
		if _, err := parseModulesSoftdep(strings.NewReader(in)); err != nil && !okOrLineErr(err) && !strings.Contains(err.Error(), "too long") {
			t.Errorf("modules.softdep: unexpected error type %T: %v", err, err)
		}
	})
}
