package nbdserver

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// temporaryPrefix starts the path of every temporary image: the server's own descriptor of
// the unlinked file, which opening reopens (proc(5) /proc/pid/fd: the link works for
// deleted files).
const temporaryPrefix = "/proc/self/fd/"

func isTemporaryImage(path string) bool { return strings.HasPrefix(path, temporaryPrefix) }

// temporaryImages holds the images of "temporary" exports (nbd-server(5)): each a fresh file
// of filesize bytes made from the exportname template and unlinked at once, so nothing of
// it outlives the server — not even after a crash. The server keeps it open and reaches
// it by its descriptor. A reload keeps an export's image as long as its template and size
// do not change, so its clients keep their data.
type temporaryImages struct {
	files map[string]*os.File // by export name, template and size
}

// apply creates the images exports lack and points their Path at them.
func (ti *temporaryImages) apply(exports []Export) error {
	for i := range exports {
		e := &exports[i]
		if !e.Temporary || isTemporaryImage(e.Path) {
			continue
		}
		key := fmt.Sprintf("%s\x00%s\x00%d", e.Name, e.Path, e.CreateSize)
		f := ti.files[key]
		if f == nil {
			var err error
			if f, err = createTemporary(e.Path, e.CreateSize); err != nil {
				return &ConfigError{fmt.Sprintf("export %q", e.Name), err}
			}
			if ti.files == nil {
				ti.files = map[string]*os.File{}
			}
			ti.files[key] = f
		}
		e.Path = temporaryPrefix + fmt.Sprint(f.Fd())
	}
	return nil
}

func createTemporary(template string, size int64) (*os.File, error) {
	f, err := os.CreateTemp(filepath.Dir(template), filepath.Base(template)+".*")
	if err != nil {
		return nil, fmt.Errorf("temporary: %w", err)
	}
	err = os.Remove(f.Name())
	if err == nil {
		err = f.Truncate(size)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("temporary: %w", err)
	}
	return f, nil
}

// Close closes the images; the last client's close frees their space.
func (ti *temporaryImages) Close() {
	for _, f := range ti.files {
		f.Close()
	}
	ti.files = nil
}
