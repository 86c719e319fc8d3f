package hooks

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/nbdroot/nbdroot/initramfs/layout"
	"github.com/nbdroot/nbdroot/keymap"
)

// Keymap loads the console keymap the builder compiled into the image (layout.KeymapPath)
// into the kernel, so that a passphrase typed on the keyboard of a virtual terminal means
// what the user's layout says. A serial console is not affected: its characters come from
// the other end's keyboard. Failures are logged, never fatal: the default layout still
// types, and the passphrase may come over the serial line.
type Keymap struct {
	// Path is the compiled keymap ("" = layout.KeymapPath).
	Path string
}

// Name implements Hook.
func (Keymap) Name() string { return "keymap" }

// Run implements Hook.
func (h Keymap) Run(ctx context.Context, s *State) error {
	path := h.Path
	if path == "" {
		path = layout.KeymapPath
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.keymapSummary = "no keymap in this image: the kernel's default layout"
		return nil
	}
	if err != nil {
		s.Log.Printf("keymap: %v; the kernel's default layout stays", err)
		s.keymapSummary = "not loaded"
		return nil
	}
	km, err := keymap.Decode(b)
	if err != nil {
		s.Log.Printf("keymap: %s: %v; the kernel's default layout stays", path, err)
		s.keymapSummary = "not loaded"
		return nil
	}
	a, err := s.Sys.Console.LoadKeymap(km)
	switch {
	case err != nil && a.Keys == 0:
		s.Log.Printf("keymap: %s not loaded: %v (no virtual terminal?); the kernel's default layout stays", km.Name, err)
		s.keymapSummary = km.Name + " not loaded"
	case err != nil:
		s.Log.Printf("keymap: %s loaded in part: %v", km.Name, err)
		s.keymapSummary = fmt.Sprintf("%s loaded in part (%s)", km.Name, a)
	default:
		s.keymapSummary = fmt.Sprintf("%s loaded (%s)", km.Name, a)
	}
	return nil
}

// Summary implements Summarizer.
func (Keymap) Summary(s *State) string { return s.keymapSummary }
