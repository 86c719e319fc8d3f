package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/initramfs"
)

// listFlag collects a repeatable flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

const initramfsUsage = `usage: nbdroot initramfs [--modules DIR | --root CHROOT [--kver VER]]
                         [--hooks "HOOK…" | --config mkinitcpio.conf]
                         [--add-module NAME]… [--file SRC[:DST]]… [--keyfile SRC[:DST]]…
                         [--nics common|host-only|universal|LIST] [--compression C]
                         [--init PATH] [--kernel-config FILE] -o OUT

Builds the nbdroot initramfs (kernel26.img) for a client kernel: the nbdroot-init binary as
/init, the kernel modules the hooks need (resolved from each module's .modinfo depends= and
softdep=), a module index for boot, and any extra files. Same inputs give a byte-identical
image (mtimes are 0, or SOURCE_DATE_EPOCH when set).

Options:
`

// runInitramfs is `nbdroot initramfs`.
func runInitramfs(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("nbdroot initramfs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		modules    = fs.String("modules", "", "client kernel's modules directory `DIR` (/lib/modules/VER)")
		root       = fs.String("root", "", "take the modules from the chroot `CHROOT` (CHROOT/lib/modules/VER)")
		kver       = fs.String("kver", "", "kernel release `VER` under --root (default: the only one there)")
		hooksArg   = fs.String("hooks", "", "hooks in boot order: \"base udev net\" or a mkinitcpio line HOOKS=(…) (default: "+strings.Join(catalog.Default, " ")+")")
		config     = fs.String("config", "", "read HOOKS, MODULES, FILES and COMPRESSION from a mkinitcpio.conf `FILE`")
		nics       = fs.String("nics", "", "NIC drivers for the net hook: common, host-only, universal, or a comma `LIST` of drivers and policies (default "+initramfs.DefaultNICs+")")
		comp       = fs.String("compression", "", "image compression: "+strings.Join(initramfs.Compressions(), ", ")+" (default "+string(initramfs.DefaultCompression)+")")
		initBin    = fs.String("init", "", "nbdroot-init binary `PATH` (default: nbdroot-init beside this program)")
		kernelCfg  = fs.String("kernel-config", "", "kernel .config `FILE` for the kernel check (default: ROOT/boot/config-VER beside the modules, when present)")
		firmware   = fs.String("firmware", "", "firmware `DIR` for modules that name firmware (default: ROOT/lib/firmware beside the modules)")
		out        = fs.String("o", "", "output image `FILE` (required)")
		addModules listFlag
		files      listFlag
		keyfiles   listFlag
	)
	fs.Var(&addModules, "add-module", "also include module `NAME` (name or alias) and load it at the start of the boot (repeatable)")
	fs.Var(&files, "file", "add file or directory `SRC[:DST]` (repeatable)")
	fs.Var(&keyfiles, "keyfile", "add a keyfile `SRC[:DST]` with mode 0400 (repeatable)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), initramfsUsage)
		fs.PrintDefaults()
	}
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "nbdroot initramfs: %v\n", err)
		return 1
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "nbdroot initramfs: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	if *out == "" {
		return usageErr("-o OUT is required")
	}
	opts := initramfs.Options{Output: *out, NICs: *nics, Firmware: *firmware}

	switch {
	case *modules != "" && *root != "":
		return usageErr("--modules and --root exclude each other")
	case *modules != "":
		opts.ModulesDir = *modules
	case *root != "":
		dir, err := chrootModules(*root, *kver)
		if err != nil {
			return fail(err)
		}
		opts.ModulesDir = dir
	default:
		return usageErr("--modules DIR or --root CHROOT is required")
	}

	if *config != "" {
		f, err := os.Open(*config)
		if err != nil {
			return fail(err)
		}
		cfg, err := initramfs.ReadConfig(f)
		f.Close()
		if err != nil {
			return fail(fmt.Errorf("%s: %w", *config, err))
		}
		if *hooksArg == "" && cfg.Hooks != nil {
			opts.Hooks = cfg.Hooks
		}
		opts.AddModules = append(opts.AddModules, cfg.Modules...)
		for _, f := range cfg.Files {
			opts.Files = append(opts.Files, initramfs.File{Src: f, Dst: f})
		}
		if *comp == "" && cfg.Compression != "" {
			// mkinitcpio's names are the commands: zstd, gzip, xz, lz4, cat.
			c := cfg.Compression
			if c == "cat" {
				c = "none"
			}
			*comp = c
		}
	}
	if *hooksArg != "" {
		h, err := initramfs.ParseHooks(*hooksArg)
		if err != nil {
			return fail(err)
		}
		opts.Hooks = h
	}
	c, err := initramfs.ParseCompression(*comp)
	if err != nil {
		return usageErr("%v", err)
	}
	opts.Compression = c
	opts.AddModules = append(opts.AddModules, addModules...)
	for _, s := range files {
		f, err := initramfs.ParseFile(s)
		if err != nil {
			return usageErr("--file: %v", err)
		}
		opts.Files = append(opts.Files, f)
	}
	for _, s := range keyfiles {
		f, err := initramfs.ParseFile(s)
		if err != nil {
			return usageErr("--keyfile: %v", err)
		}
		opts.Keyfiles = append(opts.Keyfiles, f)
	}
	opts.Init = *initBin
	if opts.Init == "" {
		exe, err := os.Executable()
		if err == nil {
			cand := filepath.Join(filepath.Dir(exe), "nbdroot-init")
			if _, err := os.Stat(cand); err == nil {
				opts.Init = cand
			}
		}
		if opts.Init == "" {
			return usageErr("--init PATH is required (no nbdroot-init beside this program)")
		}
	}
	if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil || t < 0 || t > 1<<32-1 {
			return usageErr("SOURCE_DATE_EPOCH=%q is not a time the cpio format can hold", v)
		}
		opts.MTime = t
	}
	opts.KernelConfig = *kernelCfg

	sum, err := initramfs.Build(opts)
	if err != nil {
		return fail(err)
	}
	if err := sum.WriteText(stdout); err != nil {
		return fail(err)
	}
	return 0
}

// chrootModules returns CHROOT/lib/modules/VER: kver when given, otherwise the only
// release installed there.
func chrootModules(root, kver string) (string, error) {
	base := filepath.Join(root, "lib", "modules")
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
