package install

import (
	"bufio"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"unicode"
)

// Conf is the kernel hooks' configuration (ConfPath): options of `nbdroot initramfs`, one
// per line, as NAME VALUE without the dashes. Blank lines and lines starting with # are
// ignored. The file holds what an administrator chooses (hooks, compression, TLS files,
// extra modules); what depends on the kernel — the root, the kernel release, the output —
// is the hooks' and may not be set here.
type Conf struct {
	Options []ConfOption
}

// ConfOption is one line of a Conf.
type ConfOption struct {
	Line        int
	Name, Value string
}

// ConfError is a line of the configuration that cannot be used.
type ConfError struct {
	Path string
	Line int
	Msg  string
}

func (e *ConfError) Error() string { return fmt.Sprintf("%s line %d: %s", e.Path, e.Line, e.Msg) }

// reserved are the builder options the hooks set for each kernel.
var reserved = map[string]string{
	"root":    "the root the kernel is installed in",
	"modules": "the kernel's modules directory",
	"kver":    "the kernel release",
	"o":       "the image, /boot/nbdroot.img-VERSION",
}

// maxConf bounds the configuration file: a few dozen lines in practice.
const maxConf = 1 << 20

// ParseConf reads a configuration. known tells whether a name is an option of `nbdroot
// initramfs` (the caller's flag set): an unknown name is an error naming the line, as is a
// reserved one, a name without a value, and mkinitcpio's NAME=(…) syntax (the file is not
// a shell script; `config FILE` reads a mkinitcpio.conf).
func ParseConf(r io.Reader, path string, known func(name string) bool) (*Conf, error) {
	sc := bufio.NewScanner(io.LimitReader(r, maxConf))
	sc.Buffer(make([]byte, 0, 4096), maxConf)
	c := &Conf{}
	for n := 1; sc.Scan(); n++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		name, value := text, ""
		if i := strings.IndexFunc(text, unicode.IsSpace); i >= 0 {
			name, value = text[:i], strings.TrimSpace(text[i:])
		}
		name = strings.TrimPrefix(name, "--")
		bad := func(format string, a ...any) error {
			return &ConfError{Path: path, Line: n, Msg: fmt.Sprintf(format, a...)}
		}
		switch {
		case strings.Contains(name, "="):
			return nil, bad("%q: write NAME VALUE, e.g. \"hooks base udev net nbd filesystems\" (a mkinitcpio.conf is read with \"config FILE\")", text)
		case reserved[name] != "":
			return nil, bad("%q: the hooks set %s themselves", name, reserved[name])
		case !known(name):
			return nil, bad("%q is not an option of nbdroot initramfs (nbdroot initramfs --help lists them)", name)
		case value == "":
			return nil, bad("%q has no value", name)
		}
		c.Options = append(c.Options, ConfOption{Line: n, Name: name, Value: value})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Args are the options as `nbdroot initramfs` arguments for a build of a root at root on
// this machine: a value that is an absolute path names a file in the root, so it is taken
// below root (for file and keyfile, whose values are SRC[:DST], SRC is; DST is a path in the
// image and stays as written).
func (c *Conf) Args(root string) []string {
	var args []string
	for _, o := range c.Options {
		v := o.Value
		if strings.HasPrefix(v, "/") && filepath.Clean(root) != "/" {
			if src, dst, ok := strings.Cut(v, ":"); ok {
				v = filepath.Join(root, src) + ":" + dst
			} else {
				v = filepath.Join(root, v)
			}
		}
		args = append(args, "--"+o.Name+"="+v)
	}
	return args
}
