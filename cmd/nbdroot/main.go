// Command nbdroot is the host tool of nbdroot: the NBD server, the initramfs builder, the
// cmdline explainer, the kernel config check and a client for running systems.
//
// Each subcommand lives in its own file and keeps its logic in a package; this file only
// dispatches.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/nbdroot/nbdroot/version"
)

// command is one subcommand: its name, a one-line summary and its entry point, which returns
// the process exit status.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "serve exports over NBD (nbd-server compatible)", runServe},
		{"initramfs", "build the initramfs (kernel26.img) for a kernel", runInitramfs},
		{"cmdline", "explain a kernel command line as a boot plan", runCmdline},
		{"kernelcfg", "check that a kernel can boot from NBD", runKernelcfg},
		{"attach", "connect an NBD export to /dev/nbdN on this machine", runAttach},
		{"detach", "disconnect /dev/nbdN", runDetach},
		{"status", "show the NBD devices of this machine", runStatus},
		{"overlays", "list and remove the copy-on-write overlays of nbdroot serve", runOverlays},
		{"install", "put nbdroot and its kernel hooks into a client root", runInstall},
	}
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "usage: nbdroot COMMAND [options]\n\ncommands:\n")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintf(w, "\n'nbdroot COMMAND --help' describes a command's options, 'nbdroot help --man' prints them all\nas the manual page nbdroot(8), 'nbdroot --version' the version.\n")
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "-h", "--help", "help":
		if len(args) == 2 && args[1] == "--man" {
			// nbdroot(8), made of the commands' --help texts (make install, make deb).
			if err := manual().Write(stdout); err != nil {
				fmt.Fprintf(stderr, "nbdroot: %v\n", err)
				return 1
			}
			return 0
		}
		usage(stdout)
		return 0
	case "--version", "version":
		fmt.Fprintln(stdout, version.Line("nbdroot"))
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "nbdroot: unknown command %q\n'nbdroot --help' lists the commands\n", args[0])
	return 2
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
