package initramfs

import (
	"bufio"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// binPath are the directories a BINARIES name without a '/' is looked up in, inside the
// root (mkinitcpio uses its PATH, `type -P`).
var binPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// maxSymlinkHops bounds symlink resolution inside a root, as the kernel's 40 (ELOOP).
const maxSymlinkHops = 40

// rootFS resolves paths inside a root tree the way the kernel resolves them after chroot:
// absolute symlink targets start at the root, and ".." never leaves it. "/" is this machine.
type rootFS struct {
	root string
}

// host returns the path on this machine of the clean path p inside the root.
func (r rootFS) host(p string) string { return filepath.Join(r.root, filepath.FromSlash(p)) }

// resolve follows every symlink of p inside the root and returns the resolved path (inside
// the root) and its file info.
func (r rootFS) resolve(p string) (string, fs.FileInfo, error) {
	parts := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	cur := "/"
	hops := 0
	for i := 0; i < len(parts); i++ {
		if parts[i] == "" || parts[i] == "." {
			continue
		}
		next := path.Join(cur, parts[i])
		st, err := os.Lstat(r.host(next))
		if err != nil {
			return "", nil, err
		}
		if st.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > maxSymlinkHops {
			return "", nil, fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(r.host(next))
		if err != nil {
			return "", nil, err
		}
		rest := parts[i+1:]
		if !path.IsAbs(target) {
			target = path.Join(cur, target)
		}
		parts = append(strings.Split(strings.Trim(path.Clean(target), "/"), "/"), rest...)
		cur, i = "/", -1
	}
	st, err := os.Stat(r.host(cur))
	if err != nil {
		return "", nil, err
	}
	return cur, st, nil
}

// regular returns the resolved path of a regular file at p inside the root, or an error.
func (r rootFS) regular(p string) (string, bool) {
	res, st, err := r.resolve(p)
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	return res, true
}

// binaryClosure is what adding BINARIES puts into the image: image path → resolved path
// inside the root.
type binaryClosure struct {
	r     rootFS
	arch  Arch
	files map[string]string
	// sonames are the shared object names of what is added: a need the loader has already
	// loaded by that name (libc's need of the interpreter) is satisfied by it.
	sonames map[string]bool
	// libDirs are the directories shared libraries are searched in, after an object's own
	// RPATH/RUNPATH: the root's ld.so.conf, then the loader's system directories.
	libDirs []string
}

// newBinaryClosure prepares the library search of the root for arch.
func newBinaryClosure(root string, arch Arch) *binaryClosure {
	c := &binaryClosure{r: rootFS{root}, arch: arch, files: map[string]string{}, sonames: map[string]bool{}}
	seen := map[string]bool{}
	add := func(d string) {
		if d = path.Clean(d); path.IsAbs(d) && !seen[d] {
			seen[d] = true
			c.libDirs = append(c.libDirs, d)
		}
	}
	for _, d := range c.ldSoConf("/etc/ld.so.conf", 0) {
		add(d)
	}
	// glibc's trusted directories; the 64-bit ones first where they exist (Fedora, SUSE).
	defaults := []string{"/lib", "/usr/lib"}
	if arch.Class == elf.ELFCLASS64 {
		defaults = append([]string{"/lib64", "/usr/lib64"}, defaults...)
	}
	for _, d := range defaults {
		add(d)
	}
	return c
}

// ldSoConf reads the library directories an ld.so.conf of the root lists, following its
// include lines (globs, relative to the file's directory when not absolute).
func (c *binaryClosure) ldSoConf(p string, depth int) []string {
	if depth > 8 {
		return nil
	}
	res, ok := c.r.regular(p)
	if !ok {
		return nil
	}
	f, err := os.Open(c.r.host(res))
	if err != nil {
		return nil
	}
	defer f.Close()
	var dirs []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if fields[0] == "include" {
			for _, pat := range fields[1:] {
				if !path.IsAbs(pat) {
					pat = path.Join(path.Dir(p), pat)
				}
				matches, _ := filepath.Glob(c.r.host(pat))
				sort.Strings(matches)
				for _, m := range matches {
					rel, err := filepath.Rel(c.r.root, m)
					if err == nil {
						dirs = append(dirs, c.ldSoConf("/"+filepath.ToSlash(rel), depth+1)...)
					}
				}
			}
			continue
		}
		for _, d := range fields {
			dirs = append(dirs, strings.Split(d, ",")...) // old "DIR=TYPE" and comma forms
		}
	}
	return dirs
}

// findProgram returns the path inside the root of a BINARIES entry.
func (c *binaryClosure) findProgram(name string) (string, error) {
	if strings.Contains(name, "/") {
		if !path.IsAbs(name) {
			return "", fmt.Errorf("binary %q: give an absolute path or a name to look up in %s", name, strings.Join(binPath, ":"))
		}
		if _, ok := c.r.regular(name); !ok {
			return "", fmt.Errorf("binary %s: no such file in %s", name, c.r.root)
		}
		return path.Clean(name), nil
	}
	for _, d := range binPath {
		if _, ok := c.r.regular(path.Join(d, name)); ok {
			return path.Join(d, name), nil
		}
	}
	return "", fmt.Errorf("binary %q: not found in %s of %s", name, strings.Join(binPath, ":"), c.r.root)
}

// add puts the program p (a path inside the root) and, when it is a dynamic ELF
// executable, its program interpreter and every shared library it needs, transitively.
func (c *binaryClosure) add(p string) error {
	return c.addObject(p, p, true)
}

// addObject adds the object at image path dst (found at p inside the root) and its needs.
func (c *binaryClosure) addObject(dst, p string, program bool) error {
	if _, done := c.files[dst]; done {
		return nil
	}
	res, ok := c.r.regular(p)
	if !ok {
		return fmt.Errorf("%s: no such file in %s", p, c.r.root)
	}
	c.files[dst] = res
	f, err := elf.Open(c.r.host(res))
	if err != nil {
		var fe *elf.FormatError
		if program && errors.As(err, &fe) {
			return nil // a script or data file: added as it is, as mkinitcpio does
		}
		return fmt.Errorf("%s: %w", p, err)
	}
	defer f.Close()
	if a, ok := archOf(f); !ok || a.Name != c.arch.Name {
		return fmt.Errorf("%s is built for %s, but the image is for %s", p, describe(f), c.arch.Name)
	}
	if !program {
		c.sonames[path.Base(dst)] = true
		names, _ := f.DynString(elf.DT_SONAME)
		for _, n := range names {
			c.sonames[n] = true
		}
	}
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("%s: program interpreter: %w", p, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if !path.IsAbs(interp) {
			return fmt.Errorf("%s: program interpreter %q is not an absolute path", p, interp)
		}
		// The kernel opens the interpreter by this exact path: it goes there.
		if err := c.addObject(path.Clean(interp), interp, false); err != nil {
			return err
		}
	}
	needed, err := f.ImportedLibraries()
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	dirs := c.searchDirs(f, path.Dir(p))
	for _, lib := range needed {
		if strings.Contains(lib, "/") {
			if err := c.addObject(path.Clean(lib), lib, false); err != nil {
				return err
			}
			continue
		}
		if c.sonames[lib] {
			continue
		}
		found := ""
		for _, d := range dirs {
			cand := path.Join(d, lib)
			if c.matches(cand) {
				found = cand
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s needs %s, which is in none of %s of %s", p, lib, strings.Join(dirs, ":"), c.r.root)
		}
		if err := c.addObject(found, found, false); err != nil {
			return err
		}
	}
	return nil
}

// searchDirs are the directories the dynamic loader searches for the needs of f, whose
// directory is origin: DT_RPATH (only without DT_RUNPATH), DT_RUNPATH, then the system's
// (ld.so(8); $ORIGIN expanded).
func (c *binaryClosure) searchDirs(f *elf.File, origin string) []string {
	var own []string
	runpath, _ := f.DynString(elf.DT_RUNPATH)
	rpath, _ := f.DynString(elf.DT_RPATH)
	if len(runpath) == 0 {
		own = append(own, rpath...)
	}
	own = append(own, runpath...)
	var out []string
	for _, list := range own {
		for _, d := range strings.Split(list, ":") {
			d = strings.NewReplacer("$ORIGIN", origin, "${ORIGIN}", origin).Replace(d)
			if path.IsAbs(d) {
				out = append(out, path.Clean(d))
			}
		}
	}
	return append(out, c.libDirs...)
}

// matches reports whether p inside the root is a shared object of the image's
// architecture: a library of another ABI in the same search path (lib32…) is skipped, as
// the loader skips it.
func (c *binaryClosure) matches(p string) bool {
	res, ok := c.r.regular(p)
	if !ok {
		return false
	}
	f, err := elf.Open(c.r.host(res))
	if err != nil {
		return false
	}
	defer f.Close()
	a, ok := archOf(f)
	return ok && a.Name == c.arch.Name
}

// binaries adds BINARIES: each program with its interpreter and libraries, at the paths the
// root has them, from the root (or this machine when the image has no root).
func (img *image) binaries() error {
	if len(img.opts.Binaries) == 0 {
		return nil
	}
	root := img.opts.Root
	if root == "" {
		root = "/"
	}
	c := newBinaryClosure(root, img.arch)
	for _, b := range img.opts.Binaries {
		p, err := c.findProgram(b)
		if err != nil {
			return err
		}
		if err := c.add(p); err != nil {
			return fmt.Errorf("binary %s: %w", b, err)
		}
	}
	dsts := make([]string, 0, len(c.files))
	for d := range c.files {
		dsts = append(dsts, d)
	}
	sort.Strings(dsts)
	for _, dst := range dsts {
		res := c.files[dst]
		st, err := os.Stat(c.r.host(res))
		if err != nil {
			return err
		}
		data, err := os.ReadFile(c.r.host(res))
		if err != nil {
			return err
		}
		if err := img.tree.file(dst, data, uint32(st.Mode().Perm()), "binary "+res); err != nil {
			return err
		}
		img.sum.Binaries = append(img.sum.Binaries, dst)
	}
	return nil
}
