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
	// Root is the client's root filesystem tree (--root), when the image is built from one:
	// the keymap (etc/vconsole.conf, Debian's console-setup), modprobe.d for modconf, and
	// the BINARIES and FILES of a mkinitcpio.conf are read from it. "" when only a modules
	// directory is given: BINARIES then come from this machine, as mkinitcpio takes them.
	Root string
	// Arch is the architecture the image is for; zero means that of the kernel modules
	// (else this machine's). The init must be built for it.
	Arch Arch
	// Init is the nbdroot-init binary to install as /init; "" looks for it in InitSearchDir
	// (DefaultInit). It must be a static executable of the image's architecture.
	Init string
	// InitSearchDir is where an empty Init is looked for: the directory of the nbdroot
	// program (DIR/nbdroot-init, or DIR/ARCH/nbdroot-init for another architecture).
	InitSearchDir string
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
	// Binaries are programs to add with the shared libraries they need (mkinitcpio's
	// BINARIES): a path, or a name searched in the root's PATH directories.
	Binaries []string
	// AutodetectFrom is a client's module list (lsmod output or /proc/modules) for the
	// autodetect hook; "" leaves nothing out.
	AutodetectFrom string
	// Keymap is the console keymap for the keymap hook: a keymap file, or a name looked up
	// in the root's keymap directories; "" takes the root's configured keymap.
	Keymap string
	// NICs is the NIC policy ("" = DefaultNICs): a named policy or a comma list of drivers
	// and policies.
	NICs string
	// SysClassNet is where host-only looks for this machine's NICs ("" = /sys/class/net).
	SysClassNet string
	// Firmware is the firmware directory searched for the files modules ask for (firmware=)
	// and for CPU microcode (the microcode hook); "" means lib/firmware of the root the
	// modules directory is in. Firmware files not found are skipped: most drivers work
	// without their optional firmware.
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
	Output string
	KVer   string
	Arch   string
	Hooks  []string
	// HookLines say, for each hook as written, what it does in this image: one line each.
	HookLines   []HookLine
	Compression Compression
	// Init is the init binary installed.
	Init string
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
	// Microcode are the early microcode files in front of the image, with their sizes.
	Microcode []string
	// Binaries are the programs and libraries BINARIES added, by image path.
	Binaries []string
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
// and their index, firmware, extra files, binaries, keymap), the kernel check's warnings,
// then the archive, behind the early microcode archive when there is one.
func build(opts Options, w io.Writer) (*Summary, error) {
	img, err := newImage(opts)
	if err != nil {
		return nil, err
	}
	reqs, err := img.requests()
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
		func() error { return img.modules(cl) },
		img.extras,
		img.addTLS,
		img.binaries,
		img.keymap,
		img.microcode,
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return nil, err
		}
	}
	img.sum.Warnings = append(img.sum.Warnings, kernelWarnings(opts, img.dir, img.sum.Hooks, img.sum.Compression)...)
	img.sum.Warnings = append(img.sum.Warnings, img.hooks.orderWarnings()...)
	img.summarizeHooks()
	if err := img.write(w); err != nil {
		return nil, err
	}
	return img.sum, nil
}

// image is one image being built.
type image struct {
	opts  Options
	hooks *Hooks
	arch  Arch
	dir   *depmod.Dir
	tree  *tree
	sum   *Summary
	// firmware are the firmware files the image's modules name.
	firmware map[string]bool
	// client is the client's module list of autodetect, nil without one.
	client *ClientModules
	// hookReqs are each hook's module requests (by hook name), for the index.
	hookReqs map[string]*hookRequests
	// lines are what the build learnt about a hook for its summary line, by hook name.
	lines map[string]string
	// early is the uncompressed archive in front of the image (microcode), or nil.
	early *tree
}

// hookRequests are the module names (or aliases) one hook asked for.
type hookRequests struct {
	required, optional []string
	// nics are the NIC drivers (NIC policy or autodetect) of a hook that needs the network.
	nics []string
}

