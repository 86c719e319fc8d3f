package netboot

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strings"
)

// The naming contract with the kernel hooks `nbdroot install` puts into a client root
// (docs/netboot.md): a kernel /boot/vmlinuz-VERSION boots with the nbdroot initramfs
// /boot/nbdroot.img-VERSION. The name differs from every distribution's own initramfs
// (Debian's initrd.img-VERSION, Fedora's initramfs-VERSION.img, Arch's
// initramfs-linux.img), so nbdroot's image sits beside theirs and neither overwrites the
// other. A directory without any versioned pair may hold the unversioned pair vmlinuz and
// nbdroot.img (an image built by hand with `nbdroot initramfs -o nbdroot.img`).
const (
	KernelPrefix = "vmlinuz-"
	InitrdPrefix = "nbdroot.img-"
	// KernelPlain and InitrdPlain are the unversioned pair.
	KernelPlain = "vmlinuz"
	InitrdPlain = "nbdroot.img"
)

// MaxBootFile bounds the size of a kernel or initramfs we serve: a larger one is a corrupt
// size field, not a boot file.
const MaxBootFile = 1 << 30

// Kernel is one bootable pair in a boot directory.
type Kernel struct {
	// Version is what follows "vmlinuz-" ("" for the unversioned pair).
	Version string
	// Kernel and Initrd are the file names in the directory.
	Kernel, Initrd string
}

// ErrNoKernel is wrapped by the error of an image whose /boot has no kernel with a
// matching nbdroot initramfs.
var ErrNoKernel = errors.New("no kernel with a matching nbdroot initramfs")

// FindKernels lists the bootable pairs of directory dir of fsys, newest first: every
// vmlinuz-VERSION that has an nbdroot.img-VERSION and is a regular file (symbolic links are
// followed) no larger than MaxBootFile, with a version of letters, digits and . _ - + ~. Notes say what was skipped and why, for the log.
func FindKernels(fsys fs.FS, dir string) ([]Kernel, []string, error) {
	ents, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, nil, err
	}
	names := map[string]bool{}
	for _, e := range ents {
		names[e.Name()] = true
	}
	var out []Kernel
	var notes []string
	usable := func(name string) bool {
		fi, err := fs.Stat(fsys, path.Join(dir, name))
		switch {
		case err != nil:
			notes = append(notes, fmt.Sprintf("%s: %v", name, err))
			return false
		case !fi.Mode().IsRegular():
			notes = append(notes, fmt.Sprintf("%s: not a regular file (%v)", name, fi.Mode().Type()))
			return false
		case fi.Size() == 0 || fi.Size() > MaxBootFile:
			notes = append(notes, fmt.Sprintf("%s: %d bytes", name, fi.Size()))
			return false
		}
		return true
	}
	for _, e := range ents {
		v, ok := strings.CutPrefix(e.Name(), KernelPrefix)
		if !ok || v == "" {
			continue
		}
		if !wordOK(v, "") {
			// The name goes into URLs, scripts and command lines unquoted.
			notes = append(notes, fmt.Sprintf("%q: a version with characters other than letters, digits and . _ - + ~: skipped", e.Name()))
			continue
		}
		initrd := InitrdPrefix + v
		if !names[initrd] {
			notes = append(notes, fmt.Sprintf("%s has no %s: skipped", e.Name(), initrd))
			continue
		}
		if usable(e.Name()) && usable(initrd) {
			out = append(out, Kernel{Version: v, Kernel: e.Name(), Initrd: initrd})
		}
	}
	slices.SortFunc(out, func(a, b Kernel) int { return CompareVersions(b.Version, a.Version) })
	if len(out) == 0 && names[KernelPlain] && names[InitrdPlain] && usable(KernelPlain) && usable(InitrdPlain) {
		out = append(out, Kernel{Kernel: KernelPlain, Initrd: InitrdPlain})
	}
	return out, notes, nil
}

// CompareVersions orders kernel versions: runs of digits compare as numbers, other runs
// byte by byte, and a number sorts after a word, so 6.1.0-18 comes after 6.1.0-9, 6.12
// after 6.2, and a numbered version after Arch's "linux". A version that is a prefix of
// another sorts first (6.1.0-18-amd64 before 6.1.0-18-amd64+b1).
func CompareVersions(a, b string) int {
	for a != "" && b != "" {
		ra, restA := versionRun(a)
		rb, restB := versionRun(b)
		da, db := isDigit(ra[0]), isDigit(rb[0])
		switch {
		case da && db:
			na, nb := strings.TrimLeft(ra, "0"), strings.TrimLeft(rb, "0")
			if c := len(na) - len(nb); c != 0 {
				return sign(c)
			}
			if c := strings.Compare(na, nb); c != 0 {
				return c
			}
		case da != db:
			// A number sorts after a word: 6.1 > 6.rc.
			if da {
				return 1
			}
			return -1
		default:
			if c := strings.Compare(ra, rb); c != 0 {
				return c
			}
		}
		a, b = restA, restB
	}
	return sign(len(a) - len(b))
}

func versionRun(s string) (run, rest string) {
	d := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == d {
		i++
	}
	return s[:i], s[i:]
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}
