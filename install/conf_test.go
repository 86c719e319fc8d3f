package install

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// builderOptions stand in for the flags of `nbdroot initramfs`.
var builderOptions = []string{"hooks", "compression", "init", "nics", "file", "keyfile", "add-module", "config", "root", "modules", "kver", "o"}

func knownOption(name string) bool { return slices.Contains(builderOptions, name) }

func TestParseConf(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []ConfOption
		err        string // part of the error; "" for none
	}{
		{"default file", string(layout.render("initramfs.conf")), []ConfOption{
			{Line: 17, Name: "hooks", Value: "base udev net nbd encrypt filesystems"},
			{Line: 18, Name: "compression", Value: "zstd"},
			{Line: 19, Name: "init", Value: "/usr/lib/nbdroot/nbdroot-init"}}, ""},
		{"tabs, blanks, comments, dashes", "# c\n\n\thooks\tbase  udev\n--nics common\n", []ConfOption{
			{Line: 3, Name: "hooks", Value: "base  udev"}, {Line: 4, Name: "nics", Value: "common"}}, ""},
		{"repeatable", "file /a\nfile /b:/c\n", []ConfOption{
			{Line: 1, Name: "file", Value: "/a"}, {Line: 2, Name: "file", Value: "/b:/c"}}, ""},
		{"empty", "", nil, ""},
		{"unknown option", "hooks base\nmodulez x\n", nil, `line 2: "modulez" is not an option of nbdroot initramfs`},
		{"reserved root", "root /mnt\n", nil, `line 1: "root": the hooks set the root`},
		{"reserved output", "o /tmp/x\n", nil, `line 1: "o": the hooks set the image`},
		{"mkinitcpio syntax", "HOOKS=(base udev)\n", nil, `line 1: "HOOKS=(base udev)": write NAME VALUE`},
		{"flag syntax", "--hooks=base\n", nil, `line 1: "--hooks=base": write NAME VALUE`},
		{"no value", "hooks\n", nil, `line 1: "hooks" has no value`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseConf(strings.NewReader(tc.text), ConfPath, knownOption)
			if tc.err != "" {
				var ce *ConfError
				if err == nil || !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.err) || !strings.HasPrefix(err.Error(), ConfPath+" line ") {
					t.Fatalf("error %v, want a ConfError with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(c.Options, tc.want) {
				t.Errorf("options (-want +got):\n-%v\n+%v", tc.want, c.Options)
			}
		})
	}
}

func TestConfArgs(t *testing.T) {
	c := &Conf{Options: []ConfOption{{Name: "hooks", Value: "base udev net"}, {Name: "init", Value: "/usr/lib/nbdroot/nbdroot-init"},
		{Name: "keyfile", Value: "/etc/keys/root.key:/etc/keys/root.key"}, {Name: "file", Value: "/etc/a"}, {Name: "nics", Value: "common"}}}
	for _, tc := range []struct {
		root string
		want []string
	}{
		{"/", []string{"--hooks=base udev net", "--init=/usr/lib/nbdroot/nbdroot-init", "--keyfile=/etc/keys/root.key:/etc/keys/root.key", "--file=/etc/a", "--nics=common"}},
		{"/srv/client", []string{"--hooks=base udev net", "--init=/srv/client/usr/lib/nbdroot/nbdroot-init",
			"--keyfile=/srv/client/etc/keys/root.key:/etc/keys/root.key", "--file=/srv/client/etc/a", "--nics=common"}},
	} {
		t.Run(tc.root, func(t *testing.T) {
			if got := c.Args(tc.root); !slices.Equal(got, tc.want) {
				t.Errorf("Args(%q) (-want +got):\n-%q\n+%q", tc.root, tc.want, got)
			}
		})
	}
}

// FuzzParseConf: any file either parses into options with a name the builder knows and a
// value, or gives a ConfError naming a line.
func FuzzParseConf(f *testing.F) {
	f.Add(string(layout.render("initramfs.conf")))
	f.Add("hooks base udev\n\nfile /a:/b\n")
	f.Add("HOOKS=(base)\n")
	f.Add("root /\n")
	f.Fuzz(func(t *testing.T, text string) {
		c, err := ParseConf(strings.NewReader(text), "f", knownOption)
		if err != nil {
			var ce *ConfError
			if !errors.As(err, &ce) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error %v is not a ConfError", err)
			}
			return
		}
		for _, o := range c.Options {
			if !knownOption(o.Name) || reserved[o.Name] != "" || o.Value == "" || strings.ContainsAny(o.Name, " \t=") {
				t.Fatalf("accepted %+v", o)
			}
		}
	})
}
