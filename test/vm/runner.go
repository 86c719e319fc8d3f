package vm

import (
	"fmt"
	"os"
)

// Runner is a TB for programs (make demo, make bench) that drive the harness outside
// `go test`: Fatalf panics with the message (recover it where the program reports errors),
// Logf writes to standard error, and Cleanup functions run, newest first, at Close.
type Runner struct {
	name     string
	cleanups []func()
	failed   bool
}

var _ TB = (*Runner)(nil)

// NewRunner returns a Runner called name (used in log file names).
func NewRunner(name string) *Runner { return &Runner{name: name} }

func (r *Runner) Helper()          {}
func (r *Runner) Name() string     { return r.name }
func (r *Runner) Failed() bool     { return r.failed }
func (r *Runner) Cleanup(f func()) { r.cleanups = append(r.cleanups, f) }
func (r *Runner) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}
func (r *Runner) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

// Fatalf marks the run failed and panics with the message.
func (r *Runner) Fatalf(format string, args ...any) {
	r.failed = true
	panic(fmt.Sprintf(format, args...))
}

// TempDir makes a directory removed at Close.
func (r *Runner) TempDir() string {
	d, err := os.MkdirTemp("", "nbdroot-"+r.name+"-")
	if err != nil {
		r.Fatal(err)
	}
	r.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// Close runs the cleanup functions, newest first.
func (r *Runner) Close() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
}
