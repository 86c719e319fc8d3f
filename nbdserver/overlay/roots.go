package overlay

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RootsFile, in a state directory, lists the overlay roots that servers using that state
// directory have served from (one absolute path per line), so that `nbdroot overlays` finds
// cowdir= and cowtmp= directories without being told about them.
const RootsFile = "overlay-dirs"

// StateRoot is the root of the overlays kept in the state directory itself: temporary
// overlays of exports without a cowtmp= directory.
func StateRoot(stateDir string) string { return filepath.Join(stateDir, "overlays") }

// RecordRoots adds roots to the state directory's RootsFile. Lines are only ever appended
// (O_APPEND writes of one line do not interleave), so two servers sharing a state directory
// cannot lose each other's entries.
func RecordRoots(stateDir string, roots []string) error {
	known, err := readRoots(stateDir)
	if err != nil {
		return err
	}
	var add strings.Builder
	for _, r := range roots {
		if !slices.Contains(known, r) {
			known = append(known, r)
			add.WriteString(r + "\n")
		}
	}
	if add.Len() == 0 {
		return nil
	}
	f, err := os.OpenFile(filepath.Join(stateDir, RootsFile), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(add.String()); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Roots returns the overlay roots of a state directory: its own and those in RootsFile.
func Roots(stateDir string) ([]string, error) {
	known, err := readRoots(stateDir)
	if err != nil {
		return nil, err
	}
	out := []string{StateRoot(stateDir)}
	for _, r := range known {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out, nil
}

func readRoots(stateDir string) ([]string, error) {
	f, err := os.Open(filepath.Join(stateDir, RootsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); filepath.IsAbs(line) && !slices.Contains(out, line) {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}
