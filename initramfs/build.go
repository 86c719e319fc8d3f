package initramfs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// File is an extra file for the image: Src on this machine, Dst in the image (Dst empty
// means the same path as Src).
type File struct {
	Src, Dst string
}

// ParseFile parses the SRC[:DST] form of --file and --keyfile.
func ParseFile(s string) (File, error) {
	src, dst, _ := strings.Cut(s, ":")
	if src == "" {
		return File{}, fmt.Errorf("file %q: empty source", s)
	}
	if dst == "" {
		dst = src
	}
	if !strings.HasPrefix(dst, "/") {
		return File{}, fmt.Errorf("file %q: destination %q is not an absolute path", s, dst)
	}
	return File{Src: src, Dst: dst}, nil
}

// Options describe an image.
type Options struct {
	// ModulesDir is the client kernel's modules directory (/lib/modules/VER, possibly
	// inside a chroot). Required.
	ModulesDir string
	// Init is the nbdroot-init binary to install as /init. Required.
	Init string
	// Hooks are the hooks in boot order; nil means catalog.Default.
	Hooks []string
	// AddModules are extra modules (names or aliases), loaded at the start of the boot
	// with the first hook, like mkinitcpio's MODULES. Each must exist to build the image;
	// at boot a failure to load one is logged, not fatal.
	AddModules []string
	// Files are extra files, copied with their permission bits; a directory is copied
	// with its contents.
	Files []File
	// Keyfiles are files installed with mode 0400 (LUKS keyfiles).
	Keyfiles []File
	// TLS is the client's TLS material (tls.go); nil for none.
	TLS *TLSFiles
	// NICs is the NIC policy ("" = DefaultNICs): a named policy or a comma list of drivers
	// and policies.
	NICs string
	// SysClassNet is where host-only looks for this machine's NICs ("" = /sys/class/net).
	SysClassNet string
	// Firmware is the firmware directory searched for the files modules ask for (firmware=);
	// "" means lib/firmware of the root the modules directory is in. Files not found are
	// skipped: most drivers work without their optional firmware.
	Firmware string
	// Compression of the image ("" = DefaultCompression).
	Compression Compression
	// MTime is the modification time of every file in the image, in seconds since the
	// epoch: 0, or SOURCE_DATE_EPOCH for tools that want a meaningful date.
	MTime int64
	// Output is the image file to write. It is replaced atomically.
	Output string
	// KernelConfig is the client kernel's .config, for the kernel check whose findings
	// become warnings; "" means ROOT/boot/config-VER beside the modules directory, when it
	// exists. Without a config the check still runs on the modules directory alone.
	KernelConfig string
}

// Summary describes a built image.
type Summary struct {
	Output      string
	KVer        string
	Hooks       []string
	Compression Compression
	// Modules are the module names in the image, in dependency order.
	Modules []string
	// ModulesSize is the uncompressed size of the module files.
	ModulesSize int64
	// Builtin are requested modules the kernel has built in.
	Builtin []string
	// NICs are the network drivers of the image.
	NICs []string
	// Firmware are the firmware files included.
	Firmware []string
	// Files counts the entries of the archive (files, links, directories, nodes).
	Files int
	// InitSize is the size of the init binary.
	InitSize int64
	// ArchiveSize is the uncompressed cpio size, ImageSize the size of the image file.
	ArchiveSize, ImageSize int64
	// Skipped are optional modules the kernel does not have.
	Skipped []string
	// Warnings are things the user may want to know (unsatisfied soft dependencies,
	// kernel config findings).
	Warnings []string
}

// Build assembles the image described by opts and writes it to opts.Output.
func Build(opts Options) (*Summary, error) {
	if opts.Output == "" {
		return nil, errors.New("no output file")
	}
	var sum *Summary
	err := writeAtomic(opts.Output, func(w io.Writer) error {
		var err error
		sum, err = build(opts, w)
		return err
	})
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(opts.Output)
	if err != nil {
		return nil, err
	}
	sum.Output = opts.Output
	sum.ImageSize = st.Size()
	return sum, nil
}

