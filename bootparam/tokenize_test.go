package bootparam

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestTokenize(t *testing.T) {
	v := func(name, value string) Param { return Param{Name: name, Value: value, HasValue: true} }
	w := func(name string) Param { return Param{Name: name} }
	tests := []struct {
		name     string
		cmdline  string
		params   []Param
		initArgs []string
	}{
		{"empty", "", nil, nil},
		{"only spaces", " \t\n ", nil, nil},
		{"words and values", "ro quiet root=/dev/nbd0", []Param{w("ro"), w("quiet"), v("root", "/dev/nbd0")}, nil},
		{"all whitespace separates", "a=1\tb=2\nc=3\r\vd=4\f", []Param{v("a", "1"), v("b", "2"), v("c", "3"), v("d", "4")}, nil},
		{"trailing newline of /proc/cmdline", "root=/dev/nbd0\n", []Param{v("root", "/dev/nbd0")}, nil},
		{"empty value", "nbdroot=", []Param{v("nbdroot", "")}, nil},
		{"value with =", "root=UUID=abcd", []Param{v("root", "UUID=abcd")}, nil},
		{"quoted value", `init="/bin/my init" x=1`, []Param{v("init", "/bin/my init"), v("x", "1")}, nil},
		{"quoted word", `"nbd_export=my disk" x`, []Param{v("nbd_export", "my disk"), w("x")}, nil},
		{"quote in the middle stays", `a=b"c d"e f`, []Param{v("a", `b"c d"e`), w("f")}, nil},
		{"quoted bare word", `"foo bar" baz`, []Param{w("foo bar"), w("baz")}, nil},
		{"unterminated quote runs to the end", `a="b c d`, []Param{v("a", "b c d")}, nil},
		{"lone quote value", `a=" b`, []Param{v("a", " b")}, nil},
		{"just a quote", `"`, []Param{w("")}, nil},
		{"repeated kept in order", "ip=eth0:dhcp ip=eth1:dhcp", []Param{v("ip", "eth0:dhcp"), v("ip", "eth1:dhcp")}, nil},
		{"-- hands the rest to init", "root=/dev/nbd0 -- single x=1 --", []Param{v("root", "/dev/nbd0")}, []string{"single", "x=1", "--"}},
		{"-- with a value is a parameter", "--=x root=/dev/nbd0", []Param{v("--", "x"), v("root", "/dev/nbd0")}, nil},
		{"quoted -- also ends", `a=1 "--" b`, []Param{v("a", "1")}, []string{"b"}},
		{"-- at the end", "a=1 --", []Param{v("a", "1")}, nil},
		{"leading = is part of the name", "=foo =a=b", []Param{w("=foo"), v("=a", "b")}, nil},
		{"multi-byte characters stay whole", "nbd_export=à\u00a0b", []Param{v("nbd_export", "à\u00a0b")}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params, initArgs := Tokenize(tt.cmdline)
			if diff := cmp.Diff(tt.params, params, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Tokenize(%q) params (-want +got):\n%s", tt.cmdline, diff)
			}
			if diff := cmp.Diff(tt.initArgs, initArgs, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Tokenize(%q) init args (-want +got):\n%s", tt.cmdline, diff)
			}
		})
	}
}

func TestParamString(t *testing.T) {
	for _, tt := range []struct {
		p    Param
		want string
	}{
		{Param{Name: "rw"}, "rw"},
		{Param{Name: "nbdroot", HasValue: true}, "nbdroot="},
		{Param{Name: "ip", Value: "dhcp", HasValue: true}, "ip=dhcp"},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}
