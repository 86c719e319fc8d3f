package kmod

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ModprobeEnv is what a modprobe run needs from its surroundings.
type ModprobeEnv struct {
	// Dir is the modules directory holding the index (/lib/modules/VER).
	Dir string
	// Loader inserts modules (FinitLoader at boot).
	Loader Loader
	// Stdout receives --dry-run output; Stderr receives errors (unless -q) and -v lines.
	Stdout, Stderr io.Writer
}

// modprobeUsage is printed for -h and bad usage.
const modprobeUsage = `usage: modprobe [-q] [-b] [-v] [-n] [--] MODULE [PARAM=VALUE…]
       modprobe [-q] [-b] [-v] [-n] -a MODULE…
nbdroot's modprobe loads modules of the initramfs (and their dependencies) from
` + IndexName + `; MODULE is a module name or an alias (fs-ext4, crypto-xts, a modalias).
-b skips modules modprobe.d blacklists when MODULE is an alias; -r is not supported.
`

// modprobeArgs is a parsed modprobe command line.
type modprobeArgs struct {
	quiet, verbose, dryRun, all, blacklist bool
	names                                  []string
	params                                 string
}

// errModprobeUsage marks command-line errors (exit status 1, like kmod's modprobe).
var errModprobeUsage = errors.New("usage")

// parseModprobeArgs parses the options modprobe accepts. The kernel's request_module()
// runs "modprobe -q -- NAME" (kernel/module/kmod.c); other callers use -a, -b, -v, -n.
func parseModprobeArgs(args []string) (modprobeArgs, error) {
	var a modprobeArgs
	rest := args
	for len(rest) > 0 {
		arg := rest[0]
		if arg == "--" {
			rest = rest[1:]
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			break
		}
		rest = rest[1:]
		var flags []string
		if strings.HasPrefix(arg, "--") {
			flags = []string{arg}
		} else {
			for _, c := range arg[1:] {
				flags = append(flags, "-"+string(c))
			}
		}
		for _, f := range flags {
			switch f {
			case "-q", "--quiet":
				a.quiet = true
			case "-v", "--verbose":
				a.verbose = true
			case "-n", "--dry-run", "--show":
				a.dryRun = true
			case "-a", "--all":
				a.all = true
			case "-b", "--use-blacklist":
				a.blacklist = true
			case "-s", "--syslog":
				// Logging goes where stderr goes.
			case "-r", "--remove":
				return a, fmt.Errorf("%w: module removal (-r) is not supported in the initramfs", errModprobeUsage)
			case "-h", "--help":
				return a, errModprobeUsage
			default:
				return a, fmt.Errorf("%w: unknown option %s", errModprobeUsage, f)
			}
		}
	}
	if len(rest) == 0 {
		return a, fmt.Errorf("%w: no module named", errModprobeUsage)
	}
	if a.all {
		a.names = rest
	} else {
		a.names = rest[:1]
		a.params = strings.Join(rest[1:], " ")
	}
	return a, nil
}

// RunModprobe is modprobe(8) for the initramfs: it loads each named module or alias with
// its dependencies from the index in env.Dir and returns the exit status (0 loaded or
// built in, 1 not found, load failure or usage error).
func RunModprobe(ctx context.Context, args []string, env ModprobeEnv) int {
	stderr := env.Stderr
	if stderr == nil {
		stderr = io.Discard
	}
	a, err := parseModprobeArgs(args)
	if err != nil {
		if err == errModprobeUsage {
			fmt.Fprint(stderr, modprobeUsage)
		} else {
			fmt.Fprintf(stderr, "modprobe: %v\n", err)
		}
		return 1
	}
	ix, err := openIndex(env.Dir)
	if err != nil {
		// Report even with -q: without an index no request can ever succeed.
		fmt.Fprintf(stderr, "modprobe: %v\n", err)
		return 1
	}
	status := 0
	var resolved []string
	for _, n := range a.names {
		mods, builtin := ix.Lookup(n)
		if a.blacklist {
			mods = withoutBlacklisted(ix, n, mods)
		}
		switch {
		case len(mods) > 0:
			resolved = append(resolved, mods...)
		case builtin:
			if a.verbose {
				fmt.Fprintf(stderr, "modprobe: %s is built in\n", n)
			}
		default:
			if !a.quiet {
				fmt.Fprintf(stderr, "modprobe: FATAL: module %s not found in %s\n", n, filepath.Join(env.Dir, IndexName))
			}
			status = 1
		}
	}
	if len(resolved) == 0 {
		return status
	}
	if a.dryRun {
		order, _ := ix.Closure(resolved)
		for _, m := range order {
			mod, _ := ix.Module(m)
			if env.Stdout != nil {
				fmt.Fprintf(env.Stdout, "insmod %s\n", filepath.Join(env.Dir, mod.Path))
			}
		}
		return status
	}
	var params map[string]string
	if a.params != "" {
		params = map[string]string{}
		for _, m := range resolved {
			params[m] = a.params
		}
	}
	var logf func(string, ...any)
	if a.verbose {
		logf = func(format string, args ...any) { fmt.Fprintf(stderr, "modprobe: "+format+"\n", args...) }
	}
	b := NewBoot(ix, env.Dir, env.Loader, BootOptions{Logf: logf})
	errs := b.load(ctx, resolved, params)
	// A name is satisfied when one of the modules it resolved to is loaded: an alias such
	// as crypto-crc32c names both crc32c_generic and crc32c_intel, and the accelerated one
	// refuses CPUs without SSE4.2 (ENODEV) while the generic one serves. Soft dependencies
	// that failed are not the request's failure either.
	failed := map[string]bool{}
	for _, n := range a.names {
		mods, _ := ix.Lookup(n)
		if len(mods) == 0 {
			continue
		}
		ok := false
		for _, m := range mods {
			ok = ok || b.Loaded(m)
		}
		if !ok {
			for _, m := range mods {
				failed[m] = true
			}
			status = 1
		}
	}
	for _, err := range errs {
		var me *ModuleError
		if errors.As(err, &me) && !failed[me.Module] && !a.verbose {
			continue
		}
		// Load failures are reported even with -q, as kmod's modprobe does: -q only
		// silences "not found".
		fmt.Fprintf(stderr, "modprobe: %v\n", err)
	}
	return status
}

// withoutBlacklisted drops the modules modprobe.d blacklists from what the alias name
// resolved to (modprobe -b, as udev runs it): a blacklist only stops aliases, a module asked
// for by its own name still loads.
func withoutBlacklisted(ix *Index, name string, mods []string) []string {
	if _, byName := ix.Module(name); byName {
		return mods
	}
	var out []string
	for _, m := range mods {
		if !ix.Blacklisted(m) {
			out = append(out, m)
		}
	}
	return out
}

// OpenIndex reads the index file of the modules directory dir.
func OpenIndex(dir string) (*Index, error) { return openIndex(dir) }

func openIndex(dir string) (*Index, error) {
	f, err := os.Open(filepath.Join(dir, IndexName))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ix, err := ReadIndex(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name(), err)
	}
	return ix, nil
}
