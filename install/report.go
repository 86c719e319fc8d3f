package install

import (
	"fmt"
	"io"
	"strings"

	"github.com/nbdroot/nbdroot/netboot"
)

// Action is what happened to one file.
type Action string

// The actions of a Report.
const (
	Installed Action = "installed" // a new file
	Updated   Action = "updated"   // a file replaced by another content
	Unchanged Action = "unchanged" // already as it should be
	Kept      Action = "kept"      // the administrator's configuration, left as it is
	Built     Action = "built"     // a new initramfs
	Removed   Action = "removed"
	Skipped   Action = "skipped"
	Failed    Action = "failed"
)

// wouldDo is how a dry run words the actions that change the root (the others it reports
// as they are).
var wouldDo = map[Action]string{Installed: "would install", Updated: "would update", Built: "would build", Removed: "would remove"}

// Step is what was done to one file.
type Step struct {
	Action Action
	// Path is the file, absolute in the root.
	Path string
	// What the file is, and a note: why it was skipped or removed, its size, how long a
	// build took, the command a dry run would run.
	What, Note string
}

// Report is what an installation did, for the summary.
type Report struct {
	Root string
	// System is the root's distribution (os-release's PRETTY_NAME).
	System string
	DryRun bool
	// Staged is a package's files written below a directory (Stage), not into a root.
	Staged bool
	Steps  []Step
	// Notes are things passed over (a modules directory without a kernel);
	// Warnings come from the initramfs builds (what a kernel lacks, for example).
	Notes, Warnings []string
	// Boots is the kernel `nbdroot serve` boots the root with now, by the /boot contract;
	// nil when it has none. BootNotes say which files in /boot it passes over and why.
	Boots     *netboot.Kernel
	BootNotes []string
}

func (r *Report) add(a Action, p, what, note string) {
	r.Steps = append(r.Steps, Step{Action: a, Path: p, What: what, Note: note})
}

// Changed says whether anything was (or, in a dry run, would be) written or removed.
func (r *Report) Changed() bool {
	for _, s := range r.Steps {
		if wouldDo[s.Action] != "" {
			return true
		}
	}
	return false
}

// boots finds the kernel `nbdroot serve` boots the root with, as it would read /boot.
func (r *Report) boots(rt *root) {
	ks, notes, err := netboot.FindKernels(rt.fs.FS(), rel(BootDir))
	if err != nil {
		r.BootNotes = append(r.BootNotes, err.Error())
		return
	}
	r.BootNotes = notes
	if len(ks) > 0 {
		r.Boots = &ks[0]
	}
}

// WriteText prints the summary: one line per file, then what the root boots with.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	head := r.Root
	if r.System != "" {
		head += " (" + r.System + ")"
	}
	if r.DryRun {
		head += ": dry run, nothing is changed"
	}
	fmt.Fprintf(&b, "nbdroot install: %s\n", head)
	width := 0
	for _, s := range r.Steps {
		width = max(width, len(s.Path))
	}
	for _, s := range r.Steps {
		a := string(s.Action)
		if r.DryRun && wouldDo[s.Action] != "" {
			a = wouldDo[s.Action]
		}
		line := fmt.Sprintf("  %-13s %-*s  %s", a, width, s.Path, s.What)
		if s.Note != "" {
			line += ": " + s.Note
		}
		fmt.Fprintln(&b, strings.TrimRight(line, " "))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "  note: %s\n", n)
	}
	for _, wn := range r.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", wn)
	}
	switch {
	case r.Staged:
	case r.Boots != nil:
		fmt.Fprintf(&b, "nbdroot serve boots this root with kernel %s (/boot/%s, /boot/%s)\n", versionOf(r.Boots), r.Boots.Kernel, r.Boots.Initrd)
	default:
		fmt.Fprintf(&b, "nbdroot serve finds no kernel to boot in /boot (vmlinuz-VERSION beside nbdroot.img-VERSION)\n")
	}
	if !r.Staged && (r.Boots == nil || len(r.BootNotes) > 0) {
		for _, n := range r.BootNotes {
			fmt.Fprintf(&b, "  /boot: %s\n", n)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func versionOf(k *netboot.Kernel) string {
	if k.Version == "" {
		return "(unversioned)"
	}
	return k.Version
}

// size formats a byte count in binary units.
func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
