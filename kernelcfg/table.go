package kernelcfg

import "github.com/nbdroot/nbdroot/hooks/catalog"

// Option is one kernel config symbol and, when it is tristate, the module it builds
// (catalog.Option: the hook table holds them).
type Option = catalog.Option

// Requirement is one thing a hook needs from the kernel (catalog.Requirement).
type Requirement = catalog.Requirement

// Hook describes what one hook needs: its requirements and notes on what it does not need.
type Hook struct {
	Name         string
	Requirements []Requirement
	// Notes say what a reader might expect the hook to need but it does not, and why.
	Notes []string
}

// Compressions lists the initramfs compressions the builder offers, default first, with the
// config symbol that lets the kernel unpack each ("" for none).
var Compressions = []struct{ Name, Option string }{
	{"zstd", "RD_ZSTD"},
	{"gzip", "RD_GZIP"},
	{"xz", "RD_XZ"},
	{"lz4", "RD_LZ4"},
	{"none", ""},
}

// DefaultCompression is the compression of the default image.
const DefaultCompression = "zstd"

// Hooks returns, in catalog order, what every hook nbdroot knows needs from the kernel: the
// Kernel requirements of the hook table (package hooks/catalog). The check, the docs and the
// fragment (nbdroot.config, kept in agreement by a test) all follow it.
func Hooks() []Hook {
	var out []Hook
	for _, s := range catalog.Catalog() {
		out = append(out, Hook{Name: s.Name, Requirements: s.Kernel, Notes: s.KernelNotes})
	}
	return out
}
