package keymap

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func entries(km *Keymap) map[string]uint16 {
	out := map[string]uint16{}
	for _, e := range km.Entries {
		out[fmt.Sprintf("%d/%d", e.Table, e.Key)] = e.Value
	}
	return out
}

// TestParse checks the rules of the format on small keymaps (each value is what loadkeys
// -u loads, checked against kbd 2.5.1).
func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want map[string]uint16 // table/key → action; only these keys are compared
		tabs []uint8
	}{
		{"keymaps line and positional values", "keymaps 0-1,4\nkeycode 16 = q Q Control_q\n",
			map[string]uint16{"0/16": 0x0071, "1/16": 0x0051, "4/16": 0x0011}, []uint8{0, 1, 4}},
		{"a single letter spreads over every table", "keymaps 0-2,4-5,8,12\nkeycode 30 = +a\n",
			map[string]uint16{"0/30": 0x0b61, "1/30": 0x0b41, "2/30": 0x0b61, "4/30": 0x0001, "5/30": 0x0001, "8/30": 0x0861, "12/30": 0x0801}, nil},
		{"a single non-letter fills the other tables", "keymaps 0,1,4\nkeycode 1 = Escape\n",
			map[string]uint16{"0/1": 0x001b, "1/1": 0x001b, "4/1": 0x001b}, nil},
		{"Latin-1 keysyms are Unicode, with + they are letters", "keymaps 0-1\nkeycode 39 = +odiaeresis +Odiaeresis\nkeycode 12 = ssharp question\n",
			map[string]uint16{"0/39": 0x0bf6, "1/39": 0x0bd6, "0/12": 0xf0df, "1/12": 0x003f}, nil},
		{"U+ code points; + outside Latin-1 is no letter", "keycode 18 = U+20ac +U+0105\n", map[string]uint16{"0/18": 0x20ac ^ 0xf000, "1/18": 0x0105 ^ 0xf000}, nil},
		{"modifier lines and plain", "keymaps 0-15\nkeycode 100 = AltGr\nshift altgr keycode 3 = twosuperior\nplain keycode 57 = space\n",
			map[string]uint16{"0/100": 0x0701, "3/3": 0xf0b2, "0/57": 0x0020}, nil},
		{"numbers: hex, octal, decimal", "keycode 2 = 0x0031 041 50\n", map[string]uint16{"0/2": 0x31, "1/2": 0x21, "2/2": 0x32}, nil},
		{"Meta_ and synonyms", "keymaps 0,8\nkeycode 14 = Control_h Meta_Control_h\nkeycode 102 = Home Home\n",
			map[string]uint16{"0/14": 0x0008, "8/14": 0x0808, "0/102": 0x0114, "8/102": 0x0114}, nil},
		{"alt_is_meta fills Alt with Meta", "keymaps 0,8\nalt_is_meta\nkeycode 16 = q\n", map[string]uint16{"0/16": 0x0b71, "8/16": 0x0871}, nil},
		{"without a keymaps line tables come into being", "keycode 16 = q Q\naltgr keycode 16 = at\n",
			map[string]uint16{"0/16": 0x0071, "1/16": 0x0051, "2/16": 0x0040}, []uint8{0, 1, 2}},
		{"continuation lines and comments", "keymaps 0-1 ! tables\n# comment\nkeycode 16 = \\\n q Q # trailing\n",
			map[string]uint16{"0/16": 0x0071, "1/16": 0x0051}, nil},
		{"charset iso-8859-1 turns Unicode off for keysyms", "charset \"iso-8859-1\"\nkeycode 12 = ssharp\n",
			map[string]uint16{"0/12": 0x00df}, nil},
		{"a later line replaces an earlier one", "keymaps 0-1\nkeycode 16 = q Q\nkeycode 16 = x X\n", map[string]uint16{"0/16": 0x0078, "1/16": 0x0058}, nil},
		{"a dead key and a function key", "keycode 13 = dead_acute F5\n", map[string]uint16{"0/13": 0x0401, "1/13": 0x0104}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			km, err := Parse("test.map", []byte(tt.in), Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := entries(km)
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s = %#04x, want %#04x", k, got[k], v)
				}
			}
			if tt.tabs != nil {
				if diff := cmp.Diff(tt.tabs, km.Tables); diff != "" {
					t.Errorf("tables (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestParseComposeAndStrings(t *testing.T) {
	in := "keycode 1 = Escape\ncompose '`' 'a' to U+00e0\ncompose 'o' 'c' to copyright\ncompose '\\'' 'e' to '\\351'\nstring F1 = \"\\033[[A\\n\"\n"
	km, err := Parse("c.map", []byte(in), Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []Diacr{{'`', 'a', 0xe0}, {'o', 'c', 0xa9}, {'\'', 'e', 0xe9}}
	if diff := cmp.Diff(want, km.Diacrs); diff != "" {
		t.Errorf("compose (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Func{{0, "\033[[A\n"}}, km.Funcs); diff != "" {
		t.Errorf("strings (-want +got):\n%s", diff)
	}
	km, err = Parse("u.map", []byte("strings as usual\ncompose as usual for \"iso-8859-1\"\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(km.Funcs) != 26 || len(km.Diacrs) != 68 {
		t.Errorf("as usual: %d strings, %d compose definitions; want 26 and 68", len(km.Funcs), len(km.Diacrs))
	}
}

func TestParseIncludes(t *testing.T) {
	files := map[string]string{
		"qwertz-layout": "keycode 21 = +z\nkeycode 44 = +y\n",
		"linux-keys":    "keycode 1 = Escape\ninclude \"deeper\"\n",
		"deeper":        "keycode 57 = space\n",
		"loop":          "include \"loop\"\n",
	}
	resolve := func(name, from string) (string, []byte, error) {
		if f, ok := files[name]; ok {
			return name, []byte(f), nil
		}
		return "", nil, errors.New("no such file")
	}
	km, err := Parse("de.map", []byte("keymaps 0-1\ninclude \"qwertz-layout\"\ninclude \"linux-keys\"\nkeycode 44 = +x\n"), Options{Resolve: resolve})
	if err != nil {
		t.Fatal(err)
	}
	got := entries(km)
	if got["0/21"] != 0x0b7a || got["1/21"] != 0x0b5a || got["0/44"] != 0x0b78 || got["0/57"] != 0x20 || got["1/1"] != 0x1b {
		t.Errorf("entries %v", got)
	}
	for _, in := range []string{"include \"loop\"\n", "include \"missing\"\n", "include missing\n"} {
		if _, err := Parse("x.map", []byte(in), Options{Resolve: resolve}); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"keycode 1 = NoSuchKeysym\n", "x.map:1: unknown keysym 'NoSuchKeysym'"},
		{"keymaps 0\nshift keycode 1 = a\n", "x.map:2: adding map 1 violates explicit keymaps line"},
		{"keymaps 0-1\nkeycode 1 = a b c\n", "too many (3) entries"},
		{"keycode 1 = U+f123\n", "unicode keysym out of range"},
		{"charset \"koi8-r\"\n", "charset \"koi8-r\""},
		{"string a = \"x\"\n", "is not a function key symbol"},
		{"keycode = a\n", "syntax error"},
		{"frobnicate\n", "syntax error near \"frobnicate\""},
		{"string F1 = \"unterminated\n", "unterminated string"},
		{"keymaps 0-600\n", "out of range"},
	} {
		_, err := Parse("x.map", []byte(tt.in), Options{})
		var ke *Error
		if !errors.As(err, &ke) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: err = %v, want an Error containing %q", tt.in, err, tt.want)
		}
	}
}

func TestEncodeDecode(t *testing.T) {
	km, err := Parse("de", []byte("keymaps 0-1\nkeycode 16 = q Q\ncompose '`' 'a' to U+00e0\nstring F1 = \"x\"\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := km.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(km, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for i := range b {
		if _, err := Decode(b[:i]); err == nil {
			t.Errorf("truncated at %d: decoded", i)
		}
	}
	if _, err := Decode(append(b, 0)); err == nil {
		t.Error("trailing byte: decoded")
	}
}

// fakeVT records the ioctls a keymap makes.
type fakeVT struct {
	mode      int
	modes     []int
	entries   []Entry
	diacrs    []Diacr
	funcs     []Func
	noDealloc bool
	fail      map[[2]uint8]error
}

func (f *fakeVT) Mode() (int, error) { return f.mode, nil }
func (f *fakeVT) SetMode(m int) error {
	f.modes = append(f.modes, m)
	f.mode = m
	return nil
}
func (f *fakeVT) SetEntry(t, k uint8, v uint16) error {
	if err := f.fail[[2]uint8{t, k}]; err != nil {
		return err
	}
	if v == NoSuchMap && f.noDealloc {
		return syscall.EINVAL
	}
	f.entries = append(f.entries, Entry{t, k, v})
	return nil
}
func (f *fakeVT) SetDiacrs(d []Diacr) error { f.diacrs = d; return nil }
func (f *fakeVT) SetFunc(i uint8, s string) error {
	f.funcs = append(f.funcs, Func{i, s})
	return nil
}

func TestApply(t *testing.T) {
	km, err := Parse("de", []byte("keymaps 0-1\nkeycode 21 = +z\ncompose '`' 'a' to U+00e0\nstring F1 = \"x\"\n"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	vt := &fakeVT{mode: ModeXlate}
	a, err := km.Apply(vt)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{ModeUnicode, ModeXlate}, vt.modes); diff != "" {
		t.Errorf("modes: Unicode while defining, then back (-want +got):\n%s", diff)
	}
	if a.Keys != 2 || a.Deallocated != 254 || a.Diacrs != 1 || a.Funcs != 1 {
		t.Errorf("applied %v", a)
	}
	if vt.entries[0] != (Entry{0, 21, 0x0b7a}) || vt.entries[1] != (Entry{1, 21, 0x0b5a}) || vt.entries[2] != (Entry{2, 0, NoSuchMap}) {
		t.Errorf("first ioctls %v", vt.entries[:3])
	}
	// An old kernel that cannot deallocate: the table is cleared key by key.
	vt = &fakeVT{mode: ModeUnicode, noDealloc: true, fail: map[[2]uint8]error{{1, 21}: syscall.EPERM}}
	a, err = km.Apply(vt)
	if !errors.Is(err, syscall.EPERM) || a.Keys != 1 || a.Deallocated != 254 || len(vt.modes) != 0 {
		t.Errorf("applied %v, err %v, modes %v", a, err, vt.modes)
	}
	if len(vt.entries) != 1+254*NRKeys {
		t.Errorf("%d ioctls, want every key of every other table cleared", len(vt.entries))
	}
}

// FuzzParse feeds arbitrary keymaps (files of the client's root): no panic, and whatever
// parses encodes and decodes to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"keymaps 0-2,4-6,8-9,12\nkeycode 16 = +q Q at Control_q\naltgr keycode 12 = backslash\n",
		"keycode 1 = U+00e4 +U+0105 0x0b61 Meta_a\ncompose '\\'' 'e' to U+00e9\n",
		"charset \"iso-8859-15\"\nkeycode 18 = +e +E currency\nstring F1 = \"\\033[A\"\nstrings as usual\n",
		"include \"x\"\nalt-is-meta\nkeycode 1 = \\\n Escape\n",
		"keymaps 0-127\nkeycode 255 = nul\nkeycode 300 = a\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		resolve := func(name, from string) (string, []byte, error) {
			if len(name) > 3 {
				return "", nil, errors.New("no")
			}
			return name, []byte(s), nil
		}
		km, err := Parse("fuzz", []byte(s), Options{Resolve: resolve})
		if err != nil {
			var ke *Error
			if !errors.As(err, &ke) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			return
		}
		b, err := km.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if !cmp.Equal(km, got, cmp.Comparer(func(a, b []Diacr) bool { return fmt.Sprint(a) == fmt.Sprint(b) })) {
			t.Fatal("round trip differs")
		}
	})
}

// FuzzDecode feeds arbitrary keymap files to the init's reader: no panic.
func FuzzDecode(f *testing.F) {
	km, _ := Parse("de", []byte("keymaps 0-1\nkeycode 16 = q Q\ncompose '`' 'a' to U+00e0\nstring F1 = \"x\"\n"), Options{})
	b, _ := km.MarshalBinary()
	f.Add(b)
	f.Add([]byte("NBKM\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		Decode(b)
	})
}
