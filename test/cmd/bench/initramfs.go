package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"

	"github.com/nbdroot/nbdroot/kmod/depmod"
	"github.com/nbdroot/nbdroot/test/vm"
)

// The initramfs build benchmark (issue 16): how long `nbdroot initramfs` takes for a
// distribution's kernel against that distribution's own builders on the same kernel —
// initramfs-tools' mkinitramfs (what update-initramfs runs) and dracut — in rounds that
// alternate the builders; median and min–max of wall time, and CPU time (user+system of
// the builder and every process it ran), which the machine's other load disturbs less.
//
// Each distribution is the distribution tests' debootstrapped root (vm.DebianRoot:
// linux-image-amd64 with initramfs-tools, debootstrap's pick), copied once per machine
// into NBDROOT_CACHE/roots with zstd added (bench-SUITE-zstd) and, for dracut, with apt
// replacing initramfs-tools by dracut (bench-SUITE-dracut-zstd). The baselines run inside
// their root (chroot, in a private mount namespace with /proc, /sys
// and /dev) and build their default generic image — mkinitramfs with MODULES=most,
// dracut --no-hostonly — zstd-compressed like ours. Ours runs on the host against the
// root (--root), and once more against a copy of the modules without depmod's indexes,
// as an unpacked kernel package is.

// initramfsSuites are the distributions measured: Debian 12 (6.1, plain .ko) and
// Debian 13 (6.12, .ko.xz), the distribution tests' (vm.DebianSuites).
var initramfsSuites = []struct{ suite, name string }{
	{"bookworm", "Debian 12"},
	{"trixie", "Debian 13"},
}

// initramfsBuilder is one way of building an image for the kernel of a root.
type initramfsBuilder struct {
	name string
	// root is the root the builder runs in (baselines) or reads (ours).
	root string
	// build writes the image to out (a host path) and returns the process it ran.
	build func(ctx context.Context, out string) (*exec.Cmd, error)
}

// initramfsSample is one timed build.
type initramfsSample struct{ wall, cpu time.Duration }

func benchInitramfs(ctx context.Context, e *env) (string, error) {
	for _, tool := range []string{"debootstrap", "unshare", "chroot"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s is needed to make and enter the distribution roots: %w", tool, err)
		}
	}
	rounds := 5
	if e.Quick {
		rounds = 1
	}
	var b strings.Builder
	fmt.Fprintf(&b, "### Initramfs build time: nbdroot vs update-initramfs and dracut (same kernel, %d rounds alternating, median [min–max])\n\n", rounds)
	fmt.Fprintf(&b, "| kernel | builder | modules in image | image (zstd) | wall | CPU (user+sys) | wall vs nbdroot |\n|---|---|---|---|---|---|---|\n")
	for _, s := range initramfsSuites {
		rows, err := benchInitramfsSuite(ctx, e, s.suite, s.name, rounds)
		if err != nil {
			return "", fmt.Errorf("%s: %w", s.name, err)
		}
		b.WriteString(rows)
	}
	fmt.Fprintf(&b, "\nBaselines build their default generic image inside a debootstrapped root (mkinitramfs -c zstd, MODULES=most; dracut --no-hostonly --zstd); nbdroot builds its default image (hooks base udev net nbd encrypt filesystems) from the same root. \"no indexes\" is nbdroot on the same modules without depmod's modules.dep/modules.alias, as in an unpacked kernel package: every module's .modinfo is read. Load average at the end: %s.\n", loadAverage())
	return b.String(), nil
}

