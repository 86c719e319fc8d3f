package initramfs

import (
	"fmt"
	"io"
	"strings"
)

// WriteText prints the summary for people: what went into the image and how big it is.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s, %s compressed from %s\n", s.Output, s.Compression, size(s.ImageSize), size(s.ArchiveSize))
	row := func(k, v string) { fmt.Fprintf(&b, "  %-12s %s\n", k, v) }
	kernel := s.KVer
	if s.Arch != "" {
		kernel += " (" + s.Arch + ")"
	}
	row("kernel", kernel)
	row("hooks", strings.Join(s.Hooks, " "))
	for _, h := range s.HookLines {
		fmt.Fprintf(&b, "    %-12s %s\n", h.Name, h.Text)
	}
	row("init", size(s.InitSize)+" "+s.Init)
	row("modules", fmt.Sprintf("%d, %s: %s", len(s.Modules), size(s.ModulesSize), strings.Join(s.Modules, " ")))
	if len(s.NICs) > 0 {
		row("NIC drivers", strings.Join(s.NICs, " "))
	}
	if len(s.Builtin) > 0 {
		row("built in", strings.Join(s.Builtin, " "))
	}
	if len(s.Skipped) > 0 {
		row("not in kernel", strings.Join(s.Skipped, " ")+" (optional, skipped)")
	}
	if len(s.Firmware) > 0 {
		row("firmware", strings.Join(s.Firmware, " "))
	}
	if len(s.Microcode) > 0 {
		row("microcode", strings.Join(s.Microcode, ", "))
	}
	if len(s.Binaries) > 0 {
		row("binaries", strings.Join(s.Binaries, " "))
	}
	row("entries", fmt.Sprint(s.Files))
	for _, w := range s.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// size formats a byte count in binary units, as image size limits are stated.
func size(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
