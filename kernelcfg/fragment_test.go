package kernelcfg

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestFragmentMatchesTable keeps nbdroot.config and Hooks() in agreement: each block sets
// exactly one option of each requirement of its hook (and compression), to y, and nothing
// else; every requirement with options has its block.
func TestFragmentMatchesTable(t *testing.T) {
	_, blocks, err := fragmentBlocks()
	if err != nil {
		t.Fatal(err)
	}
	type key struct{ hook, compression string }
	set := map[key][]string{} // options each block sets
	for _, b := range blocks {
		k := key{b.hook, b.compression}
		if _, dup := set[k]; dup {
			t.Errorf("two blocks %v", k)
		}
		set[k] = []string{}
		for _, l := range b.lines {
			if l == "" || strings.HasPrefix(l, "#") {
				continue
			}
			name, value, ok := strings.Cut(strings.TrimPrefix(l, "CONFIG_"), "=")
			if !ok || !strings.HasPrefix(l, "CONFIG_") || value != "y" {
				t.Errorf("block %v: %q, want CONFIG_NAME=y", k, l)
				continue
			}
			set[k] = append(set[k], name)
		}
	}
	used := map[key]map[string]bool{}
	for _, h := range Hooks() {
		for _, req := range h.Requirements {
			if len(req.AnyOf) == 0 {
				continue // a version, no option
			}
			k := key{h.Name, req.Compression}
			var hit []string
			for _, o := range req.AnyOf {
				if slices.Contains(set[k], o.Name) {
					hit = append(hit, o.Name)
				}
			}
			if len(hit) != 1 {
				t.Errorf("block %v sets %q of %s's alternatives %v; want exactly one", k, hit, req.NeededFor, req.AnyOf)
				continue
			}
			if used[k] == nil {
				used[k] = map[string]bool{}
			}
			used[k][hit[0]] = true
		}
	}
	for k, names := range set {
		for _, n := range names {
			if !used[k][n] {
				t.Errorf("block %v sets CONFIG_%s, which no requirement of the table asks for", k, n)
			}
		}
	}
}

// TestFragmentPassesCheck parses each fragment as a .config: it must meet every requirement,
// optional ones included, of the hooks and compression it was made for.
func TestFragmentPassesCheck(t *testing.T) {
	for _, c := range Compressions {
		for _, hooks := range [][]string{nil, allHooks(), {"nbd"}} {
			t.Run(fmt.Sprint(c.Name, hooks), func(t *testing.T) {
				s, err := Fragment(hooks, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				cfg := mustParse(t, s)
				r, err := Check(cfg, "", hooks, c.Name)
				if err != nil {
					t.Fatal(err)
				}
				for _, f := range append(r.Missing(), r.Warnings()...) {
					if f.MinVersion == "" { // a fragment names no version
						t.Errorf("%s: %s: %q", f.Hook, f.Name(), f.State)
					}
				}
			})
		}
	}
}

func TestFragment(t *testing.T) {
	for _, tc := range []struct {
		name        string
		hooks       []string
		compression string
		want, not   []string
	}{
		{
			name: "defaults", want: []string{"## base\n", "## base compression=zstd\nCONFIG_RD_ZSTD=y\n", "CONFIG_BLK_DEV_NBD=y\n",
				"CONFIG_DM_CRYPT=y\n", "CONFIG_EXT4_FS=y\n", "# hooks: base udev net nbd encrypt filesystems; compression: zstd\n"},
			not: []string{"CONFIG_RD_GZIP", "CONFIG_USB_HID", "## keyboard"},
		},
		{
			name: "no compression", hooks: []string{"base"}, compression: "none",
			want: []string{"CONFIG_DEVTMPFS=y\n"}, not: []string{"CONFIG_RD_", "## base compression", "CONFIG_BLK_DEV_NBD"},
		},
		{
			name: "hooks in any order come out in table order", hooks: []string{"nbd", "base"}, compression: "xz",
			want: []string{"# hooks: base nbd; compression: xz\n", "CONFIG_RD_XZ=y\n\n## nbd\n"},
		},
		{
			name: "hooks with nothing to set", hooks: []string{"consolefont", "fsck"},
			not: []string{"\n## "},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Fragment(tc.hooks, tc.compression)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(s, "# nbdroot.config:") {
				t.Errorf("fragment does not start with the file's header:\n%s", s)
			}
			for _, w := range tc.want {
				if !strings.Contains(s, w) {
					t.Errorf("fragment lacks %q:\n%s", w, s)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(s, n) {
					t.Errorf("fragment has %q:\n%s", n, s)
				}
			}
		})
	}

	t.Run("each line once across hooks", func(t *testing.T) {
		s, err := Fragment([]string{"usbinput", "keyboard"}, "none")
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(s, "CONFIG_USB_HID=y\n"); n != 1 {
			t.Errorf("CONFIG_USB_HID=y %d times, want once", n)
		}
	})
	t.Run("an unknown hook", func(t *testing.T) {
		var ae *ArgError
		if _, err := Fragment([]string{"nbd", "mdadm"}, ""); !errors.As(err, &ae) || ae.Value != "mdadm" {
			t.Errorf("Fragment(mdadm) = %v, want an ArgError naming mdadm", err)
		}
	})
}
