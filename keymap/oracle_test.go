package keymap

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// mktable runs `loadkeys --mktable --unicode` (no console needed) on file and returns its
// tables as the kernel keeps them (an action XOR 0xf000 by table index and key) and its
// compose table.
func mktable(t *testing.T, file string) (map[int][]uint16, []Diacr, map[int]string, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("loadkeys", "--mktable", "--unicode", file)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%v: %s", err, stderr.String())
	}
	names := map[string]int{}
	mods := []string{"shift", "altgr", "ctrl", "alt", "shl", "shr", "ctl", "ctr"}
	for i := 0; i < 256; i++ {
		if i == 0 {
			names["plain"] = 0
			continue
		}
		var parts []string
		for b, m := range mods {
			if i&(1<<b) != 0 {
				parts = append(parts, m)
			}
		}
		names[strings.Join(parts, "_")] = i
	}
	tables := map[int][]uint16{}
	var diacrs []Diacr
	funcs := map[int]string{}
	mapRe := regexp.MustCompile(`^(?:static )?unsigned short (\w+)_map\[NR_KEYS\] = \{`)
	diacrRe := regexp.MustCompile(`\{(0x[0-9a-f]+|'(?:\\.|\\[0-7]+|[^'\\])'), (0x[0-9a-f]+|'(?:\\.|\\[0-7]+|[^'\\])'), (0x[0-9a-f]+|'(?:\\.|\\[0-7]+|[^'\\])')\}`)
	sc := bufio.NewScanner(bytes.NewReader(out))
	cur := -1
	inDiacr := false
	for sc.Scan() {
		l := sc.Text()
		if m := mapRe.FindStringSubmatch(l); m != nil {
			idx, ok := names[m[1]]
			if !ok {
				return nil, nil, nil, fmt.Errorf("map name %q", m[1])
			}
			cur = idx
			continue
		}
		if strings.HasPrefix(l, "struct kbdiacr") && strings.Contains(l, "accent_table[") {
			inDiacr = true
			continue
		}
		if strings.HasPrefix(l, "};") {
			cur, inDiacr = -1, false
			continue
		}
		if cur >= 0 {
			for _, f := range strings.FieldsFunc(l, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' }) {
				v, err := strconv.ParseUint(f, 0, 16)
				if err != nil {
					return nil, nil, nil, fmt.Errorf("map value %q", f)
				}
				tables[cur] = append(tables[cur], uint16(v))
			}
		}
		if inDiacr {
			for _, m := range diacrRe.FindAllStringSubmatch(l, -1) {
				var d [3]uint32
				for i := 0; i < 3; i++ {
					s := m[i+1]
					if strings.HasPrefix(s, "'") {
						u, _, _, err := strconv.UnquoteChar(s[1:len(s)-1], '\'')
						if err != nil {
							return nil, nil, nil, fmt.Errorf("diacr %q", s)
						}
						d[i] = uint32(u)
					} else {
						v, _ := strconv.ParseUint(s, 0, 32)
						d[i] = uint32(v)
					}
				}
				diacrs = append(diacrs, Diacr{d[0], d[1], d[2]})
			}
		}
	}
	return tables, diacrs, funcs, nil
}

// compareWithLoadkeys compiles file with Load and with loadkeys, and reports every
// difference; unsupported is true when our parser refused a keysym or charset nbdroot
// does not name, theirs when loadkeys refused the file.
func compareWithLoadkeys(t *testing.T, file string) (same, unsupported, theirs bool) {
	t.Helper()
	km, err := Load("/", file)
	tables, diacrs, _, terr := mktable(t, file)
	if terr != nil {
		return false, false, true
	}
	if err != nil {
		if strings.Contains(err.Error(), "unknown keysym") || strings.Contains(err.Error(), "charset") {
			return false, true, false
		}
		t.Errorf("%s: %v", file, err)
		return false, false, false
	}
	ours := map[[2]int]uint16{}
	for _, e := range km.Entries {
		ours[[2]int{int(e.Table), int(e.Key)}] = e.Value
	}
	bad := 0
	for tb, vals := range tables {
		for key, v := range vals {
			o, ok := ours[[2]int{tb, key}]
			want := v ^ 0xf000
			if !ok && want != Hole || ok && o != want {
				if bad < 5 {
					t.Errorf("%s: table %d key %d: ours %#x (set %v), loadkeys %#x", file, tb, key, o, ok, want)
				}
				bad++
			}
		}
	}
	for _, tb := range km.Tables {
		if _, ok := tables[int(tb)]; !ok {
			t.Errorf("%s: we define table %d, loadkeys does not", file, tb)
			bad++
		}
	}
	if fmt.Sprint(diacrs) != fmt.Sprint(km.Diacrs) {
		t.Errorf("%s: compose table: ours %v, loadkeys %v", file, km.Diacrs, diacrs)
		bad++
	}
	return bad == 0, false, false
}

