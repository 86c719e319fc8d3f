package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
                         [--binary PROGRAM]… [--keymap NAME|FILE] [--autodetect-from FILE]
                         [--nics common|host-only|universal|LIST] [--compression C]
                         [--tls-ca FILE [--tls-cert FILE --tls-key FILE]]
                         [--arch ARCH] [--init PATH] [--kernel-config FILE] -o OUT

Builds the nbdroot initramfs (kernel26.img) for a client kernel: the nbdroot-init binary as
/init, the kernel modules the hooks need (resolved from each module's .modinfo depends= and
softdep=), a module index for boot, and any extra files. Every hook of a stock mkinitcpio.conf
is understood; the summary says what each one does in this image. Same inputs give a
byte-identical image (mtimes are 0, or SOURCE_DATE_EPOCH when set).

Options:
`

// initramfsFlags are the flags of `nbdroot initramfs`.
type initramfsFlags struct {
	modules, root, kver, hooks, config, nics, comp, init, kernelCfg, firmware, out string
	arch, autodetect, keymap                                                       string
	addModules, files, keyfiles, binaries                                          listFlag
	tls                                                                            initramfs.TLSFiles
}

func (f *initramfsFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.modules, "modules", "", "client kernel's modules directory `DIR` (/lib/modules/VER)")
	fs.StringVar(&f.root, "root", "", "take the modules from the chroot `CHROOT` (CHROOT/lib/modules/VER)")
	fs.StringVar(&f.kver, "kver", "", "kernel release `VER` under --root (default: the only one there)")
	fs.StringVar(&f.hooks, "hooks", "", "hooks in boot order: \"base udev net\" or a mkinitcpio line HOOKS=(…) (default: "+strings.Join(catalog.Default, " ")+")")
	fs.StringVar(&f.config, "config", "", "read HOOKS, MODULES, BINARIES, FILES and COMPRESSION from a mkinitcpio.conf `FILE`")
	fs.StringVar(&f.nics, "nics", "", "NIC drivers for the net hook: common, host-only, universal, or a comma `LIST` of drivers and policies (default "+initramfs.DefaultNICs+")")
	fs.StringVar(&f.comp, "compression", "", "image compression: "+strings.Join(initramfs.Compressions(), ", ")+" (default "+string(initramfs.DefaultCompression)+")")
	fs.StringVar(&f.init, "init", "", "nbdroot-init binary `PATH`, a static executable of the image's architecture (default: nbdroot-init or ARCH/nbdroot-init beside this program, else in ../lib/nbdroot as installed; nbdroot-init-tls with --tls-ca)")
	fs.StringVar(&f.arch, "arch", "", "the image's architecture `ARCH` (amd64, arm64…; default: the kernel modules')")
	fs.StringVar(&f.autodetect, "autodetect-from", "", "the client's module list `FILE` (lsmod output or /proc/modules) for the autodetect hook: keep only its drivers")
	fs.StringVar(&f.keymap, "keymap", "", "console keymap for the keymap hook: a keymap `NAME` of the root, or a keymap FILE (default: the root's KEYMAP= / console-setup)")
	fs.Var(&f.binaries, "binary", "add `PROGRAM` (a path, or a name in the root's PATH) with its shared libraries, like BINARIES (repeatable)")
	fs.StringVar(&f.kernelCfg, "kernel-config", "", "kernel .config `FILE` for the kernel check (default: ROOT/boot/config-VER beside the modules, when present)")
	fs.StringVar(&f.firmware, "firmware", "", "firmware `DIR` for modules that name firmware (default: ROOT/lib/firmware beside the modules)")
	fs.StringVar(&f.out, "o", "", "output image `FILE` (required)")
	fs.Var(&f.addModules, "add-module", "also include module `NAME` (name or alias) and load it at the start of the boot (repeatable)")
	fs.Var(&f.files, "file", "add file or directory `SRC[:DST]` (repeatable)")
	fs.Var(&f.keyfiles, "keyfile", "add a keyfile `SRC[:DST]` with mode 0400 (repeatable)")
	fs.StringVar(&f.tls.CA, "tls-ca", "", "TLS: the CA certificates (PEM) the NBD server's certificate must chain to; the init then requires TLS (docs/tls.md)")
	fs.StringVar(&f.tls.Cert, "tls-cert", "", "TLS: the client's certificate (PEM), for servers that ask for one")
	fs.StringVar(&f.tls.Key, "tls-key", "", "TLS: the client's private key (PEM), installed with mode 0400; refused when every user may read it")
}

// usageErr is a wrong use of the command: exit status 2.
type usageErr struct{ err error }

func (e usageErr) Error() string { return e.err.Error() }

func usagef(format string, a ...any) error { return usageErr{fmt.Errorf(format, a...)} }

// options turns the flags into the builder's Options: the command line first, then what a
// mkinitcpio.conf adds, then the defaults. A usageErr is a wrong use of the command.
func (f *initramfsFlags) options() (initramfs.Options, error) {
	if f.out == "" {
		return initramfs.Options{}, usagef("-o OUT is required")
	}
	opts := initramfs.Options{Output: f.out, NICs: f.nics, Firmware: f.firmware, KernelConfig: f.kernelCfg,
		Compression: initramfs.Compression(f.comp), AddModules: f.addModules, Binaries: f.binaries,
		AutodetectFrom: f.autodetect, Keymap: f.keymap, Root: f.root}
	if f.arch != "" {
		a, err := initramfs.ParseArch(f.arch)
		if err != nil {
			return opts, usagef("--arch: %v", err)
		}
		opts.Arch = a
	}
	switch {
	case f.modules != "" && f.root != "":
		return opts, usagef("--modules and --root exclude each other")
	case f.modules != "":
		opts.ModulesDir = f.modules
	case f.root != "":
		dir, err := initramfs.ChrootModules(f.root, f.kver)
		if err != nil {
			return opts, err
		}
		opts.ModulesDir = dir
	default:
		return opts, usagef("--modules DIR or --root CHROOT is required")
	}
	var err error
	if f.hooks != "" {
		if opts.Hooks, err = initramfs.ParseHooks(f.hooks); err != nil {
			return opts, err
		}
	}
	for _, l := range []struct {
		flag  string
		specs []string
		dst   *[]initramfs.File
	}{{"--file", f.files, &opts.Files}, {"--keyfile", f.keyfiles, &opts.Keyfiles}} {
		for _, s := range l.specs {
			file, err := initramfs.ParseFile(s)
			if err != nil {
				return opts, usagef("%s: %v", l.flag, err)
			}
			*l.dst = append(*l.dst, file)
		}
	}
	if f.config != "" {
		cfg, err := initramfs.LoadConfig(f.config)
		if err != nil {
			return opts, err
		}
		cfg.Apply(&opts)
	}
	if opts.Compression, err = initramfs.ParseCompression(string(opts.Compression)); err != nil {
		return opts, usageErr{err}
	}
	if f.tls != (initramfs.TLSFiles{}) {
		tls := f.tls
		opts.TLS = &tls
	}
	if opts.Init = f.init; opts.Init == "" {
		// The builder looks beside this program, for the image's architecture (and for
		// nbdroot-init-tls when the image has TLS files).
		exe, err := os.Executable()
		if err != nil {
			return opts, usagef("--init PATH is required (%v)", err)
		}
		opts.InitSearchDir = filepath.Dir(exe)
	}
	if opts.MTime, err = initramfs.SourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH")); err != nil {
		return opts, usageErr{err}
	}
	return opts, nil
}

// runInitramfs is `nbdroot initramfs`.
func runInitramfs(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("initramfs")
	var f initramfsFlags
	f.register(fs)
	if len(args) > 0 && args[0] == "help" {
		args = []string{"--help"}
	}
	pos, code := parseCommand(fs, args, helpText(fs, initramfsUsage, true), stdout, stderr)
	if code >= 0 {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "nbdroot initramfs: %v\n", err)
		if errors.As(err, new(usageErr)) {
			return 2
		}
		return 1
	}
	if len(pos) > 0 {
		return fail(usagef("unexpected argument %q", pos[0]))
	}
	opts, err := f.options()
	if err != nil {
		return fail(err)
	}
	sum, err := initramfs.Build(opts)
	if err != nil {
		return fail(err)
	}
	if err := sum.WriteText(stdout); err != nil {
		return fail(err)
	}
	return 0
}
