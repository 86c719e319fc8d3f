package initramfs

import (
	"compress/gzip"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
)

// Compression names an image compression the kernel can unpack (init/initramfs.c tries
// every decompressor of lib/decompress.c by magic number).
type Compression string

// The compressions the builder writes. Each needs the kernel's matching
// CONFIG_RD_<NAME>; Debian's kernels enable all of them.
const (
	Zstd Compression = "zstd"
	Gzip Compression = "gzip"
	XZ   Compression = "xz"
	LZ4  Compression = "lz4"
	None Compression = "none"
)

// DefaultCompression is zstd: the smallest images of the fast decompressors and the
// fastest to unpack of the small ones; Linux has unpacked zstd initramfs since 5.9.
const DefaultCompression = Zstd

// zstdWindow is the zstd window size: the kernel's streaming initramfs decompressor
// (lib/decompress_unzstd.c) allocates a buffer of the frame's window size, so a modest
// window keeps early-boot memory small; 8 MiB is what `zstd -19` uses and costs little
// ratio on an image of this size.
const zstdWindow = 8 << 20

// KernelConfigOption is the kernel option that must be enabled to unpack c.
func (c Compression) KernelConfigOption() string {
	switch c {
	case Zstd:
		return "CONFIG_RD_ZSTD"
	case Gzip:
		return "CONFIG_RD_GZIP"
	case XZ:
		return "CONFIG_RD_XZ"
	case LZ4:
		return "CONFIG_RD_LZ4"
	}
	return ""
}

// compressors maps names to writer constructors.
var compressors = map[Compression]func(io.Writer) (io.WriteCloser, error){
	Zstd: func(w io.Writer) (io.WriteCloser, error) {
		// One encoder goroutine keeps the output a pure function of the input.
		return zstd.NewWriter(w, zstd.WithEncoderLevel(zstd.SpeedBestCompression),
			zstd.WithWindowSize(zstdWindow), zstd.WithEncoderConcurrency(1), zstd.WithEncoderCRC(true))
	},
	Gzip: func(w io.Writer) (io.WriteCloser, error) {
		// The gzip header's name and mtime stay empty/zero: reproducible.
		return gzip.NewWriterLevel(w, gzip.BestCompression)
	},
	XZ: func(w io.Writer) (io.WriteCloser, error) {
		// The kernel's XZ decoder (lib/xz) verifies CRC32 but cannot check CRC64 or
		// SHA-256 unless built with XZ_DEC_ANY_CHECK; the kernel's own build uses
		// xz --check=crc32 for the same reason.
		return xz.WriterConfig{CheckSum: xz.CRC32, DictCap: 8 << 20}.NewWriter(w)
	},
	LZ4: func(w io.Writer) (io.WriteCloser, error) {
		// lib/decompress_unlz4.c reads only the legacy frame format (magic 0x184C2102,
		// 8 MiB blocks), what `lz4 -l` writes; the modern frame format fails to unpack.
		zw := lz4.NewWriter(w)
		if err := zw.Apply(lz4.LegacyOption(true), lz4.CompressionLevelOption(lz4.Level9)); err != nil {
			return nil, err
		}
		return zw, nil
	},
	None: func(w io.Writer) (io.WriteCloser, error) { return nopCloser{w}, nil },
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// Compressions returns the names of the supported compressions, sorted.
func Compressions() []string {
	var out []string
	for c := range compressors {
		out = append(out, string(c))
	}
	sort.Strings(out)
	return out
}

// ParseCompression returns the compression called name ("" is the default).
func ParseCompression(name string) (Compression, error) {
	if name == "" {
		return DefaultCompression, nil
	}
	c := Compression(strings.ToLower(name))
	if _, ok := compressors[c]; !ok {
		return "", fmt.Errorf("unknown compression %q (known: %s)", name, strings.Join(Compressions(), ", "))
	}
	return c, nil
}

// NewWriter returns a writer that compresses into w with c. Close flushes it; it does not
// close w.
func NewWriter(w io.Writer, c Compression) (io.WriteCloser, error) {
	f, ok := compressors[c]
	if !ok {
		return nil, fmt.Errorf("unknown compression %q", c)
	}
	return f(w)
}
