package initramfs

import (
	"fmt"
	"slices"
	"strings"

	"github.com/nbdroot/nbdroot/hooks/catalog"
)

// UnknownHookError reports the hook names nbdroot does not know, all of them at once: a
// mkinitcpio.conf with three hooks of its own is fixed in one go, not in three runs.
type UnknownHookError struct {
	Names []string
	Known []string
}

func (e *UnknownHookError) Error() string {
	what := "unknown hook"
	if len(e.Names) > 1 {
		what = "unknown hooks"
	}
	quoted := make([]string, len(e.Names))
	for i, n := range e.Names {
		quoted[i] = fmt.Sprintf("%q", n)
	}
	return fmt.Sprintf("%s %s (known hooks: %s)", what, strings.Join(quoted, ", "), strings.Join(e.Known, " "))
}

// HookLine is one line of the build summary: a hook as the user wrote it and what it does in
// this image.
type HookLine struct {
	Name string
	Text string
}

// Hooks is the image's hook list after mapping: the hooks as written (for the summary) and
// the specs the image runs, in boot order, each once.
type Hooks struct {
	// Written are the names as given, duplicates dropped.
	Written []string
	// Specs are the hooks of the image: every written hook, each mapping hook (systemd…)
	// replaced by the hooks it maps to (catalog.Spec.MapsTo).
	Specs []catalog.Spec
}

// Names are the names of the image's hooks, in boot order: what /etc/nbdroot/hooks lists.
func (h *Hooks) Names() []string {
	out := make([]string, len(h.Specs))
	for i, s := range h.Specs {
		out[i] = s.Name
	}
	return out
}

// Has reports whether the image has the hook called name.
func (h *Hooks) Has(name string) bool { return h.Index(name) >= 0 }

// Index is the position of hook name in Specs, or -1.
func (h *Hooks) Index(name string) int {
	return slices.IndexFunc(h.Specs, func(s catalog.Spec) bool { return s.Name == name })
}

// CheckHooks maps the named hooks (the boot order, as a HOOKS line gives it) to the image's
// hooks: mkinitcpio's systemd hooks become the hooks that do their work here, duplicates are
// dropped (a hook runs once, at its first place), and every name the catalog does not have
// is reported in one *UnknownHookError.
func CheckHooks(names []string) (*Hooks, error) {
	h := &Hooks{}
	var unknown []string
	seen := map[string]bool{}
	add := func(s catalog.Spec) {
		if !seen[s.Name] {
			seen[s.Name] = true
			h.Specs = append(h.Specs, s)
		}
	}
	written := map[string]bool{}
	for _, n := range names {
		if written[n] {
			continue
		}
		written[n] = true
		s, ok := catalog.Lookup(n)
		if !ok {
			unknown = append(unknown, n)
			continue
		}
		h.Written = append(h.Written, n)
		if len(s.MapsTo) == 0 {
			add(s)
			continue
		}
		for _, m := range s.MapsTo {
			ms, ok := catalog.Lookup(m)
			if !ok {
				return nil, fmt.Errorf("hook %s maps to %s, which the hook table lacks", n, m)
			}
			add(ms)
		}
	}
	if len(unknown) > 0 {
		return nil, &UnknownHookError{Names: unknown, Known: catalog.Names()}
	}
	return h, nil
}

// orderWarnings are hook orders that build but will not do what the user meant.
func (h *Hooks) orderWarnings() []string {
	var w []string
	before := func(a, b string) bool {
		ia, ib := h.Index(a), h.Index(b)
		return ia >= 0 && ib >= 0 && ia < ib
	}
	if before("encrypt", "keymap") {
		w = append(w, "the keymap hook comes after encrypt: the passphrase is typed with the kernel's default (US) layout; put keymap before encrypt")
	}
	if before("lvm2", "encrypt") {
		w = append(w, "the lvm2 hook comes before encrypt: volume groups inside the LUKS volume are not found; put lvm2 after encrypt")
	}
	switch {
	case !h.Has("nbd"):
		w = append(w, "the hooks have no nbd hook: this image cannot attach an NBD root (add net and nbd after udev)")
	case !h.Has("net"):
		w = append(w, "the hooks have nbd but no net hook: the NBD server cannot be reached (add net before nbd)")
	}
	return w
}

// summarizeHooks writes one summary line per hook as the user wrote it: what the build found
// for it (autodetect, microcode, modconf, keymap…), else what the hook does, and for a hook
// that maps to others, which.
func (img *image) summarizeHooks() {
	for _, n := range img.hooks.Written {
		s, _ := catalog.Lookup(n)
		text := s.Summary
		if l, ok := img.lines[n]; ok {
			text = l
		}
		if len(s.MapsTo) > 0 {
			text = "→ " + strings.Join(s.MapsTo, " ") + ": " + text
		}
		img.sum.HookLines = append(img.sum.HookLines, HookLine{Name: n, Text: text})
	}
}
