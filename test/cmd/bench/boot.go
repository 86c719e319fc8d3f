package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/test/vm"
	"github.com/u-root/u-root/pkg/cpio"
)

// The boot benchmark (issue 6): the init phase — from the kernel running /init to the exec of
// the root's init — of our image against a baseline initramfs built from Debian packages
// (busybox-static + nbd-client + the same modules, a shell init doing the same work), booted
// alternately in the same VM configuration; and the sizes of the images.

const benchHooks = "base udev net nbd filesystems"

// rootInit prints the uptime first thing: the end of the init phase.
const rootInit = `read up rest < /proc/uptime
echo "ROOT-INIT-UPTIME $up"
poweroff -f
`

// baselineInit is the shell init of the baseline image: what a busybox initramfs with
// nbd-client does for the seed's cmdline, module by module.
const baselineInit = `#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read m; do insmod /lib/modules/$m 2>/dev/null; done < /etc/modules.order
ip link set eth0 up
udhcpc -i eth0 -f -q -n -s /etc/udhcpc.script >/dev/null 2>&1
for p in $(cat /proc/cmdline); do
  case $p in nbd_server=*) s=${p#nbd_server=} ;; esac
done
nbd-client ${s%:*} ${s#*:} /dev/nbd0 -N "" >/dev/null 2>&1 || echo "nbd-client failed"
mkdir -p /newroot
mount -t ext4 -o ro /dev/nbd0 /newroot
for d in dev proc sys; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /sbin/init
`

const udhcpcScript = `#!/bin/sh
[ "$1" = bound ] || exit 0
ip addr add $ip/$mask dev $interface
[ -n "$router" ] && ip route add default via $router
exit 0
`

func benchBoot(ctx context.Context, e *env) (table string, err error) {
	defer func() {
		// The harness reports fatal problems by panicking (it stands in for testing.T).
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	if e.Kernel == "" {
		return "", errors.New("no kernel: set NBDROOT_KERNEL (make bench does)")
	}
	modules := filepath.Join(e.Kernel, "modules")
	ours := filepath.Join(e.Work, "ours.img")
	if out, err := exec.CommandContext(ctx, filepath.Join(e.Build, "nbdroot"), "initramfs", "--modules", modules,
		"--hooks", benchHooks, "--nics", "virtio_net,e1000", "--init", filepath.Join(e.Build, "nbdroot-init"),
		"-o", ours).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build our image: %v\n%s", err, out)
	}
	ix, err := imageIndex(ours)
	if err != nil {
		return "", err
	}
	base := filepath.Join(e.Work, "baseline.img")
	if err := buildBaseline(base, modules, ix); err != nil {
		return "", fmt.Errorf("build the baseline image: %w", err)
	}
	full := filepath.Join(e.Work, "ours-full.img")
	if out, err := exec.CommandContext(ctx, filepath.Join(e.Build, "nbdroot"), "initramfs", "--modules", modules,
		"--nics", "virtio_net,e1000", "--init", filepath.Join(e.Build, "nbdroot-init"), "-o", full).CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the default image: %v\n%s", err, out)
	}

	r := vm.NewRunner("bench")
	defer r.Close()
	venv, err := vm.NewEnv()
	if err != nil || venv == nil {
		return "", fmt.Errorf("test environment: %v", err)
	}
	defer venv.Close()
	img := venv.RootImage(r, vm.RootOptions{Init: rootInit})
	srv := venv.StartServer(r, 0, "--export", "root="+img)

	runs := 5
	if e.Quick {
		runs = 1
	}
	phase := map[string][]float64{}
	for i := 0; i < runs; i++ {
		for _, c := range []struct{ name, img string }{{"nbdroot", ours}, {"baseline", base}} {
			d, err := bootOnce(r, venv, c.img, srv.Port)
			if err != nil {
				return "", fmt.Errorf("%s boot %d: %w", c.name, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "bench: boot %s #%d: init phase %.3fs\n", c.name, i+1, d)
			phase[c.name] = append(phase[c.name], d)
		}
	}
	size := func(p string) float64 {
		st, _ := os.Stat(p)
		return float64(st.Size()) / (1 << 20)
	}
	mo, mb := median(phase["nbdroot"]), median(phase["baseline"])
	var b strings.Builder
	clock := "TCG"
	if len(bootQEMUArgs) > 0 {
		clock = "TCG, " + strings.Join(bootQEMUArgs, " ")
	}
	fmt.Fprintf(&b, "### Boot: init phase and image size (same kernel, same VM: %s, %d vCPU, %d boots each alternately, median)\n\n", clock, bootCPUs, runs)
	fmt.Fprintf(&b, "| image | hooks | size (zstd) | init phase: /init → root's init | ratio to baseline |\n|---|---|---|---|---|\n")
	fmt.Fprintf(&b, "| nbdroot | %s | %.2f MiB | %.3f s | %.2f× |\n", benchHooks, size(ours), mo, mo/mb)
	fmt.Fprintf(&b, "| baseline: busybox-static + nbd-client + same modules | same work | %.2f MiB | %.3f s | 1.00× |\n", size(base), mb)
	fmt.Fprintf(&b, "| nbdroot, default hooks (base udev net nbd encrypt filesystems), virtio + e1000 | | %.2f MiB | | |\n", size(full))
	return b.String(), nil
}

