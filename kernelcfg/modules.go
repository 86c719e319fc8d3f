package kernelcfg

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// ModuleName returns the canonical form of a module name or file name: the base name without
// its .ko[.xz|.zst|.gz] suffix, with '-' as '_' (modprobe treats them as the same). Which
// suffixes a module file has is kmod/depmod's to say (depmod.ModuleFileName), for this
// package and the image builder alike.
func ModuleName(s string) string {
	if name, ok := depmod.ModuleFileName(s); ok {
		return name
	}
	return depmod.Normalize(path.Base(filepath.ToSlash(s)))
}

// ModulesDir is what a /lib/modules/VER directory tells about its kernel: which modules are
// built in (modules.builtin) and which module files it holds.
type ModulesDir struct {
	// Dir is the directory as given.
	Dir string
	// builtin holds the canonical names listed in modules.builtin; nil when the file is absent.
	builtin map[string]bool
	// files maps a canonical module name to its file, relative to Dir.
	files map[string]string
}

// OpenModulesDir indexes a /lib/modules/VER directory (one with modules.order or
// modules.builtin): modules.builtin, and every module file under it (kernel/, updates/, extra/…), whatever modules.order says, since a file listed there
// may be absent and only a file on disk can be loaded.
func OpenModulesDir(dir string) (*ModulesDir, error) {
	m, err := openModulesDir(dir)
	if err != nil {
		return nil, fmt.Errorf("modules dir %s: %w", dir, err)
	}
	return m, nil
}

func openModulesDir(dir string) (*ModulesDir, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return nil, errors.Unwrap(err) // the *PathError would name dir a second time
	}
	if !st.IsDir() {
		return nil, errors.New("not a directory")
	}
	m := &ModulesDir{Dir: dir, files: map[string]string{}}
	if m.builtin, err = readModuleList(filepath.Join(dir, "modules.builtin")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	// modules_install writes both lists; requiring one keeps a wrong dir (/tmp, /lib/modules)
	// from being walked and taken for a kernel's.
	if _, err := os.Stat(filepath.Join(dir, "modules.order")); err != nil && m.builtin == nil {
		return nil, errors.New("no modules.order or modules.builtin: not a /lib/modules/VER directory")
	}
	// The dir itself may be a link (the test kernel's "current/modules"), but below it WalkDir
	// follows no symlink, so the build/ and source/ links into kernel headers (and the host's
	// own tree, outside a chroot) are not searched.
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !isModuleFile(d.Name()) {
			return nil
		}
		name := ModuleName(d.Name())
		if _, dup := m.files[name]; !dup {
			rel, err := filepath.Rel(root, p)
			if err != nil {
				return err
			}
			m.files[name] = filepath.ToSlash(rel)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func isModuleFile(name string) bool {
	_, ok := depmod.ModuleFileName(name)
	return ok
}

// readModuleList reads modules.builtin (or modules.order): one module path per line.
func readModuleList(file string) (map[string]bool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	set := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			set[ModuleName(line)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return set, nil
}

// File returns the file of module name (any spelling) relative to the dir, and whether there is
// one.
func (m *ModulesDir) File(name string) (string, bool) {
	f, ok := m.files[ModuleName(name)]
	return f, ok
}

// Builtin reports whether modules.builtin lists module name (any spelling).
func (m *ModulesDir) Builtin(name string) bool { return m.builtin[ModuleName(name)] }

// HasBuiltinList reports whether the dir has a modules.builtin file, without which a module's
// absence proves nothing.
func (m *ModulesDir) HasBuiltinList() bool { return m.builtin != nil }
