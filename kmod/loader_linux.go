package kmod

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nbdroot/nbdroot/initramfs/layout"
	"golang.org/x/sys/unix"
)

// FinitLoader inserts modules with finit_module(2), which reads the module from a file
// descriptor (no copy through user memory, and the kernel can check the file's signature).
// Module files in the image are uncompressed, so no MODULE_INIT_COMPRESSED_FILE flag.
type FinitLoader struct{}

var _ Loader = FinitLoader{}

// Load implements Loader.
func (FinitLoader) Load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		return os.NewSyscallError("finit_module", err)
	}
	return nil
}

// ModulesDir returns root's /lib/modules/<running kernel release> (layout.ModulesRoot), or
// when that has no index, the only directory under it that has one.
func ModulesDir(root string) (string, error) {
	base := filepath.Join(root, layout.ModulesRoot)
	var u unix.Utsname
	if err := unix.Uname(&u); err == nil {
		dir := filepath.Join(base, unix.ByteSliceToString(u.Release[:]))
		if _, err := os.Stat(filepath.Join(dir, IndexName)); err == nil {
			return dir, nil
		}
	}
	m, err := filepath.Glob(filepath.Join(base, "*", IndexName))
	if err != nil {
		return "", err
	}
	if len(m) == 1 {
		return filepath.Dir(m[0]), nil
	}
	return "", fmt.Errorf("no %s under %s", IndexName, base)
}

// Modprobe is the entry point of /sbin/modprobe in the image (the init binary called by
// that name): the kernel runs "/sbin/modprobe -q -- NAME" when it needs a module
// (request_module, kernel/module/kmod.c). root is the filesystem root ("/"). Errors go to
// stderr when it is open, otherwise to the kernel log: usermode helpers start without
// stdio.
func Modprobe(root string, args []string) int {
	var stderr io.Writer = os.Stderr
	if _, err := os.Stderr.Stat(); err != nil {
		if k, err := os.OpenFile("/dev/kmsg", os.O_WRONLY, 0); err == nil {
			defer k.Close()
			stderr = k
		} else {
			stderr = io.Discard
		}
	}
	dir, err := ModulesDir(root)
	if err != nil {
		fmt.Fprintf(stderr, "modprobe: %v\n", err)
		return 1
	}
	return RunModprobe(context.Background(), args, ModprobeEnv{
		Dir: dir, Loader: FinitLoader{}, Stdout: os.Stdout, Stderr: stderr,
	})
}
