package initramfs

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

// ChrootModules returns ROOT/lib/modules/VER: kver when given, otherwise the only kernel
// release installed there.
func ChrootModules(root, kver string) (string, error) {
	base := filepath.Join(root, strings.TrimPrefix(ModulesRoot, "/"))
	if kver != "" {
		return filepath.Join(base, kver), nil
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		return "", fmt.Errorf("--root: %w", err)
	}
	var vers []string
	for _, e := range ents {
		if e.IsDir() {
			vers = append(vers, e.Name())
		}
	}
	sort.Strings(vers)
	switch len(vers) {
	case 0:
		return "", fmt.Errorf("--root: no kernel under %s", base)
	case 1:
		return filepath.Join(base, vers[0]), nil
	}
	return "", fmt.Errorf("--root: several kernels under %s (%s): choose one with --kver", base, strings.Join(vers, ", "))
}

// LoadConfig reads a mkinitcpio.conf (see ReadConfig).
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := ReadConfig(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Apply adds what a mkinitcpio.conf says to o, the way mkinitcpio reads it under command
// line options: its HOOKS and COMPRESSION where o has none yet, its MODULES, BINARIES and
// FILES before those o already lists. mkinitcpio names the compressor's command: cat means
// none. The config's FILES are the client's: with a root (o.Root, --root) they are read
// inside it, as its BINARIES are.
func (c *Config) Apply(o *Options) {
	if o.Hooks == nil && c.Hooks != nil {
		o.Hooks = c.Hooks
	}
	o.AddModules = append(append([]string(nil), c.Modules...), o.AddModules...)
	o.Binaries = append(append([]string(nil), c.Binaries...), o.Binaries...)
	var files []File
	for _, f := range c.Files {
		src := f
		if o.Root != "" {
			src = filepath.Join(o.Root, f)
		}
		files = append(files, File{Src: src, Dst: f})
	}
	o.Files = append(files, o.Files...)
	if o.Compression == "" && c.Compression != "" {
		comp := c.Compression
		if comp == "cat" {
			comp = "none"
		}
		o.Compression = Compression(comp)
	}
}

// InstalledInit is where an installation puts nbdroot-init, relative to the directory of
// the nbdroot program: PREFIX/bin/nbdroot and PREFIX/lib/nbdroot/nbdroot-init, the FHS's
// place for a program's internal executables (`make install`, the Debian package and
// `nbdroot install` all use it).
const InstalledInit = "../lib/nbdroot/nbdroot-init"

// SourceDateEpoch parses SOURCE_DATE_EPOCH (reproducible-builds.org), the mtime of every
// file of the image: "" is 0; a value the cpio format cannot hold is an error.
func SourceDateEpoch(v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	t, err := strconv.ParseInt(v, 10, 64)
	if err != nil || t < 0 || t > 1<<32-1 {
		return 0, fmt.Errorf("SOURCE_DATE_EPOCH=%q is not a time the cpio format can hold", v)
	}
	return t, nil
}
