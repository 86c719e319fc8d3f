package initramfs

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

// microcodeVendors are the early microcode files the x86 kernel looks for in the initramfs
// (Documentation/arch/x86/microcode.rst): kernel/x86/microcode/VENDOR.bin of an
// uncompressed cpio archive in front of the image, and where distributions keep the
// updates: intel-ucode/FF-MM-SS files (Debian's intel-microcode, Arch's intel-ucode) and
// amd-ucode/*.bin containers (amd64-microcode, linux-firmware). Each vendor file is the
// concatenation of its updates, as dracut and mkinitcpio build it: the kernel picks the
// ones matching the CPU.
var microcodeVendors = []struct {
	file, dir, glob string
}{
	{"AuthenticAMD.bin", "amd-ucode", "*.bin"},
	{"GenuineIntel.bin", "intel-ucode", "*"},
}

// microcodePath is where the kernel looks for early microcode in the initramfs.
const microcodePath = "/kernel/x86/microcode"

// microcode builds the early archive of the microcode hook from the firmware directory:
// every update of every CPU model, since the build host's CPU says nothing about the
// clients'. It is stored uncompressed (the kernel reads it before it unpacks anything),
// which costs its full size in every download of the image.
func (img *image) microcode() error {
	if !img.hooks.Has("microcode") {
		return nil
	}
	if img.arch.Name != "amd64" && img.arch.Name != "386" {
		img.lines["microcode"] = "nothing to do on " + img.arch.Name + ": early microcode loading from the initramfs is x86's"
		return nil
	}
	dir := firmwareDir(img.opts, img.dir)
	t := newTree()
	var parts []string
	for _, v := range microcodeVendors {
		files, err := filepath.Glob(filepath.Join(dir, v.dir, v.glob))
		if err != nil {
			return err
		}
		sort.Strings(files)
		var blob []byte
		n := 0
		for _, f := range files {
			st, err := os.Stat(f)
			if err != nil || !st.Mode().IsRegular() {
				continue
			}
			b, err := os.ReadFile(f)
			if err != nil {
				return fmt.Errorf("microcode: %w", err)
			}
			blob = append(blob, b...)
			n++
		}
		if n == 0 {
			continue
		}
		if err := t.file(path.Join(microcodePath, v.file), blob, 0o644, "microcode "+filepath.Join(dir, v.dir)); err != nil {
			return err
		}
		desc := fmt.Sprintf("%s %s (%d files)", v.file, size(int64(len(blob))), n)
		img.sum.Microcode = append(img.sum.Microcode, desc)
		parts = append(parts, desc)
	}
	if len(parts) == 0 {
		img.lines["microcode"] = fmt.Sprintf("no microcode in %s (intel-ucode/, amd-ucode/: install intel-microcode or amd64-microcode in the root): none added", dir)
		return nil
	}
	img.early = t
	img.lines["microcode"] = "uncompressed early archive in front of the image: " + strings.Join(parts, ", ")
	return nil
}
