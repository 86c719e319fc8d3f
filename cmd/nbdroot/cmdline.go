package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nbdroot/nbdroot/bootparam"
)

// procCmdline is where the running kernel's command line is read when none is given.
const procCmdline = "/proc/cmdline"

const cmdlineUsage = `usage: nbdroot cmdline [--json] [--file PATH] ['CMDLINE']

Explain a kernel command line as the boot plan the nbdroot init would follow: network,
NBD server, export and device, LUKS unlock, root file system, init. Every dialect is read:
nbd_server= (the seed's), dracut root=nbd:/netroot=nbd:, Debian nbdroot=/nbddev=,
mkinitcpio-nbd nbd_host=/nbd_name=/nbd_port=, ip=, BOOTIF=, cryptdevice=, nbdroot.* knobs.
docs/cmdline.md lists every parameter and the precedence between dialects.

CMDLINE is the command line, quoted as one argument (several arguments are joined with
spaces). Without CMDLINE and --file, the running kernel's /proc/cmdline is read.

options:
  --json       print the plan as JSON (keys documented in docs/cmdline.md) instead of text
  --file PATH  read the command line from PATH ("-" for standard input)
  -h, --help   print this help

exit status: 0 the plan is valid; 2 the command line is invalid (one line on stderr names
the parameter, its value and the form expected) or the usage is wrong; 1 the command line
could not be read.

example:
  nbdroot cmdline 'ip=::::::dhcp nbd_server=192.168.0.1:10809 root=/dev/nbd0'
`

// runCmdline implements `nbdroot cmdline`.
func runCmdline(args []string, stdout, stderr io.Writer) int {
	fs := newCommandFlags("cmdline")
	asJSON := fs.Bool("json", false, "")
	file := fs.String("file", "", "")
	pos, code := parseCommand(fs, args, helpText(fs, cmdlineUsage, false), stdout, stderr)
	if code >= 0 {
		return code
	}
	if len(pos) > 0 && *file != "" {
		fmt.Fprintf(stderr, "nbdroot cmdline: give CMDLINE or --file, not both\n")
		return 2
	}

	var cmdline string
	switch {
	case len(pos) > 0:
		cmdline = strings.Join(pos, " ")
	default:
		path := *file
		if path == "" {
			path = procCmdline
			// Said on stderr, so --json output stays clean: explaining the host's own command
			// line is rarely what someone who forgot the argument meant.
			fmt.Fprintf(stderr, "nbdroot cmdline: no CMDLINE given: explaining this machine's %s\n", procCmdline)
		}
		var (
			b   []byte
			err error
		)
		if path == "-" {
			b, err = io.ReadAll(os.Stdin)
		} else {
			b, err = os.ReadFile(path)
		}
		if err != nil {
			fmt.Fprintf(stderr, "nbdroot cmdline: %v\n", err)
			return 1
		}
		cmdline = string(b)
	}

	plan, err := bootparam.Parse(cmdline)
	if err != nil {
		fmt.Fprintf(stderr, "nbdroot cmdline: %v\n", err)
		return 2
	}
	if *asJSON {
		b, err := json.MarshalIndent(plan, "", "  ")
		if err != nil {
			fmt.Fprintf(stderr, "nbdroot cmdline: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return 0
	}
	if err := plan.Explain(stdout); err != nil {
		fmt.Fprintf(stderr, "nbdroot cmdline: %v\n", err)
		return 1
	}
	return 0
}
