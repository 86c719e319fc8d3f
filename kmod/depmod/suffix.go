package depmod

import (
	"compress/gzip"
	"fmt"
	"io"
	"path"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// moduleFormat is one way a kernel module file is stored: its file name suffix and, for a
// compressed one, how to decompress it.
type moduleFormat struct {
	suffix string
	// open returns a reader of the uncompressed ELF and a function releasing the
	// decoder; nil for an uncompressed module.
	open func(io.Reader) (io.Reader, func(), error)
}

// moduleFormats are the module files the kernel's modules_install
// (CONFIG_MODULE_COMPRESS_{XZ,ZSTD,GZIP}) and distributions write: plain (Debian 12),
// .ko.xz (Debian 13, Fedora), .ko.zst (Arch), .ko.gz. This is the one list: the
// resolver, the builder (through UncompressedName) and kernelcfg (through
// ModuleFileName) all read it.
var moduleFormats = []moduleFormat{
	{suffix: ".ko"},
	{suffix: ".ko.xz", open: func(r io.Reader) (io.Reader, func(), error) {
		xr, err := xz.NewReader(r)
		return xr, func() {}, err
	}},
	{suffix: ".ko.zst", open: func(r io.Reader) (io.Reader, func(), error) {
		// One decoder goroutine: the callers already decompress modules in parallel.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1))
		if err != nil {
			return nil, nil, err
		}
		return zr, zr.Close, nil
	}},
	{suffix: ".ko.gz", open: func(r io.Reader) (io.Reader, func(), error) {
		gr, err := gzip.NewReader(r)
		return gr, func() {}, err
	}},
}

// formatOf returns the format of a module file name, by suffix.
func formatOf(file string) (moduleFormat, bool) {
	for _, f := range moduleFormats {
		if strings.HasSuffix(file, f.suffix) {
			return f, true
		}
	}
	return moduleFormat{}, false
}

// ModuleFileName returns the module name a module file stands for — its base name
// without the .ko[.xz|.zst|.gz] suffix, normalised (Normalize) — and whether file is a
// module file name at all ("kernel/fs/ext4/ext4.ko.xz" → "ext4", true; "README" → false).
// file may be a bare name or a path with '/' or the OS separator.
func ModuleFileName(file string) (string, bool) {
	base := path.Base(filepath.ToSlash(file))
	f, ok := formatOf(base)
	if !ok || len(base) == len(f.suffix) {
		return "", false
	}
	return Normalize(strings.TrimSuffix(base, f.suffix)), true
}

// UncompressedName returns a module file path with its compression suffix removed
// ("kernel/fs/ext4/ext4.ko.xz" → "kernel/fs/ext4/ext4.ko"): where the image keeps the
// module, decompressed. Other names are returned unchanged.
func UncompressedName(file string) string {
	f, ok := formatOf(file)
	if !ok || f.open == nil {
		return file
	}
	return strings.TrimSuffix(file, f.suffix) + ".ko"
}

// decompress reads the whole module from r, stored in format f, and returns its ELF
// contents.
func (f moduleFormat) decompress(r io.Reader) ([]byte, error) {
	if f.open == nil {
		return io.ReadAll(r)
	}
	dr, done, err := f.open(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimPrefix(f.suffix, ".ko."), err)
	}
	defer done()
	data, err := io.ReadAll(dr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", strings.TrimPrefix(f.suffix, ".ko."), err)
	}
	return data, nil
}
