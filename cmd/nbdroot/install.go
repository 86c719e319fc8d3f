package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/nbdroot/nbdroot/initramfs"
	"github.com/nbdroot/nbdroot/install"
)

const installUsage = `usage: nbdroot install --root DIR [--dry-run] [--init PATH]
       nbdroot install --root DIR --kernel VERSION [--dry-run]
       nbdroot install --root DIR --remove-kernel VERSION [--dry-run]
       nbdroot install --destdir DIR [--prefix PREFIX] [--init PATH] [--dry-run]

Put nbdroot into a client's root file system, so that a kernel installed inside the
running client is the one it boots next time, with nothing done on the server.

DIR gets nbdroot and nbdroot-init (/usr/bin, /usr/lib/nbdroot), the kernel hooks of the
package managers it uses (dpkg: /etc/kernel/postinst.d and postrm.d; pacman: alpm hooks;
systemd's kernel-install: a plugin), and their configuration, /etc/nbdroot/initramfs.conf:
the options of 'nbdroot initramfs' (hooks, compression, TLS files), created once and then
yours to edit. Every kernel installed in DIR then gets /boot/nbdroot.img-VERSION beside its
/boot/vmlinuz-VERSION: the pair 'nbdroot serve --http' boots (docs/netboot.md). Files that
are already right are left alone, so running it again changes nothing; run it again after
editing the configuration or upgrading nbdroot. DIR must be a distribution's root (/etc,
/usr, an os-release); "/" is the running system.

--kernel and --remove-kernel are what the hooks run when the package manager installs or
removes a kernel: build, or remove, that kernel's image only. In a root without
/etc/nbdroot/initramfs.conf (a server with the Debian package) they do nothing.

--destdir writes the files of a package below DIR for PREFIX (make install, make deb): the
binaries and every package manager's hooks, without the configuration.

Options:
`

// installFlags are the flags of `nbdroot install`.
type installFlags struct {
	root, kernel, remove, destdir, prefix, init string
	dryRun                                      bool
}

func (f *installFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.root, "root", "", "the client's root `DIR` (\"/\": this system)")
	fs.StringVar(&f.kernel, "kernel", "", "only build the initramfs of kernel `VERSION` (its /lib/modules directory's name)")
	fs.StringVar(&f.remove, "remove-kernel", "", "only remove the initramfs of kernel `VERSION`")
	fs.StringVar(&f.destdir, "destdir", "", "write a package's files below `DIR` instead (make install, make deb)")
	fs.StringVar(&f.prefix, "prefix", "/usr/local", "with --destdir: the installation `PREFIX`")
	fs.StringVar(&f.init, "init", "", "the nbdroot-init binary `PATH` to install (default: beside this program, or in ../lib/nbdroot)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "say what would be done; change nothing")
}

// runInstall is `nbdroot install`.
func runInstall(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("install")
	var f installFlags
	f.register(fs)
	if len(args) > 0 && args[0] == "help" {
		args = []string{"--help"}
	}
	pos, code := parseCommand(fs, args, helpText(fs, installUsage, true), stdout, stderr)
	if code >= 0 {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "nbdroot install: %v\n", err)
		if errors.As(err, new(usageErr)) {
			return 2
		}
		return 1
	}
	if len(pos) > 0 {
		return fail(usagef("unexpected argument %q", pos[0]))
	}
	rep, err := f.run()
	if rep != nil {
		if werr := rep.WriteText(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return fail(err)
	}
	return 0
}

// run checks the flags' combination and does what they ask.
func (f *installFlags) run() (*install.Report, error) {
	switch {
	case f.destdir != "" && (f.root != "" || f.kernel != "" || f.remove != ""):
		return nil, usagef("--destdir writes a package's files: not with --root, --kernel or --remove-kernel")
	case f.destdir != "":
		bin, init, err := f.binaries()
		if err != nil {
			return nil, err
		}
		return install.Stage(f.destdir, f.prefix, bin, init, f.dryRun)
	case f.root == "":
		return nil, usagef("--root DIR is required (the client's root directory; \"/\" for this system)")
	case f.kernel != "" && f.remove != "":
		return nil, usagef("--kernel and --remove-kernel exclude each other")
	}
	in := &install.Installer{Root: f.root, DryRun: f.dryRun, Build: buildInitramfs, Known: initramfsOption}
	switch {
	case f.kernel != "":
		return in.AddKernel(f.kernel)
	case f.remove != "":
		return in.RemoveKernel(f.remove)
	}
	// The root is checked first: its error says more than one about the binaries.
	if _, err := install.CheckRoot(f.root); err != nil {
		return nil, err
	}
	var err error
	if in.Bin, in.Init, err = f.binaries(); err != nil {
		return nil, err
	}
	return in.Install()
}

// binaries are the nbdroot and nbdroot-init an installation copies: this program and the
// init found as `nbdroot initramfs` finds it (or --init).
func (f *installFlags) binaries() (bin, init string, err error) {
	if bin, err = self(); err != nil {
		return "", "", err
	}
	if init = f.init; init == "" {
		var tried []string
		if init, tried = initramfs.DefaultInit(bin, initramfs.HostArch()); init == "" {
			return "", "", usagef("--init PATH is required: no nbdroot-init for %s in %s",
				initramfs.HostArch().Name, strings.Join(tried, ", "))
		}
	}
	return bin, init, nil
}

// self is this program's path: os.Executable, which reads /proc/self/exe, else (a chroot
// without /proc, as dpkg runs maintainer scripts in one) the command as it was called,
// looked up in PATH.
func self() (string, error) {
	exe, err := os.Executable()
	if err == nil {
		return exe, nil
	}
	p, lerr := exec.LookPath(os.Args[0])
	if lerr != nil {
		return "", fmt.Errorf("this program's path: %w (and %q: %v)", err, os.Args[0], lerr)
	}
	return filepath.Abs(p)
}

// buildInitramfs runs the builder as `nbdroot initramfs ARGS` would, with the command's own
// flags: install's configuration lines and the command line mean the same.
func buildInitramfs(args []string) (*initramfs.Summary, error) {
	fs := flag.NewFlagSet("nbdroot initramfs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f initramfsFlags
	f.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	opts, err := f.options()
	if err != nil {
		return nil, err
	}
	return initramfs.Build(opts)
}

// initramfsOption says whether name is a flag of `nbdroot initramfs`.
func initramfsOption(name string) bool {
	fs := flag.NewFlagSet("nbdroot initramfs", flag.ContinueOnError)
	var f initramfsFlags
	f.register(fs)
	return fs.Lookup(name) != nil
}
