package initramfs

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// Arch is a target architecture of an image: its Go name (GOARCH) and how its ELF files
// identify themselves.
type Arch struct {
	// Name is the GOARCH name: amd64, arm64…
	Name    string
	Machine elf.Machine
	Class   elf.Class
	Data    elf.Data
}

// Arches are the architectures an image can be built for: those Go cross-compiles the
// init to and Debian ships kernels for.
var Arches = []Arch{
	{"amd64", elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"arm64", elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"386", elf.EM_386, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"arm", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"riscv64", elf.EM_RISCV, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"ppc64le", elf.EM_PPC64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"s390x", elf.EM_S390, elf.ELFCLASS64, elf.ELFDATA2MSB},
}

// ParseArch returns the architecture called name (a GOARCH name; x86_64 and aarch64, the
// kernel's names, are accepted too).
func ParseArch(name string) (Arch, error) {
	switch name {
	case "x86_64":
		name = "amd64"
	case "aarch64":
		name = "arm64"
	}
	var names []string
	for _, a := range Arches {
		if a.Name == name {
			return a, nil
		}
		names = append(names, a.Name)
	}
	return Arch{}, fmt.Errorf("unknown architecture %q (known: %s)", name, strings.Join(names, ", "))
}

// HostArch is the architecture this program runs on.
func HostArch() Arch {
	a, err := ParseArch(runtime.GOARCH)
	if err != nil {
		return Arch{Name: runtime.GOARCH}
	}
	return a
}

// archOf returns the architecture of an ELF file, ok false for one of no known architecture.
func archOf(f *elf.File) (Arch, bool) {
	for _, a := range Arches {
		if f.Machine == a.Machine && f.Class == a.Class && f.Data == a.Data {
			return a, true
		}
	}
	return Arch{}, false
}

// describe names an ELF file's architecture for messages.
func describe(f *elf.File) string {
	if a, ok := archOf(f); ok {
		return a.Name
	}
	return fmt.Sprintf("%v (%v)", f.Machine, f.Class)
}

// modulesArch returns the architecture the kernel modules of d were built for, read from
// the ELF header of one module; ok is false for a kernel without module files.
func modulesArch(d *depmod.Dir) (Arch, bool, error) {
	for _, n := range d.Names() {
		file, _ := d.File(n)
		data, err := depmod.ReadModuleFile(filepath.Join(d.Path, filepath.FromSlash(file)))
		if err != nil {
			return Arch{}, false, err
		}
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return Arch{}, false, fmt.Errorf("module %s: %w", file, err)
		}
		a, ok := archOf(f)
		if !ok {
			return Arch{}, false, fmt.Errorf("module %s is built for %s, an architecture nbdroot does not build images for", file, describe(f))
		}
		return a, true, nil
	}
	return Arch{}, false, nil
}

// InitError is an --init binary the kernel could not run as /init: the image would end in
// a kernel panic ("Requested init /init failed"), so the builder refuses it.
type InitError struct {
	Path string
	// Problem says what is wrong and what to do, in a few words.
	Problem string
	// Err is the underlying error (reading the file), when there is one.
	Err error
}

func (e *InitError) Error() string { return fmt.Sprintf("--init %s: %s", e.Path, e.Problem) }

func (e *InitError) Unwrap() error { return e.Err }

// InitMainPackage is the Go package of nbdroot's init, as its build information names it.
const InitMainPackage = "github.com/nbdroot/nbdroot/cmd/nbdroot-init"

