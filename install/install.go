package install

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/initramfs"
	"github.com/nbdroot/nbdroot/netboot"
)

// BuildFunc builds one initramfs from `nbdroot initramfs` arguments. The caller parses them
// with the command's own flags, so a configuration line means what the same option means
// on the command line.
type BuildFunc func(args []string) (*initramfs.Summary, error)

// Installer installs nbdroot into the root file system at Root and keeps its kernels'
// initramfs images in step with the kernels installed there.
type Installer struct {
	// Root is the client's root directory ("/" inside a running client).
	Root string
	// DryRun reports what would be done and changes nothing.
	DryRun bool
	// Bin and Init are this machine's nbdroot and nbdroot-init, which Install copies into
	// the root. Only Install needs them.
	Bin, Init string
	// Build builds an initramfs.
	Build BuildFunc
	// Known tells whether a name is an option of `nbdroot initramfs`, to check the
	// configuration.
	Known func(name string) bool
}

// layout is where a client root gets nbdroot's files: where its distribution's packages
// put theirs.
var layout = Layout{Prefix: DefaultPrefix}

// Install puts nbdroot into the root: the binaries, the kernel hooks of the package
// managers the root uses, the hooks' configuration (created once, then the
// administrator's), and the initramfs of every kernel installed there; an initramfs whose
// kernel is gone is removed. Files already as they should be are left alone, so a second
// run changes nothing. A kernel whose build fails does not stop the others; the error
// names each.
func (in *Installer) Install() (*Report, error) {
	r, rep, err := in.open()
	if err != nil {
		return rep, err
	}
	defer r.Close()
	if err := r.checkArch(in.Bin, in.Init); err != nil {
		return rep, err
	}
	fams := r.families()
	for _, f := range layout.Files(in.Bin, in.Init) {
		if f.Family != "" && !fams[f.Family] {
			rep.add(Skipped, f.Path, f.What, fmt.Sprintf("no %s in this root (no %s)", f.Family, evidence[f.Family]))
			continue
		}
		if err := in.place(r, rep, f); err != nil {
			return rep, err
		}
	}
	conf, err := in.readConf(r, rep, true)
	if err != nil {
		return rep, err
	}
	kernels, notes, err := r.kernels()
	if err != nil {
		return rep, err
	}
	rep.Notes = append(rep.Notes, notes...)
	var errs []error
	names := map[string]bool{}
	for _, k := range kernels {
		names[k.Name] = true
		if err := in.build(r, rep, conf, k); err != nil {
			rep.add(Failed, imageFile(k.Name), "initramfs for kernel "+k.Release, err.Error())
			errs = append(errs, err)
		}
	}
	if err := in.removeOrphans(r, rep, names); err != nil {
		errs = append(errs, err)
	}
	rep.boots(r)
	return rep, errors.Join(errs...)
}

// AddKernel builds the initramfs of kernel release (what the hooks run when a kernel is
// installed). In a root without the hooks' configuration — a server with the package
// installed — it does nothing and says so.
func (in *Installer) AddKernel(release string) (*Report, error) {
	r, rep, err := in.open()
	if err != nil {
		return rep, err
	}
	defer r.Close()
	conf, err := in.readConf(r, rep, false)
	if conf == nil || err != nil {
		return rep, err
	}
	k, err := r.kernel(release)
	if err != nil {
		return rep, err
	}
	err = in.build(r, rep, conf, k)
	rep.boots(r)
	return rep, err
}

// RemoveKernel removes the initramfs of kernel release (what the hooks run when a kernel is
// removed), and the kernel's copy in /boot when it is one nbdroot or mkinitcpio made from
// the modules directory (Arch: the package's files go, the copy would stay).
func (in *Installer) RemoveKernel(release string) (*Report, error) {
	r, rep, err := in.open()
	if err != nil {
		return rep, err
	}
	defer r.Close()
	if err := checkRelease(release); err != nil {
		return rep, err
	}
	if conf, err := in.readConf(r, rep, false); conf == nil || err != nil {
		return rep, err
	}
	name, err := r.bootName(release)
	if err != nil {
		return rep, err
	}
	what := "initramfs for kernel " + release
	if !r.exists(imageFile(name)) {
		rep.add(Unchanged, imageFile(name), what, "not there")
	} else if err := in.removeFile(r, rep, imageFile(name), what, "its kernel is removed"); err != nil {
		return rep, err
	}
	shipped := path.Join(ModulesDir, release, "vmlinuz")
	if r.exists(shipped) && r.exists(kernelFile(name)) {
		a, errA := r.read(shipped, netboot.MaxBootFile)
		b, errB := r.read(kernelFile(name), netboot.MaxBootFile)
		if errA == nil && errB == nil && bytes.Equal(a, b) {
			if err := in.removeFile(r, rep, kernelFile(name), "kernel "+release, "a copy of "+shipped+", which goes with its package"); err != nil {
				return rep, err
			}
		}
	}
	rep.boots(r)
	return rep, nil
}