// TestAgainstLoadkeys compiles every keymap of console-data (Debian's copy of kbd's keymap
// tree, with includes) and compares each table entry and compose definition with what
// kbd's own loadkeys compiles (--mktable --unicode). Keymaps written in a charset nbdroot
// does not name (Cyrillic, Greek… keysym names) are counted, not compared.
func TestAgainstLoadkeys(t *testing.T) {
	root := "/usr/share/keymaps"
	if _, err := exec.LookPath("loadkeys"); err != nil {
		skipOrFail(t, "no loadkeys (scripts/deps.sh installs kbd)")
	}
	var files []string
	filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(p, ".kmap.gz") && !strings.Contains(p, "/include/") {
			files = append(files, p)
		}
		return nil
	})
	if len(files) == 0 {
		skipOrFail(t, "no console-data keymaps (scripts/deps.sh installs console-data)")
	}
	same, unsupported, theirsFail := 0, 0, 0
	identical := map[string]bool{}
	for _, f := range files {
		ok, unsup, theirs := compareWithLoadkeys(t, f)
		switch {
		case ok:
			same++
			identical[strings.TrimSuffix(filepath.Base(f), ".kmap.gz")] = true
		case unsup:
			unsupported++
		case theirs:
			theirsFail++
		}
	}
	t.Logf("%d keymaps: %d identical to loadkeys', %d in charsets nbdroot does not name, %d refused by loadkeys itself", len(files), same, unsupported, theirsFail)
	for _, name := range []string{"de-latin1", "de-latin1-nodeadkeys", "de", "us", "uk", "fr-latin1", "fr-latin9", "es", "it", "se-latin1", "no-latin1", "dk-latin1", "fi", "sg-latin1", "be-latin1"} {
		if !identical[name] {
			t.Errorf("keymap %s is not among those identical to loadkeys'", name)
		}
	}
}

// TestAgainstLoadkeysConsoleSetup does the same for the keymaps Debian's console-setup makes
// from XKB layouts (ckbcomp, what /etc/console-setup/cached_*.kmap.gz holds): U+ code
// points, 128 tables, dead keys.
func TestAgainstLoadkeysConsoleSetup(t *testing.T) {
	for _, tool := range []string{"loadkeys", "ckbcomp"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "no %s (scripts/deps.sh installs kbd and console-setup)", tool)
		}
	}
	for _, layout := range [][]string{{"de"}, {"de", "nodeadkeys"}, {"us"}, {"gb"}, {"fr"}, {"ru"}, {"cz"}, {"ch", "fr"}, {"us", "dvorak"}} {
		t.Run(strings.Join(layout, "-"), func(t *testing.T) {
			out, err := exec.Command("ckbcomp", layout...).Output()
			if err != nil {
				t.Fatalf("ckbcomp %v: %v", layout, err)
			}
			file := filepath.Join(t.TempDir(), "cached.kmap")
			if err := os.WriteFile(file, out, 0o644); err != nil {
				t.Fatal(err)
			}
			if ok, unsup, theirs := compareWithLoadkeys(t, file); !ok {
				t.Errorf("%v: not identical (unsupported %v, loadkeys refused %v)", layout, unsup, theirs)
			}
		})
	}
}

// skipOrFail skips a test that needs a tool, or fails it under NBDROOT_REQUIRE_PEERS=1.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}
