// Package rescue is nbdroot-init's rescue toolkit: an interactive POSIX shell
// (mvdan.cc/sh's interpreter) and a handful of applets (ls, cat, ip, mount, umount, dmesg,
// modprobe, lsmod, ps, reboot, poweroff…) built into the init binary, so a failed boot can be
// examined and repaired from the console with nothing else in the image.
//
// Applets run in the shell's process (no fork) and are also reachable as /bin/NAME symlinks
// to /init. Nothing here may exit PID 1: the shell returns to its caller on `exit`.
package rescue

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

// IO is an applet's standard streams.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
	// Dir is the shell's working directory; relative paths are resolved against it.
	Dir string
}

// Applet is a built-in command; it returns the exit status.
type Applet func(ctx context.Context, args []string, stdio IO) int

// Shell is an interactive shell on a console.
type Shell struct {
	In       io.Reader
	Out, Err io.Writer
	// Banner is printed once when the shell starts.
	Banner string
	// Prompt defaults to "nbdroot# ".
	Prompt string
	// Applets are the built-in commands; nil means Applets().
	Applets map[string]Applet
	// Env is the shell's environment; nil means a minimal one.
	Env []string
}

// DefaultEnv is the rescue shell's environment.
var DefaultEnv = []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/", "TERM=linux", "PS1=nbdroot# "}

// ErrInputClosed is returned by Run when the input ended without `exit` (the console went
// away): the caller must not start a new shell in a loop.
var ErrInputClosed = errors.New("the console's input ended")

// Run reads commands until `exit` (it returns nil then) or the end of input
// (ErrInputClosed).
func (s *Shell) Run(ctx context.Context) error {
	applets := s.Applets
	if applets == nil {
		applets = Applets()
	}
	env := s.Env
	if env == nil {
		env = DefaultEnv
	}
	prompt := s.Prompt
	if prompt == "" {
		prompt = "nbdroot# "
	}
	// The interpreter copies a stdin that is not an *os.File through a pipe in the
	// background, which would race with our own line reading for the input: give it the
	// console itself when there is one, and no stdin otherwise.
	var stdin io.Reader
	if f, ok := s.In.(*os.File); ok {
		stdin = f
	}
	r, err := interp.New(
		interp.StdIO(stdin, s.Out, s.Err),
		interp.Env(expand.ListEnviron(env...)),
		interp.Interactive(true),
		interp.ExecHandlers(appletHandler(applets)),
	)
	if err != nil {
		return err
	}
	if s.Banner != "" {
		fmt.Fprint(s.Out, s.Banner)
	}
	// Lines are read one at a time and parsed once a statement is complete, so a syntax
	// error costs only the statement it is in, never the rest of the input.
	in := bufio.NewReader(s.In)
	var stmt strings.Builder
	fmt.Fprint(s.Out, prompt)
	for {
		line, err := in.ReadString('\n')
		if line == "" && err != nil {
			if errors.Is(err, io.EOF) {
				return ErrInputClosed
			}
			return err
		}
		stmt.WriteString(line)
		f, perr := syntax.NewParser().Parse(strings.NewReader(stmt.String()), "")
		switch {
		case perr != nil && syntax.IsIncomplete(perr) && err == nil:
			fmt.Fprint(s.Out, "> ")
			continue
		case perr != nil:
			fmt.Fprintln(s.Err, perr)
		default:
			// Statement by statement: running a whole File means "end of script, exit".
			for _, st := range f.Stmts {
				rerr := r.Run(ctx, st)
				if r.Exited() {
					return nil
				}
				if rerr != nil {
					if _, ok := interp.IsExitStatus(rerr); !ok {
						fmt.Fprintln(s.Err, rerr)
					}
				}
				if ctx.Err() != nil {
					return ctx.Err()
				}
			}
		}
		stmt.Reset()
		if err != nil {
			return ErrInputClosed // end of input after a last line without a newline
		}
		fmt.Fprint(s.Out, prompt)
	}
}

// appletHandler runs applets in-process and everything else with the default handler.
func appletHandler(applets map[string]Applet) func(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
	return func(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
		return func(ctx context.Context, args []string) error {
			name := args[0]
			if i := strings.LastIndexByte(name, '/'); i >= 0 && (strings.HasPrefix(name, "/bin/") || strings.HasPrefix(name, "/sbin/")) {
				name = name[i+1:]
			}
			a, ok := applets[name]
			if !ok {
				return next(ctx, args)
			}
			hc := interp.HandlerCtx(ctx)
			code := a(ctx, args, IO{In: hc.Stdin, Out: hc.Stdout, Err: hc.Stderr, Dir: hc.Dir})
			if code != 0 {
				return interp.NewExitStatus(uint8(code))
			}
			return nil
		}
	}
}

// RunApplet runs the applet called name as a program (the init binary called through a
// /bin/NAME symlink) and returns its exit status; ok is false when there is no such applet.
func RunApplet(name string, args []string) (code int, ok bool) {
	if name == "sh" {
		return runSh(args), true
	}
	a, ok := Applets()[name]
	if !ok {
		return 0, false
	}
	dir, _ := os.Getwd()
	return a(context.Background(), append([]string{name}, args...), IO{In: os.Stdin, Out: os.Stdout, Err: os.Stderr, Dir: dir}), true
}

// runSh is /bin/sh: `sh -c CMD` runs one command line; `sh` alone is interactive.
func runSh(args []string) int {
	if len(args) >= 2 && args[0] == "-c" {
		f, err := syntax.NewParser().Parse(strings.NewReader(args[1]), "sh -c")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		r, err := interp.New(interp.StdIO(os.Stdin, os.Stdout, os.Stderr),
			interp.Env(expand.ListEnviron(append(DefaultEnv, os.Environ()...)...)),
			interp.ExecHandlers(appletHandler(Applets())))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		err = r.Run(context.Background(), f)
		if st, ok := interp.IsExitStatus(err); ok {
			return int(st)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return 0
	}
	sh := &Shell{In: os.Stdin, Out: os.Stdout, Err: os.Stderr}
	if err := sh.Run(context.Background()); err != nil && !errors.Is(err, ErrInputClosed) {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// help lists the applets.
func help(applets map[string]Applet) Applet {
	return func(_ context.Context, _ []string, stdio IO) int {
		var names []string
		for n := range applets {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(stdio.Out, "built-in commands: %s\n", strings.Join(names, " "))
		fmt.Fprintf(stdio.Out, "shell built-ins: cd echo exit export read set test [ true false …; type 'exit' to leave the shell\n")
		return 0
	}
}