// bootCPUs is the number of virtual CPUs of the benchmark guest.
var bootCPUs = 1

// bootQEMUArgs are extra QEMU arguments for the benchmark guests.
var bootQEMUArgs []string

var (
	runInitRe = regexp.MustCompile(`\[ *(\d+\.\d+)\] Run /init as init process`)
	rootRe    = regexp.MustCompile(`ROOT-INIT-UPTIME (\d+\.\d+)`)
)

func bootOnce(r *vm.Runner, venv *vm.Env, initrd string, port int) (float64, error) {
	v := vm.Start(r, vm.Options{
		Kernel: venv.Vmlinuz(), Initrd: initrd,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 console=ttyS0",
		Forwards: map[int]int{10809: port}, Timeout: 3 * time.Minute, CPUs: bootCPUs,
		ExtraArgs: bootQEMUArgs,
	})
	defer v.Kill()
	if err := v.Wait(3 * time.Minute); err != nil && !strings.Contains(v.Console(), "ROOT-INIT-UPTIME") {
		return 0, fmt.Errorf("%v; console:\n%s", err, v.Console())
	}
	out := v.Console()
	a, b := runInitRe.FindStringSubmatch(out), rootRe.FindStringSubmatch(out)
	if a == nil || b == nil {
		return 0, fmt.Errorf("timestamps missing; console:\n%s", out)
	}
	t0, _ := strconv.ParseFloat(a[1], 64)
	t1, _ := strconv.ParseFloat(b[1], 64)
	return t1 - t0, nil
}

// imageIndex reads the module index out of one of our images.
func imageIndex(path string) (*kmod.Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := zstd.NewReader(f)
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, err
	}
	rr := cpio.Newc.Reader(bytes.NewReader(raw))
	for {
		rec, err := rr.ReadRecord()
		if err != nil {
			return nil, fmt.Errorf("no %s in %s: %w", kmod.IndexName, path, err)
		}
		if filepath.Base(rec.Name) == kmod.IndexName {
			return kmod.ReadIndex(io.NewSectionReader(rec.ReaderAt, 0, int64(rec.FileSize)))
		}
	}
}

// buildBaseline writes the baseline initramfs: busybox-static, Debian's nbd-client with its
// shared libraries, the modules of our image in dependency order, and the shell init.
func buildBaseline(out, modules string, ix *kmod.Index) error {
	var recs []cpio.Record
	dirs := map[string]bool{}
	addDir := func(d string) {
		for p := d; p != "." && p != "/" && !dirs[p]; p = filepath.Dir(p) {
			dirs[p] = true
		}
	}
	addFile := func(src, dst string, perm uint64) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		addDir(filepath.Dir(dst))
		recs = append(recs, cpio.StaticFile(dst, string(b), perm))
		return nil
	}
	for _, d := range []string{"proc", "sys", "dev", "run", "tmp", "newroot", "etc", "bin", "sbin"} {
		addDir(d)
	}
	if err := addFile("/bin/busybox", "bin/busybox", 0o755); err != nil {
		return err
	}
	for _, a := range []string{"sh", "mount", "insmod", "udhcpc", "ip", "switch_root", "mkdir", "cat", "sleep"} {
		recs = append(recs, cpio.Symlink("bin/"+a, "busybox"))
	}
	nbdc, err := exec.LookPath("nbd-client")
	if err != nil {
		return err
	}
	if err := addFile(nbdc, "sbin/nbd-client", 0o755); err != nil {
		return err
	}
	libs, err := sharedLibs(nbdc)
	if err != nil {
		return err
	}
	for _, l := range libs {
		real, err := filepath.EvalSymlinks(l)
		if err != nil {
			return err
		}
		if err := addFile(real, strings.TrimPrefix(l, "/"), 0o755); err != nil {
			return err
		}
	}
	var order []string
	for _, m := range ix.Modules {
		order = append(order, m.Path)
		if err := addFile(filepath.Join(modules, m.Path), filepath.Join("lib/modules", m.Path), 0o644); err != nil {
			return err
		}
	}
	recs = append(recs,
		cpio.StaticFile("etc/modules.order", strings.Join(order, "\n")+"\n", 0o644),
		cpio.StaticFile("etc/udhcpc.script", udhcpcScript, 0o755),
		cpio.StaticFile("init", baselineInit, 0o755),
		cpio.CharDev("dev/console", 0o600, 5, 1),
	)
	var all []cpio.Record
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	for _, d := range dl {
		all = append(all, cpio.Directory(d, 0o755))
	}
	all = append(all, recs...)
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	zw, err := zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedBestCompression))
	if err != nil {
		return err
	}
	w := cpio.Newc.Writer(zw)
	cpio.MakeAllReproducible(all)
	if err := cpio.WriteRecords(w, all); err != nil {
		return err
	}
	if err := cpio.WriteTrailer(w); err != nil {
		return err
	}
	return zw.Close()
}

// sharedLibs lists the shared libraries (and the dynamic loader) a program needs, from ldd.
func sharedLibs(prog string) ([]string, error) {
	out, err := exec.Command("ldd", prog).Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w", prog, err)
	}
	var libs []string
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"):
			libs = append(libs, f[0])
		}
	}
	return libs, nil
}

func median(x []float64) float64 {
	if len(x) == 0 {
		return 0
	}
	s := append([]float64(nil), x...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