// Stage writes the files of a package of nbdroot below destdir for prefix, as `make
// install` and `make deb` need them: the binaries and every package manager's hooks, but
// not the hooks' configuration, whose presence makes a machine a client (a package is also
// installed on servers). destdir need not be a root.
func Stage(destdir, prefix, bin, init string, dryRun bool) (*Report, error) {
	if err := os.MkdirAll(destdir, 0o755); err != nil {
		return nil, fmt.Errorf("--destdir: %w", err)
	}
	fsys, err := os.OpenRoot(destdir)
	if err != nil {
		return nil, fmt.Errorf("--destdir: %w", err)
	}
	r := &root{dir: destdir, fs: fsys}
	defer r.Close()
	rep := &Report{Root: destdir, DryRun: dryRun, Staged: true}
	in := &Installer{DryRun: dryRun}
	for _, f := range (Layout{Prefix: prefix}).Files(bin, init) {
		if f.Config {
			continue
		}
		if err := in.place(r, rep, f); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// open opens and checks the root and starts the report.
func (in *Installer) open() (*root, *Report, error) {
	r, system, err := openRoot(in.Root)
	rep := &Report{Root: in.Root, System: system, DryRun: in.DryRun}
	return r, rep, err
}

// families are the package managers the root uses.
func (r *root) families() map[Family]bool {
	m := map[Family]bool{}
	for f, p := range evidence {
		m[f] = r.exists(p)
	}
	return m
}

// place installs one file, unless it is already there as it should be (or, for the
// administrator's configuration, there at all).
func (in *Installer) place(r *root, rep *Report, f File) error {
	content := f.Content
	if f.Source != "" {
		b, err := os.ReadFile(f.Source)
		if err != nil {
			return fmt.Errorf("%s: %w", f.What, err)
		}
		content = b
	} else if content == nil {
		return fmt.Errorf("%s: no file to copy to %s", f.What, f.Path)
	}
	existed := r.exists(f.Path)
	switch {
	case f.Config && existed:
		rep.add(Kept, f.Path, f.What, "")
		return nil
	case r.same(f.Path, content, f.Mode):
		rep.add(Unchanged, f.Path, f.What, "")
		return nil
	}
	action := Installed
	if existed {
		action = Updated
	}
	if !in.DryRun {
		if err := r.write(f.Path, content, f.Mode); err != nil {
			return err
		}
	}
	note := ""
	if f.Source != "" {
		note = size(int64(len(content)))
	}
	rep.add(action, f.Path, f.What, note)
	return nil
}

// readConf reads the hooks' configuration. Without one, Install (install true) uses the
// one it has just written (or, in a dry run, would write); the hooks report that the root
// is not a client and get nil.
func (in *Installer) readConf(r *root, rep *Report, install bool) (*Conf, error) {
	b, err := r.read(ConfPath, maxConf)
	switch {
	case errors.Is(err, fs.ErrNotExist) && install:
		b = layout.render("initramfs.conf")
	case errors.Is(err, fs.ErrNotExist):
		rep.add(Skipped, ConfPath, "the hooks' configuration",
			"not there: this root is not an nbdroot client, nothing to do (nbdroot install --root DIR makes it one)")
		return nil, nil
	case err != nil:
		return nil, err
	}
	known := in.Known
	if known == nil {
		known = func(string) bool { return true }
	}
	return ParseConf(bytes.NewReader(b), r.host(ConfPath), known)
}

// kernel is a kernel installed in a root.
type kernel struct {
	// Release is its modules directory's name: the kernel's `uname -r`.
	Release string
	// Name is its name in /boot: vmlinuz-NAME, nbdroot.img-NAME. The release, or on Arch
	// the package's name (pkgbase), which is what mkinitcpio names /boot/vmlinuz-linux by.
	Name string
	// CopyFrom is set when /boot has no vmlinuz-NAME but the modules directory has the
	// kernel (Arch without mkinitcpio, Fedora): it is copied to /boot.
	CopyFrom string
}

// checkRelease refuses a kernel release that is not a plain directory name.
func checkRelease(release string) error {
	if release == "" || release == "." || release == ".." || strings.ContainsAny(release, "/\x00") {
		return fmt.Errorf("kernel release %q is not a directory name of %s", release, ModulesDir)
	}
	return nil
}

// bootName is the name a kernel's files have in /boot: its package's pkgbase when the
// modules directory has one (Arch), else the release.
func (r *root) bootName(release string) (string, error) {
	b, err := r.read(path.Join(ModulesDir, release, "pkgbase"), 256)
	if err != nil {
		return release, nil
	}
	name := strings.TrimSpace(string(b))
	if err := checkRelease(name); err != nil {
		return "", fmt.Errorf("%s: %w", path.Join(ModulesDir, release, "pkgbase"), err)
	}
	return name, nil
}

// kernel finds kernel release in the root: its modules, and its image in /boot or in the
// modules directory.
func (r *root) kernel(release string) (kernel, error) {
	if err := checkRelease(release); err != nil {
		return kernel{}, err
	}
	mods := path.Join(ModulesDir, release)
	if st, err := r.fs.Stat(rel(mods)); err != nil || !st.IsDir() {
		return kernel{}, fmt.Errorf("kernel %s: no modules directory %s", release, mods)
	}
	name, err := r.bootName(release)
	if err != nil {
		return kernel{}, err
	}
	k := kernel{Release: release, Name: name}
	if r.exists(kernelFile(name)) {
		return k, nil
	}
	if shipped := path.Join(mods, "vmlinuz"); r.exists(shipped) {
		k.CopyFrom = shipped
		return k, nil
	}
	return k, fmt.Errorf("kernel %s: no kernel image (neither %s nor %s)", release, kernelFile(name), path.Join(mods, "vmlinuz"))
}

// kernels lists the kernels installed in the root, by their modules directories; notes
// say which directories were passed over (modules without a kernel: what a removed
// kernel's package, or DKMS, leaves behind).
func (r *root) kernels() ([]kernel, []string, error) {
	ents, err := fs.ReadDir(r.fs.FS(), rel(ModulesDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, []string{ModulesDir + ": no kernel installed"}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var ks []kernel
	var notes []string
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		k, err := r.kernel(e.Name())
		if err != nil {
			notes = append(notes, err.Error()+": skipped")
			continue
		}
		ks = append(ks, k)
	}
	slices.SortFunc(ks, func(a, b kernel) int { return netboot.CompareVersions(a.Release, b.Release) })
	return ks, notes, nil
}

// build makes /boot/nbdroot.img-NAME for k: the builder writes a temporary image beside it,
// which replaces the old one only when it differs (the builder is reproducible, so an
// unchanged kernel and configuration give the same bytes).
func (in *Installer) build(r *root, rep *Report, conf *Conf, k kernel) error {
	if k.CopyFrom != "" {
		b, err := r.read(k.CopyFrom, netboot.MaxBootFile)
		if err != nil {
			return err
		}
		if err := in.place(r, rep, File{Path: kernelFile(k.Name), Mode: 0o644, Content: b,
			What: "kernel " + k.Release + ", from " + k.CopyFrom}); err != nil {
			return err
		}
	}
	final := imageFile(k.Name)
	what := "initramfs for kernel " + k.Release
	args := append(conf.Args(r.dir), "--root="+r.dir, "--kver="+k.Release)
	if in.DryRun {
		rep.add(Built, final, what, "nbdroot initramfs "+shellWords(append(args, "-o="+r.host(final))))
		return nil
	}
	tmp := path.Join(BootDir, ".nbdroot-install."+path.Base(final))
	start := time.Now()
	sum, err := in.Build(append(args, "-o="+r.host(tmp)))
	if err != nil {
		r.remove(tmp)
		return fmt.Errorf("initramfs for kernel %s: %w", k.Release, err)
	}
	took := time.Since(start)
	for _, w := range sum.Warnings {
		rep.Warnings = append(rep.Warnings, fmt.Sprintf("%s: %s", final, w))
	}
	img, err := r.read(tmp, netboot.MaxBootFile)
	if err != nil {
		r.remove(tmp)
		return err
	}
	if r.same(final, img, 0o644) {
		r.remove(tmp)
		rep.add(Unchanged, final, what, "")
		return nil
	}
	action := Built
	if r.exists(final) {
		action = Updated
	}
	if err := r.commit(tmp, final); err != nil {
		return err
	}
	rep.add(action, final, what, fmt.Sprintf("%s, built in %.1fs", size(int64(len(img))), took.Seconds()))
	return nil
}

// commit makes the complete file tmp durable and renames it over final.
func (r *root) commit(tmp, final string) error {
	f, err := r.fs.OpenFile(rel(tmp), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Chmod(0o644)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.fs.Rename(rel(tmp), rel(final))
	}
	if err != nil {
		r.remove(tmp)
		return fmt.Errorf("%s: %w", final, err)
	}
	return r.syncDir(rel(path.Dir(final)))
}

// removeOrphans removes the images in /boot whose kernel is no longer installed (names
// holds the installed kernels' names): `nbdroot serve` would not offer them anyway
// (no vmlinuz beside them), but they would stay forever.
func (in *Installer) removeOrphans(r *root, rep *Report, names map[string]bool) error {
	ents, err := fs.ReadDir(r.fs.FS(), rel(BootDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		name, ok := strings.CutPrefix(e.Name(), netboot.InitrdPrefix)
		if !ok || names[name] || !e.Type().IsRegular() {
			continue
		}
		if err := in.removeFile(r, rep, path.Join(BootDir, e.Name()), "initramfs for kernel "+name, "no such kernel is installed"); err != nil {
			return err
		}
	}
	return nil
}

// removeFile removes p and reports why.
func (in *Installer) removeFile(r *root, rep *Report, p, what, why string) error {
	if !in.DryRun {
		if err := r.remove(p); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	rep.add(Removed, p, what, why)
	return nil
}

// shellWords joins args as a shell would read them back: words with characters a shell
// treats specially are single-quoted.
func shellWords(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if a == "" || strings.IndexFunc(a, func(c rune) bool {
			return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_.,:/=+@%", c))
		}) >= 0 {
			out[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(out, " ")
}
