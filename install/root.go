package install

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
)

// NotRootError is a --root that is not the root file system of a Linux distribution.
type NotRootError struct {
	Dir    string
	Reason string
}

func (e *NotRootError) Error() string {
	return fmt.Sprintf("--root %s is not a root file system: %s", e.Dir, e.Reason)
}

// root is a client root being installed into. Every access goes through an os.Root: a
// symbolic link in the tree (an absolute one, as in a root copied from elsewhere) cannot
// lead a write onto this machine's own files.
type root struct {
	dir string
	fs  *os.Root
}

// openRoot opens dir and checks that it is a distribution's root: a directory with /etc,
// /usr and an os-release file (os-release(5): /etc/os-release or /usr/lib/os-release).
// It returns the distribution's PRETTY_NAME.
func openRoot(dir string) (*root, string, error) {
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		return nil, "", fmt.Errorf("--root: %w", err)
	case !st.IsDir():
		return nil, "", &NotRootError{dir, "not a directory (an image file is made from the root's directory afterwards: mkfs.ext4 -d DIR IMAGE SIZE)"}
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, "", fmt.Errorf("--root: %w", err)
	}
	rt := &root{dir: dir, fs: r}
	for _, d := range []string{"etc", "usr"} {
		if st, err := r.Stat(d); err != nil || !st.IsDir() {
			r.Close()
			return nil, "", &NotRootError{dir, "it has no /" + d + " directory"}
		}
	}
	var name string
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err := rt.read(p, 64<<10); err == nil {
			name = prettyName(b)
			break
		}
	}
	if name == "" {
		r.Close()
		return nil, "", &NotRootError{dir, "it has no /etc/os-release or /usr/lib/os-release (every distribution's root has one)"}
	}
	return rt, name, nil
}

// CheckRoot says whether dir is a distribution's root file system, as Install and the
// hooks require, and returns the distribution's name (os-release's PRETTY_NAME).
func CheckRoot(dir string) (string, error) {
	r, name, err := openRoot(dir)
	if err != nil {
		return "", err
	}
	r.Close()
	return name, nil
}

// prettyName is os-release's PRETTY_NAME (else NAME), unquoted; "Linux" when neither is
// set, as os-release(5) says.
func prettyName(b []byte) string {
	vals := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if ok && (k == "PRETTY_NAME" || k == "NAME") {
			vals[k] = strings.Trim(v, `"'`)
		}
	}
	for _, k := range []string{"PRETTY_NAME", "NAME"} {
		if vals[k] != "" {
			return vals[k]
		}
	}
	return "Linux"
}

func (r *root) Close() error { return r.fs.Close() }

// rel turns an absolute path in the root into the relative name os.Root takes.
func rel(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

// host is the path of p (absolute in the root) on this machine, for programs that take
// paths: the initramfs builder.
func (r *root) host(p string) string {
	if r.dir == "/" {
		return path.Clean(p)
	}
	return path.Join(r.dir, p)
}

// exists says whether p exists in the root (following links inside it).
func (r *root) exists(p string) bool {
	_, err := r.fs.Stat(rel(p))
	return err == nil
}

// read reads a file of the root, refusing one larger than limit.
func (r *root) read(p string, limit int64) ([]byte, error) {
	f, err := r.fs.Open(rel(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", p, limit)
	}
	return b, nil
}

// same says whether p in the root already holds exactly content with mode.
func (r *root) same(p string, content []byte, mode fs.FileMode) bool {
	st, err := r.fs.Stat(rel(p))
	if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != mode || st.Size() != int64(len(content)) {
		return false
	}
	b, err := r.read(p, st.Size())
	return err == nil && bytes.Equal(b, content)
}

// write puts content at p with mode: a temporary file beside it, synced, then renamed
// over p, and the directory synced. A reader (the package manager, `nbdroot serve` reading
// the image) sees the old file or the new one, never a part; and an existing file is
// replaced, never written through — roots made with `cp -al` share it with other trees.
func (r *root) write(p string, content []byte, mode fs.FileMode) error {
	name := rel(p)
	dir := path.Dir(name)
	if err := r.fs.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp := path.Join(dir, ".nbdroot-install."+path.Base(name))
	r.fs.Remove(tmp) // left over by an interrupted run
	f, err := r.fs.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.fs.Rename(tmp, name)
	}
	if err != nil {
		r.fs.Remove(tmp)
		return fmt.Errorf("%s: %w", p, err)
	}
	return r.syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func (r *root) syncDir(dir string) error {
	d, err := r.fs.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", "/"+dir, err)
	}
	return nil
}

// remove deletes p; a file already gone is not an error.
func (r *root) remove(p string) error {
	if err := r.fs.Remove(rel(p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return r.syncDir(path.Dir(rel(p)))
}

// ArchError is a program for another architecture than the root's.
type ArchError struct {
	Program      string
	Machine      elf.Machine
	RootMachine  elf.Machine
	RootEvidence string
}

func (e *ArchError) Error() string {
	return fmt.Sprintf("%s is built for %v, the root's programs (%s) for %v: install nbdroot built for the root's architecture",
		e.Program, e.Machine, e.RootEvidence, e.RootMachine)
}

// rootShell is the program whose architecture stands for the root's: every root has a shell,
// and the hooks run under it.
const rootShell = "/bin/sh"

// checkArch refuses programs built for another architecture than the root's /bin/sh: in
// the client, the hooks could not run them, and an init of another architecture does not
// boot. Programs that are not ELF files (or a root whose shell is not) are not judged.
func (r *root) checkArch(programs ...string) error {
	f, err := r.fs.Open(rel(rootShell))
	if err != nil {
		return nil
	}
	defer f.Close()
	sh, err := elf.NewFile(f)
	if err != nil {
		return nil
	}
	for _, p := range programs {
		e, err := elf.Open(p)
		if err != nil {
			continue
		}
		m := e.Machine
		e.Close()
		if m != sh.Machine {
			return &ArchError{Program: p, Machine: m, RootMachine: sh.Machine, RootEvidence: rootShell}
		}
	}
	return nil
}
