package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nbdroot/nbdroot/initramfs/layout"
	"github.com/nbdroot/nbdroot/keymap"
)

// keymapSource is where the image's console keymap comes from.
type keymapSource struct {
	// file is the keymap file; why says how it was chosen, for the summary.
	file, why string
}

// findKeymap decides the keymap of the keymap hook: --keymap (a file, or a name looked up
// in the root's keymap trees), else the root's configuration: KEYMAP= of /etc/vconsole.conf
// (systemd: Arch, Fedora…), or Debian's console-setup, whose keymap setupcon compiles from
// /etc/default/keyboard (XKBLAYOUT…) into /etc/console-setup/cached_*.kmap.gz. ok is false
// when nothing names a keymap.
func findKeymap(opts Options) (src keymapSource, ok bool, err error) {
	root := opts.Root
	if k := opts.Keymap; k != "" {
		if st, err := os.Stat(k); err == nil && st.Mode().IsRegular() {
			return keymapSource{file: k, why: "--keymap"}, true, nil
		}
		if strings.Contains(k, "/") {
			return src, false, fmt.Errorf("--keymap %s: no such file", k)
		}
		if root == "" {
			root = "/"
		}
		f, err := keymap.Find(root, k)
		if err != nil {
			return src, false, fmt.Errorf("--keymap: %w", err)
		}
		return keymapSource{file: f, why: "--keymap " + k}, true, nil
	}
	if root == "" {
		return src, false, nil
	}
	vc := filepath.Join(root, "etc/vconsole.conf")
	if name, found, err := shellVar(vc, "KEYMAP"); err != nil {
		return src, false, err
	} else if found && name != "" {
		f, err := keymap.Find(root, name)
		if err != nil {
			return src, false, fmt.Errorf("KEYMAP=%s of %s: %w", name, vc, err)
		}
		return keymapSource{file: f, why: "KEYMAP=" + name + " of /etc/vconsole.conf"}, true, nil
	}
	kb := filepath.Join(root, "etc/default/keyboard")
	layoutName, found, err := shellVar(kb, "XKBLAYOUT")
	if err != nil || !found {
		return src, false, err
	}
	cached, _ := filepath.Glob(filepath.Join(root, "etc/console-setup/cached_*.kmap.gz"))
	sort.Strings(cached)
	if len(cached) > 1 {
		// console-setup keeps one per charmap; the UTF-8 one is what a Unicode console uses.
		var utf8 []string
		for _, c := range cached {
			if strings.Contains(filepath.Base(c), "UTF-8") {
				utf8 = append(utf8, c)
			}
		}
		cached = utf8
	}
	switch len(cached) {
	case 0:
		return src, false, fmt.Errorf("%s sets XKBLAYOUT=%s but the root has no compiled keymap (/etc/console-setup/cached_*.kmap.gz): run `setupcon --save-only` in the root, or give --keymap", kb, layoutName)
	case 1:
		return keymapSource{file: cached[0], why: "XKBLAYOUT=" + layoutName + " of /etc/default/keyboard (console-setup's cached keymap)"}, true, nil
	}
	return src, false, fmt.Errorf("several cached keymaps in the root's /etc/console-setup (%s): give one with --keymap", strings.Join(cached, ", "))
}

// shellVar reads NAME=value from a shell-style configuration file (vconsole.conf,
// /etc/default/keyboard): the last assignment, quotes removed. A missing file is not an
// error.
func shellVar(path, name string) (string, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	val, found := "", false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) != name {
			continue
		}
		v = strings.TrimSpace(v)
		if i := strings.Index(v, " #"); i >= 0 {
			v = v[:i]
		}
		val, found = strings.Trim(v, `"'`), true
	}
	return val, found, sc.Err()
}

// keymap compiles the console keymap into the image for the keymap hook: the init loads it
// into the kernel before the passphrase prompt. Without one the line says so and the
// kernel's default layout (US) stays.
func (img *image) keymap() error {
	if !img.hooks.Has("keymap") {
		if img.opts.Keymap != "" {
			return errors.New("--keymap needs the keymap hook in the hook list (--hooks, HOOKS of --config; sd-vconsole maps to it)")
		}
		return nil
	}
	src, ok, err := findKeymap(img.opts)
	if err != nil {
		return fmt.Errorf("keymap hook: %w", err)
	}
	if !ok {
		img.lines["keymap"] = "no keymap configured (--keymap, or KEYMAP= in ROOT/etc/vconsole.conf, or Debian's console-setup in --root): the kernel's default (US) layout stays"
		return nil
	}
	root := img.opts.Root
	if root == "" {
		root = "/"
	}
	km, err := keymap.Load(root, src.file)
	if err != nil {
		return fmt.Errorf("keymap hook: %w", err)
	}
	km.Name = strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(filepath.Base(src.file), ".gz"), ".map"), ".kmap")
	data, err := km.MarshalBinary()
	if err != nil {
		return fmt.Errorf("keymap hook: %s: %w", src.file, err)
	}
	if err := img.tree.file(layout.KeymapPath, data, 0o644, "keymap "+src.file); err != nil {
		return err
	}
	img.lines["keymap"] = fmt.Sprintf("%s (%s, from %s): %d tables, %d keys, %d compose definitions; loaded before the passphrase prompt",
		km.Name, src.file, src.why, len(km.Tables), len(km.Entries), len(km.Diacrs))
	return nil
}
