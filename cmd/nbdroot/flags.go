package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver"
)

// The conventions every subcommand's flags keep, in one place:
//   - --help (-h, -help) prints the help once, on standard output, and exits 0;
//   - a wrong flag or value gets one line on standard error naming it, and a pointer to
//     --help — never the whole help, which would bury the line that matters;
//   - flags may come before, between or after the positional arguments;
//   - durations are Go durations or bare seconds (nbdserver.ParseDuration).

// newCommandFlags returns the flag set of `nbdroot CMD`: silent, since parseCommand does
// the printing.
func newCommandFlags(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("nbdroot "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseCommand parses args with fs. It returns the positional arguments and -1 to go on,
// or the exit status to return at once (0 after --help, 2 after a wrong flag).
func parseCommand(fs *flag.FlagSet, args []string, help func(io.Writer), stdout, stderr io.Writer) ([]string, int) {
	pos, err := parseInterleaved(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		help(stdout)
		return nil, 0
	}
	if err != nil {
		return nil, usageError(stderr, fs.Name(), err)
	}
	return pos, -1
}

// helpText is a help that prints text, then the flags' own descriptions if withDefaults.
func helpText(fs *flag.FlagSet, text string, withDefaults bool) func(io.Writer) {
	return func(w io.Writer) {
		fmt.Fprint(w, text)
		if withDefaults {
			out := fs.Output()
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(out)
		}
	}
}

// usageError prints a usage problem as one line and a pointer to the help, and returns exit
// status 2. name is the command as typed: "nbdroot attach" (or "attach").
func usageError(stderr io.Writer, name string, err error) int {
	if len(name) < 8 || name[:8] != "nbdroot " {
		name = "nbdroot " + name
	}
	fmt.Fprintf(stderr, "%s: %v\n'%s --help' lists the options\n", name, err, name)
	return 2
}

// parseInterleaved parses flags that may come before, between or after the positional
// arguments (nbdroot attach HOST --export root), and returns the positional ones.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// durationFlag is a duration flag that also takes bare seconds (--drain-timeout 5).
type durationFlag struct {
	d        *time.Duration
	negative bool // a negative duration means something (--drain-timeout -1)
}

// durationVar defines a durationFlag; a negative value is refused unless negative is set.
func durationVar(fs *flag.FlagSet, p *time.Duration, name string, negative bool, usage string) {
	fs.Var(durationFlag{p, negative}, name, usage)
}

// String implements flag.Value.
func (f durationFlag) String() string {
	if f.d == nil || *f.d == 0 {
		return ""
	}
	return f.d.String()
}

// Set implements flag.Value.
func (f durationFlag) Set(s string) error {
	d, err := nbdserver.ParseDuration(s)
	if err != nil {
		return err
	}
	if d < 0 && !f.negative {
		return fmt.Errorf("%q: must not be negative", s)
	}
	*f.d = d
	return nil
}