// benchInitramfsSuite measures every builder on one distribution's kernel and returns
// the table rows.
func benchInitramfsSuite(ctx context.Context, e *env, suite, name string, rounds int) (string, error) {
	root, err := benchRoot(ctx, suite, "zstd")
	if err != nil {
		return "", err
	}
	dracutRoot, err := benchRoot(ctx, suite, "dracut", "zstd")
	if err != nil {
		return "", err
	}
	kvers, err := filepath.Glob(filepath.Join(root, "lib", "modules", "*"))
	if err != nil || len(kvers) != 1 {
		return "", fmt.Errorf("%s: want one kernel under lib/modules, found %v", root, kvers)
	}
	kver := filepath.Base(kvers[0])
	bare, err := modulesWithoutIndexes(e.Work, kvers[0])
	if err != nil {
		return "", err
	}
	nbdroot := func(args ...string) func(ctx context.Context, out string) (*exec.Cmd, error) {
		return func(ctx context.Context, out string) (*exec.Cmd, error) {
			argv := append([]string{"initramfs", "--init", filepath.Join(e.Build, "nbdroot-init"), "-o", out}, args...)
			return exec.CommandContext(ctx, filepath.Join(e.Build, "nbdroot"), argv...), nil
		}
	}
	builders := []initramfsBuilder{
		{name: "nbdroot initramfs", root: root, build: nbdroot("--root", root)},
		{name: "nbdroot initramfs, no indexes", root: root, build: nbdroot("--modules", bare,
			"--kernel-config", filepath.Join(root, "boot", "config-"+kver), "--firmware", filepath.Join(root, "lib", "firmware"))},
		{name: "update-initramfs (mkinitramfs)", root: root, build: func(ctx context.Context, out string) (*exec.Cmd, error) {
			return inRoot(ctx, root, "mkinitramfs", "-c", "zstd", "-o", "/tmp/bench.img", kver), nil
		}},
		{name: "dracut", root: dracutRoot, build: func(ctx context.Context, out string) (*exec.Cmd, error) {
			return inRoot(ctx, dracutRoot, "dracut", "--force", "--no-hostonly", "--zstd", "/tmp/bench.img", kver), nil
		}},
	}
	samples := make([][]initramfsSample, len(builders))
	images := make([]string, len(builders))
	for r := 0; r < rounds; r++ {
		for i, bl := range builders {
			out := filepath.Join(e.Work, fmt.Sprintf("initramfs-%d.img", i))
			cmd, _ := bl.build(ctx, out)
			var stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			start := time.Now()
			err := cmd.Run()
			wall := time.Since(start)
			if err != nil {
				return "", fmt.Errorf("%s: %v\n%s", bl.name, err, tail(stderr.String(), 20))
			}
			if !strings.HasPrefix(bl.name, "nbdroot") {
				// The baseline wrote into its root's /tmp.
				if err := os.Rename(filepath.Join(bl.root, "tmp", "bench.img"), out); err != nil {
					return "", fmt.Errorf("%s: %w", bl.name, err)
				}
			}
			s := initramfsSample{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()}
			fmt.Fprintf(os.Stderr, "bench: initramfs %s %s #%d: %.2f s wall, %.2f s CPU\n", name, bl.name, r+1, s.wall.Seconds(), s.cpu.Seconds())
			samples[i] = append(samples[i], s)
			images[i] = out
		}
	}
	var b strings.Builder
	ourWall := initramfsMedian(samples[0], wallOf2)
	for i, bl := range builders {
		mods, err := imageModules(images[i])
		if err != nil {
			return "", fmt.Errorf("%s image: %w", bl.name, err)
		}
		st, err := os.Stat(images[i])
		if err != nil {
			return "", err
		}
		wall := initramfsMedian(samples[i], wallOf2)
		fmt.Fprintf(&b, "| %s %s | %s | %d | %.1f MiB | %s | %s | %.1f× |\n", name, kver, bl.name, mods,
			float64(st.Size())/(1<<20), spread(samples[i], wallOf2), spread(samples[i], cpuOf2), wall.Seconds()/ourWall.Seconds())
	}
	return b.String(), nil
}

func wallOf2(s initramfsSample) time.Duration { return s.wall }
func cpuOf2(s initramfsSample) time.Duration  { return s.cpu }