// writeAtomic writes a file through a temporary file beside it, renamed into place only
// when everything succeeded: a failed build never leaves half an image where the TFTP
// server would serve it.
func writeAtomic(out string, write func(io.Writer) error) error {
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := write(bw); err != nil {
		tmp.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}

// build assembles the image and writes the compressed archive to w: the hooks' module
// requests resolved against the modules directory, the image's tree (skeleton, modules
// and their index, firmware, extra files), the kernel check's warnings, the archive.
func build(opts Options, w io.Writer) (*Summary, error) {
	img, err := newImage(opts)
	if err != nil {
		return nil, err
	}
	reqs, nicReqs, err := img.requests()
	if err != nil {
		return nil, err
	}
	cl, err := img.dir.Resolve(reqs)
	if err != nil {
		return nil, err
	}
	img.sum.Builtin = cl.Builtin
	img.sum.Warnings = append(img.sum.Warnings, cl.Warnings...)
	for _, r := range cl.Skipped {
		img.sum.Skipped = append(img.sum.Skipped, r.Name)
	}
	steps := []func() error{
		img.skeleton,
		func() error { return img.modules(cl, nicReqs) },
		img.extras,
		img.addTLS,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	img.sum.Warnings = append(img.sum.Warnings, kernelWarnings(opts, img.dir, img.sum.Hooks, img.sum.Compression)...)
	if err := img.write(w); err != nil {
		return nil, err
	}
	return img.sum, nil
}

// image is one image being built.
type image struct {
	opts  Options
	specs []catalog.Spec
	dir   *depmod.Dir
	tree  *tree
	sum   *Summary
	// firmware are the firmware files the image's modules name.
	firmware map[string]bool
}

// newImage checks opts and opens the modules directory.
func newImage(opts Options) (*image, error) {
	if opts.ModulesDir == "" {
		return nil, errors.New("no modules directory (--modules or --root)")
	}
	if opts.Init == "" {
		return nil, errors.New("no init binary (--init)")
	}
	hookNames := opts.Hooks
	if hookNames == nil {
		hookNames = catalog.Default
	}
	hookNames, tlsWarnings, err := prepareTLS(opts, hookNames)
	if err != nil {
		return nil, err
	}
	specs, err := CheckHooks(hookNames)
	if err != nil {
		return nil, err
	}
	if len(specs) == 0 {
		return nil, errors.New("no hooks: an image needs at least the base hook")
	}
	comp := opts.Compression
	if comp == "" {
		comp = DefaultCompression
	}
	if _, err := ParseCompression(string(comp)); err != nil {
		return nil, err
	}
	d, err := depmod.OpenDir(opts.ModulesDir)
	if err != nil {
		return nil, err
	}
	sum := &Summary{KVer: d.KVer, Compression: comp, Warnings: tlsWarnings}
	for _, s := range specs {
		sum.Hooks = append(sum.Hooks, s.Name)
	}
	return &image{opts: opts, specs: specs, dir: d, tree: newTree(), sum: sum, firmware: map[string]bool{}}, nil
}

// requests lists the modules to resolve: what each hook asks for, then the NIC drivers
// (returned apart too, for the index), then --add-module.
func (img *image) requests() (reqs, nicReqs []depmod.Request, err error) {
	needNICs := false
	for _, s := range img.specs {
		for _, m := range s.Modules {
			reqs = append(reqs, depmod.Request{Name: m, By: "hook " + s.Name})
		}
		for _, m := range s.OptionalModules {
			reqs = append(reqs, depmod.Request{Name: m, Optional: true, By: "hook " + s.Name})
		}
		// In the image for the kernel's requests, not in the hook's list of modules to load.
		for _, m := range s.OnDemandModules {
			reqs = append(reqs, depmod.Request{Name: m, Optional: true, By: "hook " + s.Name + " (on demand)"})
		}
		needNICs = needNICs || s.NICs
	}
	if needNICs {
		sysNet := img.opts.SysClassNet
		if sysNet == "" {
			sysNet = "/sys/class/net"
		}
		var notes []string
		if nicReqs, notes, err = nicRequests(img.opts.NICs, img.dir, sysNet); err != nil {
			return nil, nil, err
		}
		img.sum.Warnings = append(img.sum.Warnings, notes...)
		reqs = append(reqs, nicReqs...)
	}
	for _, m := range img.opts.AddModules {
		reqs = append(reqs, depmod.Request{Name: m, By: "--add-module"})
	}
	return reqs, nicReqs, nil
}

// skeleton adds what every image has (layout): the directories, the device nodes, the
// init with its applet links, and the hook list.
func (img *image) skeleton() error {
	t := img.tree
	for _, dir := range Dirs {
		if err := t.dir(dir); err != nil {
			return err
		}
	}
	for _, n := range Nodes {
		if err := t.charDev(n.Path, n.Mode, n.Major, n.Minor, "device node"); err != nil {
			return err
		}
	}
	initData, err := os.ReadFile(img.opts.Init)
	if err != nil {
		return fmt.Errorf("init binary: %w", err)
	}
	img.sum.InitSize = int64(len(initData))
	if err := t.file(InitPath, initData, 0o755, "init "+img.opts.Init); err != nil {
		return err
	}
	for _, a := range Applets {
		if err := t.symlink(a, InitPath, "applet"); err != nil {
			return err
		}
	}
	return t.file(HooksPath, []byte(strings.Join(img.sum.Hooks, "\n")+"\n"), 0o644, "hook list")
}

// modules adds the resolved modules and their boot index. They are uncompressed in the
// image: the image is compressed as a whole, which compresses better than per-file, and
// finit_module needs no decompression flag.
func (img *image) modules(cl *depmod.Closure, nicReqs []depmod.Request) error {
	d, sum := img.dir, img.sum
	modDir := path.Join(ModulesRoot, d.KVer)
	ix := &kmod.Index{KVer: d.KVer, Builtin: cl.Builtin}
	for _, m := range cl.Modules {
		data, err := depmod.ReadModuleFile(filepath.Join(d.Path, filepath.FromSlash(m.File)))
		if err != nil {
			return err
		}
		rel := depmod.UncompressedName(m.File)
		if err := img.tree.file(path.Join(modDir, rel), data, 0o644, "module "+m.Name); err != nil {
			return err
		}
		sum.Modules = append(sum.Modules, m.Name)
		sum.ModulesSize += int64(len(data))
		ix.Modules = append(ix.Modules, kmod.Module{Name: m.Name, Path: rel, Deps: m.Deps, Soft: m.Soft})
		for _, a := range m.Info.Aliases {
			a = kmod.NormalizeAlias(a)
			if strings.ContainsAny(a, "\t\n\r") {
				continue // cannot be written in the index; no real modalias has them
			}
			ix.Aliases = append(ix.Aliases, kmod.Alias{Pattern: a, Module: m.Name})
		}
		for _, fw := range m.Info.Firmware {
			img.firmware[fw] = true
		}
	}
	ix.Hooks = img.hookIndex(cl)
	nicSeen := map[string]bool{}
	for _, r := range nicReqs {
		for _, m := range cl.Resolved[r.Name] {
			if !nicSeen[m] {
				nicSeen[m] = true
				ix.NICs = append(ix.NICs, m)
			}
		}
	}
	sum.NICs = ix.NICs
	var idx strings.Builder
	if _, err := ix.WriteTo(&idx); err != nil {
		return fmt.Errorf("module index: %w", err)
	}
	return img.tree.file(path.Join(modDir, kmod.IndexName), []byte(idx.String()), 0o644, "module index")
}

// hookIndex lists what each hook loads: what its own requests resolved to, with their
// dependencies. The modules of --add-module (mkinitcpio's MODULES) belong to the first
// hook, so they are loaded at the start of the boot as mkinitcpio does; they had to exist
// to build the image, but at boot a failure is logged and the boot goes on, as there.
// Every hook of the image is listed, those without modules too: the init tells "no
// modules" from "not in this image" (kmod.ErrUnknownHook).
func (img *image) hookIndex(cl *depmod.Closure) []kmod.Hook {
	var out []kmod.Hook
	for i, s := range img.specs {
		var required, optional []string
		for _, m := range s.Modules {
			required = append(required, cl.Resolved[m]...)
		}
		for _, m := range s.OptionalModules {
			optional = append(optional, cl.Resolved[m]...)
		}
		if i == 0 {
			for _, m := range img.opts.AddModules {
				optional = append(optional, cl.Resolved[m]...)
			}
		}
		out = append(out, hookModules(s.Name, required, optional))
	}
	return out
}

// extras adds the firmware the modules name, --file and --keyfile.
func (img *image) extras() error {
	if err := addFirmware(img.tree, img.opts, img.dir, img.firmware, img.sum); err != nil {
		return err
	}
	for _, f := range img.opts.Files {
		if err := addHostPath(img.tree, f, false); err != nil {
			return err
		}
	}
	for _, f := range img.opts.Keyfiles {
		if err := addHostPath(img.tree, f, true); err != nil {
			return err
		}
	}
	return nil
}

// write writes the tree as a compressed cpio archive to w.
func (img *image) write(w io.Writer) error {
	img.sum.Files = len(img.tree.entries)
	comp := img.sum.Compression
	cw := &countWriter{w: w}
	zw, err := NewWriter(cw, comp)
	if err != nil {
		return err
	}
	aw := &countWriter{w: zw}
	mtime := img.opts.MTime
	if mtime < 0 {
		mtime = 0
	}
	if err := img.tree.writeCPIO(aw, uint64(mtime)); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("%s: %w", comp, err)
	}
	img.sum.ArchiveSize = aw.n
	return nil
}

// hookModules returns the index entry of one hook: the modules its requests resolved to,
// required and optional (an optional one a required request also gave is required).
func hookModules(hook string, required, optional []string) kmod.Hook {
	h := kmod.Hook{Name: hook}
	for _, m := range required {
		if !slices.Contains(h.Modules, m) {
			h.Modules = append(h.Modules, m)
		}
	}
	for _, m := range optional {
		if !slices.Contains(h.Modules, m) && !slices.Contains(h.Optional, m) {
			h.Optional = append(h.Optional, m)
		}
	}
	return h
}

// addFirmware adds the firmware files the image's modules name, from the firmware
// directory of the modules' root, in any of the forms the kernel's loader reads (plain,
// .xz, .zst with CONFIG_FW_LOADER_COMPRESS).
func addFirmware(t *tree, opts Options, d *depmod.Dir, want map[string]bool, sum *Summary) error {
	fwDir := opts.Firmware
	if fwDir == "" {
		// ROOT/lib/modules/VER → ROOT/lib/firmware
		fwDir = filepath.Join(filepath.Dir(filepath.Dir(d.Path)), "firmware")
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if strings.Contains(n, "..") {
			continue
		}
		for _, suffix := range []string{"", ".xz", ".zst"} {
			src := filepath.Join(fwDir, filepath.FromSlash(n+suffix))
			data, err := os.ReadFile(src)
			if err != nil {
				continue
			}
			if err := t.file(path.Join(FirmwareRoot, n+suffix), data, 0o644, "firmware "+n); err != nil {
				return err
			}
			sum.Firmware = append(sum.Firmware, n+suffix)
			break
		}
	}
	return nil
}

// addHostPath copies a file, symlink or directory tree of this machine into the image.
// Keyfiles get mode 0400 and must be regular files.
func addHostPath(t *tree, f File, keyfile bool) error {
	what := "--file"
	if keyfile {
		what = "--keyfile"
	}
	st, err := os.Lstat(f.Src)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if keyfile {
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s %s: not a regular file", what, f.Src)
		}
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return t.file(f.Dst, data, 0o400, what+" "+f.Src)
	}
	return filepath.WalkDir(f.Src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		rel, _ := filepath.Rel(f.Src, p)
		dst := path.Join(f.Dst, filepath.ToSlash(rel))
		info, err := e.Info()
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		perm := uint32(info.Mode().Perm())
		switch {
		case info.IsDir():
			return t.add(dst, &entry{kind: kindDir, perm: perm, origin: what + " " + p})
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return t.symlink(dst, target, what+" "+p)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			return t.file(dst, data, perm, what+" "+p)
		default:
			return fmt.Errorf("%s %s: not a regular file, directory or symlink", what, p)
		}
	})
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
