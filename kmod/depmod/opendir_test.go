package depmod

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A missing modules directory is named as given, not as the symlinks resolve it: on a
// merged-/usr system /lib/modules/X would otherwise be reported as /usr/lib/modules.
func TestOpenDirNamesGivenPath(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "usr", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/lib", filepath.Join(root, "lib")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{
		filepath.Join(root, "lib", "modules", "6.1.0-x"), // through the symlink
		filepath.Join(root, "nowhere", "6.1.0-x"),
	} {
		_, err := OpenDir(path)
		if err == nil || !strings.HasPrefix(err.Error(), "modules directory "+path+": ") || strings.Contains(err.Error(), "usr/lib") {
			t.Errorf("OpenDir(%s): %v; want the error to name the path given", path, err)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("OpenDir(%s): %v is not ErrNotExist", path, err)
		}
	}
}
