package keymap

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// KeymapDirs are where distributions keep kbd keymaps, inside a root: kbd's own tree (Arch,
// Fedora: /usr/share/kbd/keymaps, /usr/lib/kbd/keymaps) and console-data's (Debian:
// /usr/share/keymaps).
var KeymapDirs = []string{"usr/share/kbd/keymaps", "usr/lib/kbd/keymaps", "lib/kbd/keymaps", "usr/share/keymaps"}

// suffixes are the file name endings loadkeys tries for a keymap name, and the
// compressions it reads.
var (
	nameSuffixes = []string{".map", ".kmap", ""}
	compSuffixes = []string{"", ".gz"}
)

// maxFileBytes bounds one keymap file, decompressed.
const maxFileBytes = 1 << 20

// ReadFile reads a keymap file, decompressing .gz (how kbd and console-data ship them).
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var r io.Reader = f
	switch {
	case strings.HasSuffix(path, ".gz"):
		z, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer z.Close()
		r = z
	}
	b, err := io.ReadAll(io.LimitReader(r, maxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes: not a keymap", path, maxFileBytes)
	}
	return b, nil
}

// Find returns the keymap file called name (de, de-latin1, de-latin1.map.gz…) in the keymap
// directories of root, as `loadkeys NAME` looks for it: any subdirectory, with or without
// .map/.kmap and compression suffixes. Several files of that name (qwerty/us and
// azerty/us…) are an error naming them.
func Find(root, name string) (string, error) {
	if strings.Contains(name, "/") || name == "" || name == "." || name == ".." {
		return "", fmt.Errorf("keymap name %q: a name, not a path", name)
	}
	want := map[string]bool{}
	for _, s := range nameSuffixes {
		for _, c := range compSuffixes {
			want[name+s+c] = true
		}
	}
	var found []string
	var searched []string
	for _, d := range KeymapDirs {
		dir := filepath.Join(root, d)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		searched = append(searched, dir)
		filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() && want[e.Name()] && !strings.Contains(p, "/include/") {
				found = append(found, p)
			}
			return nil
		})
		if len(found) > 0 {
			break
		}
	}
	sort.Strings(found)
	switch {
	case len(found) == 1:
		return found[0], nil
	case len(found) > 1:
		return "", fmt.Errorf("keymap %q is ambiguous: %s (give the file)", name, strings.Join(found, ", "))
	case len(searched) == 0:
		return "", fmt.Errorf("keymap %q: no keymap directory in %s (%s): install kbd or console-data in the root, or give a keymap file", name, root, strings.Join(KeymapDirs, ", "))
	}
	return "", fmt.Errorf("keymap %q not found in %s", name, strings.Join(searched, ", "))
}

// DirResolver resolves includes as loadkeys does for a keymap file: near the including
// file (its directory, ../include, ../../include, and the same near the target of a
// symlink), then in the include directories of the keymap trees of root (include/,
// i386/include/, mac/include/), each name tried as is and with .inc, plain or compressed.
func DirResolver(root string) Resolver {
	return func(name, from string) (string, []byte, error) {
		var dirs []string
		if filepath.IsAbs(name) {
			dirs = []string{""}
		} else {
			near := func(p string) {
				d := filepath.Dir(p)
				dirs = append(dirs, d, filepath.Join(d, "../include"), filepath.Join(d, "../../include"))
			}
			near(from)
			if target, err := filepath.EvalSymlinks(from); err == nil && target != from {
				near(target)
			}
			for _, kd := range KeymapDirs {
				for _, sub := range []string{"include", "i386/include", "mac/include"} {
					dirs = append(dirs, filepath.Join(root, kd, sub))
				}
			}
		}
		for _, d := range dirs {
			for _, s := range []string{"", ".inc"} {
				for _, c := range compSuffixes {
					p := filepath.Join(d, name+s+c)
					if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
						continue
					}
					b, err := ReadFile(p)
					return p, b, err
				}
			}
		}
		return "", nil, errors.New("not found near " + from + " nor in the keymap include directories")
	}
}

// Load reads and compiles the keymap file at path, resolving its includes in root.
func Load(root, path string) (*Keymap, error) {
	b, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, b, Options{Resolve: DirResolver(root)})
}
