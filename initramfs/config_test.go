package initramfs

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseHooks(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"base udev net nbd filesystems", []string{"base", "udev", "net", "nbd", "filesystems"}},
		{`HOOKS="base udev net nbd usbinput keymap encrypt filesystems"`, []string{"base", "udev", "net", "nbd", "usbinput", "keymap", "encrypt", "filesystems"}},
		{"HOOKS=(base udev net)", []string{"base", "udev", "net"}},
		{"HOOKS=('base' \"udev\")", []string{"base", "udev"}},
		{"  base,udev , net ", []string{"base", "udev", "net"}},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := ParseHooks(tt.in)
		if err != nil {
			t.Errorf("ParseHooks(%q): %v", tt.in, err)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParseHooks(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
	if _, err := ParseHooks(`HOOKS="base udev`); err == nil {
		t.Error("unterminated quote: no error")
	}
}

func TestReadConfig(t *testing.T) {
	conf := `# vim:set ft=sh
# MODULES=(commented out)
MODULES=(e1000e # the office NICs
   igb)
BINARIES=()
FILES="/etc/nbdroot/extra.conf"
HOOKS=(base udev autodetect modconf block filesystems)
# the seed's line, which wins because it comes last:
HOOKS="base udev net nbd usbinput keymap encrypt filesystems"
COMPRESSION="xz"
#COMPRESSION="lz4"
`
	got, err := ReadConfig(strings.NewReader(conf))
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{
		Hooks:       []string{"base", "udev", "net", "nbd", "usbinput", "keymap", "encrypt", "filesystems"},
		Modules:     []string{"e1000e", "igb"},
		Files:       []string{"/etc/nbdroot/extra.conf"},
		Compression: "xz",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	_, err = ReadConfig(strings.NewReader("MODULES=(a b\nc\n"))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Line != 1 {
		t.Errorf("unterminated array: err = %v, want a ConfigError at line 1", err)
	}
}

func TestCheckHooks(t *testing.T) {
	tests := []struct {
		name          string
		in            []string
		written, want []string
	}{
		{"duplicates dropped", []string{"base", "udev", "net", "udev", "keymap"},
			[]string{"base", "udev", "net", "keymap"}, []string{"base", "udev", "net", "keymap"}},
		{"stock Arch", strings.Fields("base udev autodetect microcode modconf kms keyboard keymap consolefont block filesystems fsck"),
			strings.Fields("base udev autodetect microcode modconf kms keyboard keymap consolefont block filesystems fsck"),
			strings.Fields("base udev autodetect microcode modconf kms keyboard keymap consolefont block filesystems fsck")},
		{"systemd hooks map to ours", strings.Fields("base systemd autodetect keyboard sd-vconsole block sd-encrypt lvm2 filesystems"),
			strings.Fields("base systemd autodetect keyboard sd-vconsole block sd-encrypt lvm2 filesystems"),
			strings.Fields("base udev autodetect keyboard keymap consolefont block encrypt lvm2 filesystems")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := CheckHooks(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.written, h.Written); diff != "" {
				t.Errorf("Written (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.want, h.Names()); diff != "" {
				t.Errorf("Names (-want +got):\n%s", diff)
			}
		})
	}
	_, err := CheckHooks([]string{"base", "resume", "udev", "shutdown", "resume"})
	var ue *UnknownHookError
	if !errors.As(err, &ue) || !cmp.Equal(ue.Names, []string{"resume", "shutdown"}) {
		t.Fatalf("err = %v, want one UnknownHookError for resume and shutdown", err)
	}
	for _, k := range []string{"base", "udev", "net", "nbd", "encrypt", "filesystems", "usbinput", "keymap", "systemd"} {
		if !strings.Contains(err.Error(), k) {
			t.Errorf("%q does not list %s", err, k)
		}
	}
}

// FuzzReadConfig feeds arbitrary config files (user input): no panic, and every word read
// is free of whitespace and quotes.
func FuzzReadConfig(f *testing.F) {
	f.Add("HOOKS=(base udev\n net)\nMODULES=(a # c\n b)\n")
	f.Add(`HOOKS="base udev" COMPRESSION='zstd'`)
	f.Add("FILES=(\n")
	f.Add("HOOKS=(a))\nHOOKS=b#c")
	f.Fuzz(func(t *testing.T, conf string) {
		cfg, err := ReadConfig(strings.NewReader(conf))
		if err != nil {
			return
		}
		for _, w := range slices.Concat(cfg.Hooks, cfg.Modules, cfg.Binaries, cfg.Files) {
			if strings.ContainsAny(w, " \t\n") {
				t.Errorf("word %q contains whitespace", w)
			}
		}
	})
}

// FuzzParseHooks feeds arbitrary --hooks values: no panic, and no empty or blank names.
func FuzzParseHooks(f *testing.F) {
	f.Add("base udev net")
	f.Add(`HOOKS="base udev"`)
	f.Add("HOOKS=(a,b)")
	f.Fuzz(func(t *testing.T, s string) {
		hooks, err := ParseHooks(s)
		if err != nil {
			return
		}
		for _, h := range hooks {
			if strings.TrimSpace(h) == "" || strings.ContainsAny(h, " \t\n,") {
				t.Errorf("hook name %q", h)
			}
		}
	})
}
