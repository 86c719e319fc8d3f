package rescue

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

// Applets returns the built-in commands of the rescue toolkit.
func Applets() map[string]Applet {
	m := map[string]Applet{
		"ls":    ls,
		"cat":   cat,
		"mkdir": mkdir,
		"sleep": sleep,
	}
	addPlatformApplets(m)
	m["help"] = help(m)
	return m
}

// abs resolves p against the shell's working directory.
func abs(stdio IO, p string) string {
	if filepath.IsAbs(p) || stdio.Dir == "" {
		return p
	}
	return filepath.Join(stdio.Dir, p)
}

func ls(_ context.Context, args []string, stdio IO) int {
	long := false
	var paths []string
	for _, a := range args[1:] {
		switch {
		case a == "-l" || a == "-la" || a == "-al":
			long = true
		case len(a) > 1 && a[0] == '-':
			// Other flags are accepted and ignored: this is a rescue tool, not coreutils.
		default:
			paths = append(paths, a)
		}
	}
	if len(paths) == 0 {
		paths = []string{"."}
	}
	code := 0
	for _, p := range paths {
		full := abs(stdio, p)
		st, err := os.Lstat(full)
		if err != nil {
			fmt.Fprintf(stdio.Err, "ls: %v\n", err)
			code = 1
			continue
		}
		if !st.IsDir() {
			printEntry(stdio.Out, full, p, st, long)
			continue
		}
		if len(paths) > 1 {
			fmt.Fprintf(stdio.Out, "%s:\n", p)
		}
		entries, err := os.ReadDir(full)
		if err != nil {
			fmt.Fprintf(stdio.Err, "ls: %v\n", err)
			code = 1
			continue
		}
		sort.Slice(entries, func(i, j int) bool { return entries[i].Name() < entries[j].Name() })
		for _, e := range entries {
			info, err := e.Info()
			if err != nil {
				continue
			}
			printEntry(stdio.Out, filepath.Join(full, e.Name()), e.Name(), info, long)
		}
	}
	return code
}

func printEntry(w io.Writer, full, name string, st os.FileInfo, long bool) {
	if !long {
		fmt.Fprintln(w, name)
		return
	}
	if st.Mode()&os.ModeSymlink != 0 {
		if t, err := os.Readlink(full); err == nil {
			name += " -> " + t
		}
	}
	fmt.Fprintf(w, "%s %10d %s %s\n", st.Mode(), st.Size(), st.ModTime().Format("2006-01-02 15:04"), name)
}

func cat(_ context.Context, args []string, stdio IO) int {
	if len(args) == 1 {
		io.Copy(stdio.Out, stdio.In)
		return 0
	}
	code := 0
	for _, p := range args[1:] {
		f, err := os.Open(abs(stdio, p))
		if err != nil {
			fmt.Fprintf(stdio.Err, "cat: %v\n", err)
			code = 1
			continue
		}
		if _, err := io.Copy(stdio.Out, f); err != nil {
			fmt.Fprintf(stdio.Err, "cat: %s: %v\n", p, err)
			code = 1
		}
		f.Close()
	}
	return code
}

func mkdir(_ context.Context, args []string, stdio IO) int {
	code := 0
	for _, p := range args[1:] {
		if p == "-p" {
			continue
		}
		if err := os.MkdirAll(abs(stdio, p), 0o755); err != nil {
			fmt.Fprintf(stdio.Err, "mkdir: %v\n", err)
			code = 1
		}
	}
	return code
}

func sleep(ctx context.Context, args []string, stdio IO) int {
	if len(args) != 2 {
		fmt.Fprintln(stdio.Err, "usage: sleep SECONDS")
		return 2
	}
	s, err := strconv.ParseFloat(args[1], 64)
	if err != nil || s < 0 {
		fmt.Fprintf(stdio.Err, "sleep: bad number %q\n", args[1])
		return 2
	}
	select {
	case <-time.After(time.Duration(s * float64(time.Second))):
	case <-ctx.Done():
		return 130
	}
	return 0
}
