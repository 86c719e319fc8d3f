//go:build !unix

package overlay

import (
	"errors"
	"io/fs"
	"os"
)

// lockDir opens a directory; without flock there is no cross-process lock on this system.
func lockDir(dir string) (*os.File, error) {
	f, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrGone
	}
	return f, err
}

func stillAt(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	return err == nil && os.SameFile(a, b)
}

func allocated(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}
