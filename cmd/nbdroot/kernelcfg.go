package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/kernelcfg"
)

const kernelcfgUsage = `usage: nbdroot kernelcfg check [--config FILE] [--modules DIR] [--hooks "HOOK…"] [--compression C] [--json]
       nbdroot kernelcfg fragment [--hooks "HOOK…"] [--compression C]

check tells whether a kernel has what the initramfs hooks need to boot from NBD: each option
built in, or a module whose file is in the modules dir. Exit status: 0 when nothing needed is
missing, 1 when something is, 2 on a usage error.

fragment prints a Kconfig fragment with those options, for people who build their own kernel.

'nbdroot kernelcfg check --help' and 'nbdroot kernelcfg fragment --help' list the options.
`

// runKernelcfg dispatches "nbdroot kernelcfg check|fragment".
func runKernelcfg(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, kernelcfgUsage)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, kernelcfgUsage)
		return 0
	case "check":
		return kernelcfgCheck(args[1:], stdout, stderr)
	case "fragment":
		return kernelcfgFragment(args[1:], stdout, stderr)
	}
	return usageError(stderr, "kernelcfg", fmt.Errorf("unknown subcommand %q: want check or fragment", args[0]))
}

// hookFlags are the flags check and fragment share.
type hookFlags struct {
	hooks, compression string
}

func (h *hookFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&h.hooks, "hooks", strings.Join(catalog.Default, " "),
		"the `HOOKS` of the image, separated by spaces or commas")
	fs.StringVar(&h.compression, "compression", kernelcfg.DefaultCompression,
		"the initramfs compression `C`: zstd, gzip, xz, lz4 or none")
}

// list splits --hooks; an empty value is an empty list, not the default.
func (h *hookFlags) list() []string {
	return strings.FieldsFunc(h.hooks, func(r rune) bool { return r == ' ' || r == ',' || r == '\t' })
}

// kernelcfgCommand is the flag set of `nbdroot kernelcfg NAME` and its help, made of the
// synopsis and the flags' descriptions.
type kernelcfgCommand struct {
	fs             *flag.FlagSet
	help           func(io.Writer)
	stdout, stderr io.Writer
}

func newFlagSet(name, synopsis string, stdout, stderr io.Writer) *kernelcfgCommand {
	fs := newCommandFlags("kernelcfg " + name)
	return &kernelcfgCommand{fs: fs, stdout: stdout, stderr: stderr,
		help: helpText(fs, "usage: nbdroot kernelcfg "+synopsis+"\n\noptions:\n", true)}
}

// parse parses args; it returns the exit status to return at once, or -1 to go on.
func (k *kernelcfgCommand) parse(args []string) int {
	pos, code := parseCommand(k.fs, args, k.help, k.stdout, k.stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 {
		return usageError(k.stderr, k.fs.Name(), fmt.Errorf("unexpected argument %q", pos[0]))
	}
	return -1
}

func kernelcfgCheck(args []string, stdout, stderr io.Writer) int {
	kc := newFlagSet("check", `check [--config FILE] [--modules DIR] [--hooks "HOOK…"] [--compression C] [--json]

Without --config, the config is looked for beside --modules (ROOT/boot/config-VER for
ROOT/lib/modules/VER), else at /proc/config.gz and /boot/config-$(uname -r). With --modules
and no config, built-in options are judged from modules.builtin and bool options are unknown.`, stdout, stderr)
	fs := kc.fs
	var (
		hf         hookFlags
		configPath string
		modulesDir string
		asJSON     bool
	)
	fs.StringVar(&configPath, "config", "", "the kernel `FILE`: a .config, or gzip like /proc/config.gz")
	fs.StringVar(&modulesDir, "modules", "", "the kernel's modules `DIR` (/lib/modules/VER, also in a chroot); =m options need their module file there")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	hf.register(fs)
	if st := kc.parse(args); st >= 0 {
		return st
	}
	if len(hf.list()) == 0 {
		fmt.Fprintln(stderr, "nbdroot kernelcfg check: --hooks: no hook given")
		return 2
	}

	var r *kernelcfg.Report
	var err error
	if configPath == "" {
		r, err = kernelcfg.CheckKernel(modulesDir, hf.list(), hf.compression)
	} else {
		cfg, lerr := kernelcfg.Load(configPath)
		if lerr != nil {
			fmt.Fprintf(stderr, "nbdroot kernelcfg check: --config: %v\n", lerr)
			return 2
		}
		r, err = kernelcfg.Check(cfg, modulesDir, hf.list(), hf.compression)
	}
	if err != nil {
		var none *kernelcfg.NoConfigError
		if errors.As(err, &none) {
			err = fmt.Errorf("%w: pass --config FILE or --modules DIR", err)
		}
		fmt.Fprintf(stderr, "nbdroot kernelcfg check: %s%v\n", flagOf(err), err)
		return 2
	}
	if asJSON {
		err = r.WriteJSON(stdout)
	} else {
		err = r.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot kernelcfg check: %v\n", err)
		return 1
	}
	if !r.OK() {
		return 1
	}
	return 0
}

// flagOf names the flag behind an unknown hook or compression, as a message prefix; other
// errors name their file themselves.
func flagOf(err error) string {
	var ae *kernelcfg.ArgError
	if !errors.As(err, &ae) {
		return ""
	}
	if ae.Arg == "hook" {
		return "--hooks: "
	}
	return "--" + ae.Arg + ": "
}

func kernelcfgFragment(args []string, stdout, stderr io.Writer) int {
	kc := newFlagSet("fragment", `fragment [--hooks "HOOK…"] [--compression C]

Prints the Kconfig fragment for the hooks and compression given; merge it with
scripts/kconfig/merge_config.sh, then make olddefconfig.`, stdout, stderr)
	fs := kc.fs
	var hf hookFlags
	hf.register(fs)
	if st := kc.parse(args); st >= 0 {
		return st
	}
	if len(hf.list()) == 0 {
		fmt.Fprintln(stderr, "nbdroot kernelcfg fragment: --hooks: no hook given")
		return 2
	}
	s, err := kernelcfg.Fragment(hf.list(), hf.compression)
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot kernelcfg fragment: %s%v\n", flagOf(err), err)
		return 2
	}
	fmt.Fprint(stdout, s)
	return 0
}