// newImage checks opts, opens the modules directory and checks the init binary against the
// image's architecture.
func newImage(opts Options) (*image, error) {
	if opts.ModulesDir == "" {
		return nil, errors.New("no modules directory (--modules or --root)")
	}
	hookNames := opts.Hooks
	if hookNames == nil {
		hookNames = catalog.Default
	}
	hookNames, tlsWarnings, err := prepareTLS(opts, hookNames)
	if err != nil {
		return nil, err
	}
	hooks, err := CheckHooks(hookNames)
	if err != nil {
		return nil, err
	}
	if len(hooks.Specs) == 0 {
		return nil, errors.New("no hooks: an image needs at least the base hook")
	}
	if opts.AutodetectFrom != "" && !hooks.Has("autodetect") {
		return nil, errors.New("--autodetect-from needs the autodetect hook in the hook list (--hooks, or HOOKS of --config)")
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
	img := &image{opts: opts, hooks: hooks, dir: d, tree: newTree(), firmware: map[string]bool{},
		hookReqs: map[string]*hookRequests{}, lines: map[string]string{}}
	img.sum = &Summary{KVer: d.KVer, Compression: comp, Hooks: hooks.Names(), Warnings: tlsWarnings}
	if img.arch, err = img.targetArch(); err != nil {
		return nil, err
	}
	img.sum.Arch = img.arch.Name
	if err := img.findInit(); err != nil {
		return nil, err
	}
	if opts.AutodetectFrom != "" {
		if img.client, err = LoadClientModules(opts.AutodetectFrom); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// targetArch is the image's architecture: --arch, which must agree with the kernel
// modules, else the modules', else this machine's.
func (img *image) targetArch() (Arch, error) {
	mods, ok, err := modulesArch(img.dir)
	if err != nil {
		return Arch{}, err
	}
	want := img.opts.Arch
	switch {
	case want.Name != "" && ok && mods.Name != want.Name:
		return Arch{}, fmt.Errorf("--arch %s, but the modules in %s are built for %s", want.Name, img.dir.Path, mods.Name)
	case want.Name != "":
		return want, nil
	case ok:
		return mods, nil
	}
	return HostArch(), nil
}

// findInit settles the init binary (Init, or the one beside the program for the image's
// architecture) and checks it (CheckInit).
func (img *image) findInit() error {
	if img.opts.Init == "" {
		if img.opts.InitSearchDir == "" {
			return errors.New("no init binary (--init)")
		}
		exe := filepath.Join(img.opts.InitSearchDir, "nbdroot")
		name, find := "nbdroot-init", DefaultInit
		if img.opts.TLS != nil {
			// TLS needs the init built with it (crypto/tls makes /init larger).
			name, find = TLSInitName, DefaultTLSInit
		}
		found, tried := find(exe, img.arch)
		if found == "" {
			return fmt.Errorf("no %s for %s beside this program (looked at %s): give one with --init, or build it (make build; GOARCH=%s CGO_ENABLED=0 go build ./cmd/nbdroot-init)",
				name, img.arch.Name, strings.Join(tried, ", "), img.arch.Name)
		}
		img.opts.Init = found
	}
	if img.opts.TLS != nil {
		if err := initHasTLS(img.opts.Init); err != nil {
			return err
		}
	}
	warns, err := CheckInit(img.opts.Init, img.arch)
	if err != nil {
		return err
	}
	img.sum.Init = img.opts.Init
	img.sum.Warnings = append(img.sum.Warnings, warns...)
	return nil
}

// requests lists the modules to resolve: what each hook asks for — filtered by the
// client's module list for the hooks after autodetect —, the NIC drivers of the NIC policy
// (or the client's), then --add-module. Each hook's requests are kept for the index.
func (img *image) requests() ([]depmod.Request, error) {
	var reqs []depmod.Request
	auto := img.hooks.Index("autodetect")
	var kept, dropped []string
	for i, s := range img.hooks.Specs {
		hr := &hookRequests{}
		img.hookReqs[s.Name] = hr
		by := "hook " + s.Name
		detect := img.client != nil && auto >= 0 && i > auto
		for _, m := range s.Modules {
			hr.required = append(hr.required, m)
			reqs = append(reqs, depmod.Request{Name: m, By: by})
		}
		for _, m := range s.OptionalModules {
			if detect && !img.client.Has(m) {
				dropped = append(dropped, m)
				continue
			}
			hr.optional = append(hr.optional, m)
			reqs = append(reqs, depmod.Request{Name: m, Optional: true, By: by})
		}
		// In the image for the kernel's requests, not in the hook's list of modules to load.
		for _, m := range s.OnDemandModules {
			reqs = append(reqs, depmod.Request{Name: m, Optional: true, By: by + " (on demand)"})
		}
		if detect {
			for _, m := range img.client.inDirs(img.dir, s.AutodetectDirs) {
				if !slices.Contains(hr.optional, m) && !slices.Contains(hr.required, m) {
					hr.optional = append(hr.optional, m)
					reqs = append(reqs, depmod.Request{Name: m, Optional: true, By: "autodetect (hook " + s.Name + ")"})
					kept = append(kept, m)
				}
			}
		}
		if s.NICs {
			nics, err := img.nicRequests(detect)
			if err != nil {
				return nil, err
			}
			for _, r := range nics {
				hr.nics = append(hr.nics, r.Name)
				if detect {
					kept = append(kept, r.Name)
				}
			}
			reqs = append(reqs, nics...)
		}
	}
	for _, m := range img.opts.AddModules {
		reqs = append(reqs, depmod.Request{Name: m, By: "--add-module"})
	}
	if auto >= 0 {
		img.lines["autodetect"] = img.autodetectLine(kept, dropped)
	}
	return reqs, nil
}

// nicRequests are the network drivers of a hook that needs the network: the NIC policy's,
// or with autodetect the client's Ethernet drivers (plus drivers --nics names explicitly:
// those are always wanted).
func (img *image) nicRequests(detect bool) ([]depmod.Request, error) {
	if !detect {
		sysNet := img.opts.SysClassNet
		if sysNet == "" {
			sysNet = "/sys/class/net"
		}
		reqs, notes, err := nicRequests(img.opts.NICs, img.dir, sysNet)
		img.sum.Warnings = append(img.sum.Warnings, notes...)
		return reqs, err
	}
	var reqs []depmod.Request
	for _, n := range universalNICs(img.dir) {
		if img.client.Has(n) {
			reqs = append(reqs, depmod.Request{Name: n, Optional: true, By: "autodetect (the client's NIC)"})
		}
	}
	for _, item := range strings.Split(img.opts.NICs, ",") {
		item = strings.TrimSpace(item)
		switch item {
		case "", NICsCommon, NICsUniversal, NICsHostOnly:
		default:
			reqs = append(reqs, depmod.Request{Name: item, By: "--nics"})
		}
	}
	if len(reqs) == 0 {
		img.sum.Warnings = append(img.sum.Warnings, fmt.Sprintf("autodetect: the client's module list (%s) has no Ethernet driver of this kernel: the net hook will find no NIC unless its driver is built in (add it with --nics DRIVER)", img.client.Source))
	}
	return reqs, nil
}

// autodetectLine is the summary line of autodetect.
func (img *image) autodetectLine(kept, dropped []string) string {
	if img.client == nil {
		return "nothing left out: no client module list (--autodetect-from FILE, captured on the client with lsmod); the build host's hardware says nothing about the clients"
	}
	line := fmt.Sprintf("the client's drivers from %s (%d modules listed", img.client.Source, len(img.client.Names))
	if n := img.client.missingFrom(img.dir); n > 0 {
		line += fmt.Sprintf(", %d not in this kernel", n)
	}
	line += fmt.Sprintf("): %d kept", len(kept))
	if len(dropped) > 0 {
		line += fmt.Sprintf(", %d the hooks name left out (%s)", len(dropped), strings.Join(dropped, " "))
	}
	return line
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
func (img *image) modules(cl *depmod.Closure) error {
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
	for _, s := range img.hooks.Specs {
		for _, r := range img.hookReqs[s.Name].nics {
			for _, m := range cl.Resolved[r] {
				if !nicSeen[m] {
					nicSeen[m] = true
					ix.NICs = append(ix.NICs, m)
				}
			}
		}
	}
	sum.NICs = ix.NICs
	if err := img.modconf(ix); err != nil {
		return err
	}
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
	for i, s := range img.hooks.Specs {
		hr := img.hookReqs[s.Name]
		var required, optional []string
		for _, m := range hr.required {
			required = append(required, cl.Resolved[m]...)
		}
		for _, m := range hr.optional {
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

// write writes the tree as a compressed cpio archive to w, behind the early archive
// (microcode) when there is one. The kernel reads early microcode from an uncompressed
// archive at the very start of the initramfs (arch/x86/kernel/cpu/microcode, find_cpio_data)
// and its unpacker goes on from one archive to the next, compressed or not, skipping the
// zero padding between them (init/initramfs.c).
func (img *image) write(w io.Writer) error {
	img.sum.Files = len(img.tree.entries)
	comp := img.sum.Compression
	mtime := img.opts.MTime
	if mtime < 0 {
		mtime = 0
	}
	if img.early != nil {
		if err := img.early.writeCPIO(w, uint64(mtime)); err != nil {
			return fmt.Errorf("early microcode archive: %w", err)
		}
	}
	cw := &countWriter{w: w}
	zw, err := NewWriter(cw, comp)
	if err != nil {
		return err
	}
	aw := &countWriter{w: zw}
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
	fwDir := firmwareDir(opts, d)
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

// firmwareDir is where firmware and microcode are read: opts.Firmware, else lib/firmware of
// the root the modules directory is in (ROOT/lib/modules/VER → ROOT/lib/firmware).
func firmwareDir(opts Options, d *depmod.Dir) string {
	if opts.Firmware != "" {
		return opts.Firmware
	}
	return filepath.Join(filepath.Dir(filepath.Dir(d.Path)), "firmware")
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