func initramfsMedian(samples []initramfsSample, f func(initramfsSample) time.Duration) time.Duration {
	s := make([]time.Duration, len(samples))
	for i, x := range samples {
		s[i] = f(x)
	}
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread formats the median and the range of samples: "1.23 s [1.10–1.40]".
func spread(samples []initramfsSample, f func(initramfsSample) time.Duration) string {
	lo, hi := f(samples[0]), f(samples[0])
	for _, s := range samples {
		lo, hi = min(lo, f(s)), max(hi, f(s))
	}
	return fmt.Sprintf("%.2f s [%.2f–%.2f]", initramfsMedian(samples, f).Seconds(), lo.Seconds(), hi.Seconds())
}

// benchRoot returns a root for measuring the distribution's own builder: a copy of the
// distribution tests' cached root of suite with packages installed by apt — zstd for
// mkinitramfs, dracut (which replaces initramfs-tools) — cached beside it as
// bench-SUITE-PACKAGES (vm.DebianRootWith).
func benchRoot(ctx context.Context, suite string, packages ...string) (dir string, err error) {
	defer func() {
		// vm reports failures by panicking through the Runner.
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	fmt.Fprintf(os.Stderr, "bench: Debian %s root with %s\n", suite, strings.Join(packages, " "))
	return vm.DebianRootWith(vm.NewRunner("bench"), suite, "bench-", packages...), nil
}

// inRoot runs argv chrooted into root (vm.InRoot).
func inRoot(ctx context.Context, root string, argv ...string) *exec.Cmd {
	return vm.InRoot(ctx, root, argv...)
}

// modulesWithoutIndexes makes a copy of the modules directory dir (hard links when the
// file system allows) without depmod's output, as an unpacked kernel package has it.
func modulesWithoutIndexes(work, dir string) (string, error) {
	out := filepath.Join(work, "bare", filepath.Base(dir))
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", err
	}
	os.RemoveAll(out)
	if err := exec.Command("cp", "-al", dir, out).Run(); err != nil {
		os.RemoveAll(out)
		if b, err := exec.Command("cp", "-a", dir, out).CombinedOutput(); err != nil {
			return "", fmt.Errorf("cp: %v: %s", err, b)
		}
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return "", err
	}
	keep := map[string]bool{"modules.builtin": true, "modules.builtin.modinfo": true, "modules.order": true}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), "modules.") && !keep[e.Name()] {
			if err := os.Remove(filepath.Join(out, e.Name())); err != nil {
				return "", err
			}
		}
	}
	return out, nil
}

// imageModules counts the kernel modules in an initramfs: one or more cpio archives,
// uncompressed (early microcode) or compressed with zstd, gzip or xz, one after another.
func imageModules(path string) (int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for len(data) > 0 {
		switch {
		case data[0] == 0:
			data = data[1:] // padding between archives
		case bytes.HasPrefix(data, []byte("070701")):
			names, rest, err := cpioNames(data)
			if err != nil {
				return 0, err
			}
			for _, name := range names {
				if _, ok := depmod.ModuleFileName(name); ok {
					n++
				}
			}
			data = rest
		default:
			var r io.Reader
			switch {
			case bytes.HasPrefix(data, []byte{0x28, 0xb5, 0x2f, 0xfd}):
				zr, err := zstd.NewReader(bytes.NewReader(data))
				if err != nil {
					return 0, err
				}
				defer zr.Close()
				r = zr
			case bytes.HasPrefix(data, []byte{0x1f, 0x8b}):
				gr, err := gzip.NewReader(bytes.NewReader(data))
				if err != nil {
					return 0, err
				}
				r = gr
			case bytes.HasPrefix(data, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
				xr, err := xz.NewReader(bytes.NewReader(data))
				if err != nil {
					return 0, err
				}
				r = xr
			default:
				return 0, fmt.Errorf("unknown data at the end of the image: % x", data[:min(8, len(data))])
			}
			plain, err := io.ReadAll(r)
			if err != nil {
				return 0, err
			}
			m, err := imageModulesOf(plain)
			return n + m, err
		}
	}
	return n, nil
}

// imageModulesOf counts the modules of uncompressed cpio archives.
func imageModulesOf(data []byte) (int, error) {
	n := 0
	for len(data) > 0 {
		if data[0] == 0 {
			data = data[1:]
			continue
		}
		names, rest, err := cpioNames(data)
		if err != nil {
			return 0, err
		}
		for _, name := range names {
			if _, ok := depmod.ModuleFileName(name); ok {
				n++
			}
		}
		data = rest
	}
	return n, nil
}

// cpioNames lists the file names of the newc cpio archive at the start of data and
// returns what follows its trailer.
func cpioNames(data []byte) (names []string, rest []byte, err error) {
	const hdr = 110
	pad4 := func(n int) int { return (n + 3) &^ 3 }
	for {
		if len(data) < hdr || string(data[:6]) != "070701" {
			return nil, nil, errors.New("cpio: bad header")
		}
		field := func(i int) int {
			v, _ := strconv.ParseUint(string(data[6+8*i:14+8*i]), 16, 32)
			return int(v)
		}
		fileSize, nameSize := field(6), field(11)
		if nameSize < 1 || hdr+nameSize > len(data) {
			return nil, nil, errors.New("cpio: bad name size")
		}
		name := string(data[hdr : hdr+nameSize-1])
		next := pad4(hdr+nameSize) + pad4(fileSize)
		if next > len(data) {
			next = len(data)
		}
		data = data[next:]
		if name == "TRAILER!!!" {
			return names, data, nil
		}
		names = append(names, name)
	}
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
