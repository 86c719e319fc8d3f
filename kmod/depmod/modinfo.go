package depmod

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Modinfo is what a kernel module declares about itself in its .modinfo ELF section: the
// MODULE_*() macros of include/linux/module.h and the depends= line modpost adds.
type Modinfo struct {
	// Name is the module name (name=), normalised with underscores.
	Name string
	// Depends are the modules whose symbols this one uses (depends=, written by modpost),
	// normalised with underscores.
	Depends []string
	// SoftPre and SoftPost are the soft dependencies of MODULE_SOFTDEP("pre: a b post: c"):
	// names or aliases to load before, resp. after, this module. They are not required for
	// the module to load, but the module may not work without them (ext4 asks for
	// crypto-crc32c before it loads).
	SoftPre, SoftPost []string
	// Aliases are the MODULE_ALIAS()/MODULE_DEVICE_TABLE() patterns this module answers to;
	// device aliases are fnmatch(3) globs such as pci:v00001AF4d*sv*sd*bc*sc*i*.
	Aliases []string
	// Firmware lists the firmware files the module may request (firmware=).
	Firmware []string
	// Vermagic is the kernel release and build flags the module was built for.
	Vermagic string
}

// ErrNoModinfo means a file is an ELF object without a .modinfo section: not a kernel module.
var ErrNoModinfo = errors.New("no .modinfo section")

// ParseModinfo parses the contents of a .modinfo section: NUL-separated key=value strings,
// possibly padded with extra NULs between them (each macro emits its own aligned string).
// Unknown keys are ignored; a string without '=' is an error because the kernel's own
// get_modinfo() would not find a key in it either.
func ParseModinfo(sec []byte) (*Modinfo, error) {
	mi := &Modinfo{}
	for len(sec) > 0 {
		var s []byte
		if i := bytes.IndexByte(sec, 0); i >= 0 {
			s, sec = sec[:i], sec[i+1:]
		} else {
			s, sec = sec, nil
		}
		if len(s) == 0 {
			continue
		}
		k, v, ok := strings.Cut(string(s), "=")
		if !ok {
			return nil, fmt.Errorf("modinfo: entry %q has no '='", truncate(string(s), 40))
		}
		switch k {
		case "name":
			mi.Name = Normalize(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					mi.Depends = append(mi.Depends, Normalize(d))
				}
			}
		case "softdep":
			pre, post := parseSoftdep(v)
			mi.SoftPre = append(mi.SoftPre, pre...)
			mi.SoftPost = append(mi.SoftPost, post...)
		case "alias":
			if v != "" {
				mi.Aliases = append(mi.Aliases, v)
			}
		case "firmware":
			if v != "" {
				mi.Firmware = append(mi.Firmware, v)
			}
		case "vermagic":
			mi.Vermagic = v
		}
	}
	return mi, nil
}

// parseSoftdep splits a MODULE_SOFTDEP string, which uses modprobe.d(5)'s softdep syntax:
// "pre: a b post: c d" (either part optional, in any order). Words before the first
// "pre:"/"post:" belong to no list and are ignored, as kmod does.
func parseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, w := range strings.Fields(v) {
		switch w {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, w)
			}
		}
	}
	return pre, post
}

// ReadModinfo reads the .modinfo section of the ELF kernel module r.
func ReadModinfo(r io.ReaderAt) (*Modinfo, error) {
	f, err := elf.NewFile(r)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil || sec.Type == elf.SHT_NOBITS {
		return nil, ErrNoModinfo
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf(".modinfo: %w", err)
	}
	return ParseModinfo(data)
}

// ReadModuleFile returns the uncompressed ELF contents of the module file at path, which
// may be compressed as the kernel's CONFIG_MODULE_COMPRESS_* and distributions do
// (.ko.xz, .ko.zst, .ko.gz).
func ReadModuleFile(path string) ([]byte, error) {
	format, ok := formatOf(path)
	if !ok {
		return nil, fmt.Errorf("%s: not a kernel module file name", path)
	}
	// The whole file first: the xz decoder reads its input a byte at a time, one
	// read(2) each from an *os.File — which made a scan of Debian 13's modules take
	// most of a minute in system calls.
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	data, err := format.decompress(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, nil
}

// ReadModinfoFile reads the .modinfo of the module file at path (compressed or not). An
// uncompressed module is read in place: only its section headers and .modinfo are read,
// which keeps a scan of all ~4000 modules of a distribution kernel fast.
func ReadModinfoFile(path string) (*Modinfo, error) {
	mi, _, err := readModule(path)
	return mi, err
}

// readModule reads the .modinfo of the module file at path and, when the file is
// compressed, returns the ELF it decompressed too (nil for a plain .ko, read in place):
// a caller about to put the module into an image need not decompress it twice.
func readModule(path string) (*Modinfo, []byte, error) {
	format, ok := formatOf(path)
	if !ok {
		return nil, nil, fmt.Errorf("%s: not a kernel module file name", path)
	}
	var ra io.ReaderAt
	var data []byte
	if format.open == nil {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, err
		}
		defer f.Close()
		ra = f
	} else {
		var err error
		if data, err = ReadModuleFile(path); err != nil {
			return nil, nil, err
		}
		ra = bytes.NewReader(data)
	}
	mi, err := ReadModinfo(ra)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return mi, data, nil
}

// Normalize returns a module name in the kernel's canonical form: '-' and '_' are
// equivalent in module names (kernel/params.c parameq, kmod's modname_normalize), and the
// kernel itself reports names with underscores in /proc/modules.
func Normalize(name string) string {
	return strings.ReplaceAll(name, "-", "_")
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