// CheckInit checks that path can be the /init of an image for arch: a regular file, an ELF
// executable (not a shared library, not a script) of that architecture, statically linked
// (the image has no dynamic loader or libraries). Anything else is an *InitError. A program
// that passes but is not nbdroot-init (its Go build information names another package, or
// it has none) gives a warning: the kernel can run it, but it will not boot from NBD.
func CheckInit(path string, arch Arch) (warnings []string, err error) {
	bad := func(format string, a ...any) ([]string, error) {
		return nil, &InitError{Path: path, Problem: fmt.Sprintf(format, a...)}
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, &InitError{Path: path, Problem: err.Error(), Err: err}
	}
	if !st.Mode().IsRegular() {
		return bad("not a regular file")
	}
	f, err := elf.Open(path)
	if err != nil {
		var fe *elf.FormatError
		if errors.As(err, &fe) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return bad("not an ELF executable (%v): give the nbdroot-init binary (make build)", err)
		}
		return nil, &InitError{Path: path, Problem: err.Error(), Err: err}
	}
	defer f.Close()
	if a, ok := archOf(f); !ok || a.Name != arch.Name {
		return bad("an executable for %s, but the image is for %s (the kernel modules' architecture, or --arch): build the init with GOARCH=%s CGO_ENABLED=0", describe(f), arch.Name, arch.Name)
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err == nil {
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
	}
	switch f.Type {
	case elf.ET_EXEC:
	case elf.ET_DYN:
		// A static-pie program is ET_DYN too; only the PIE flag tells it from a library.
		if !pie(f) && interp == "" {
			return bad("a shared library, not a program")
		}
	default:
		return bad("an ELF %v file, not an executable", f.Type)
	}
	if f.Entry == 0 {
		return bad("an ELF file without an entry point, not a program")
	}
	if interp != "" {
		return bad("dynamically linked (program interpreter %s), but the initramfs has no dynamic loader or libraries: build it statically (CGO_ENABLED=0)", interp)
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		return bad("needs shared libraries (%s), but the initramfs has none: build it statically (CGO_ENABLED=0)", strings.Join(libs, ", "))
	}
	info, err := buildinfo.ReadFile(path)
	switch {
	case err != nil:
		warnings = append(warnings, fmt.Sprintf("--init %s is not a Go program, so not nbdroot-init: the kernel will run it as /init, but nothing in the image boots from NBD", path))
	case info.Path != InitMainPackage:
		warnings = append(warnings, fmt.Sprintf("--init %s is the Go program %s, not nbdroot-init (%s): the kernel will run it as /init, but it will not run the image's hooks", path, info.Path, InitMainPackage))
	}
	return warnings, nil
}

// pie reports whether a dynamic-type ELF file is a position-independent executable
// (DT_FLAGS_1 has DF_1_PIE), as static-pie programs are.
func pie(f *elf.File) bool {
	vals, err := f.DynValue(elf.DT_FLAGS_1)
	if err != nil {
		return false
	}
	for _, v := range vals {
		if elf.DynFlag1(v)&elf.DF_1_PIE != 0 {
			return true
		}
	}
	return false
}

// DefaultInit finds the nbdroot-init binary for arch beside the running program exe
// (os.Executable): DIR/nbdroot-init when it is built for arch, else DIR/ARCH/nbdroot-init
// (what `make build` puts in build/arm64/ for arm64 images), else the same two in the
// installed place (InstalledInit). It returns "" and the places it looked when there is
// none.
func DefaultInit(exe string, arch Arch) (string, []string) {
	return findInit(exe, arch, "nbdroot-init")
}

// DefaultTLSInit is DefaultInit for the init built with TLS (TLSInitName), which images
// with TLS files need.
func DefaultTLSInit(exe string, arch Arch) (string, []string) {
	return findInit(exe, arch, TLSInitName)
}

// findInit looks for the init binary called name for arch, as DefaultInit says.
func findInit(exe string, arch Arch, name string) (string, []string) {
	dir := filepath.Dir(exe)
	inst := filepath.Dir(filepath.Join(dir, InstalledInit))
	var tried []string
	for _, cand := range []string{
		filepath.Join(dir, name), filepath.Join(dir, arch.Name, name),
		filepath.Join(inst, name), filepath.Join(inst, arch.Name, name),
	} {
		tried = append(tried, cand)
		f, err := elf.Open(cand)
		if err != nil {
			continue
		}
		a, ok := archOf(f)
		f.Close()
		if ok && a.Name == arch.Name {
			return cand, nil
		}
	}
	return "", tried
}
