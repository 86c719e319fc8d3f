package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbdclient/ktls"
	"github.com/nbdroot/nbdroot/test/pki"
	"github.com/nbdroot/nbdroot/test/vm"
)

// The TLS benchmark (issue 15): in a QEMU guest, the root device read sequentially and a
// file written with fsync, in clear text, with kernel TLS and through the keeper's relay —
// the same image, server and guest, only the command line differs — interleaved round by
// round; throughput from the guest's clock and the guest's CPU time (busy jiffies of
// /proc/stat, the keeper's relay included) per GiB. The export lives in tmpfs, so the
// server's disk is not what is measured. Goal: kernel TLS costs at most 15% of the clear-
// text throughput.

// tlsMeasureScript reads the whole root device and writes 64 MiB with fsync, twice, each
// between "MEASURE name t0 t1 busy0 busy1" (uptime seconds, busy jiffies).
const tlsMeasureScript = `echo "` + vm.Marker + `"
busy() { read c u n s i w q sq rest < /proc/stat; echo $((u+n+s+q+sq)); }
t() { read t0 _ < /proc/uptime; b0=$(busy); "$@"; read t1 _ < /proc/uptime; b1=$(busy); echo "MEASURE $name $t0 $t1 $b0 $b1"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
seqread() { dd if=/dev/nbd0 of=/dev/null bs=1M 2>/dev/null; }
write() { dd if=/dev/zero of=/bench bs=1M count=64 conv=fsync 2>/dev/null; }
for round in 1 2; do
	drop; name=read t seqread
	rm -f /bench; drop; name=write t write
done
echo MEASURE-DONE
poweroff -f
`

var tlsMeasureRe = regexp.MustCompile(`MEASURE (\w+) ([\d.]+) ([\d.]+) (\d+) (\d+)`)

// tlsMode is one way of carrying the root: its command line knobs.
type tlsMode struct{ name, append string }

var tlsModes = []tlsMode{
	{"clear text", "nbdroot.tls=off"},
	{"kernel TLS", ""},
	{"relay (keeper)", "nbdroot.ktls=0"},
}

// tlsSample is one measurement: MiB/s and guest CPU seconds per GiB.
type tlsSample struct{ rate, cpu float64 }

func benchTLS(ctx context.Context, e *env) (table string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	if e.Kernel == "" {
		return "", errors.New("no kernel: set NBDROOT_KERNEL (make bench does)")
	}
	r := vm.NewRunner("bench-tls")
	defer r.Close()
	venv, err := vm.NewEnv()
	if err != nil || venv == nil {
		return "", fmt.Errorf("test environment: %v", err)
	}
	defer venv.Close()
	p := pki.New(r, "bench-client", net.ParseIP(vm.GuestServerIP))
	initrd := venv.Initramfs(r, benchHooks, "--init", venv.Tool("nbdroot-init-tls"),
		"--tls-ca", p.File, "--tls-cert", p.Client.CertFile, "--tls-key", p.Client.KeyFile)

	// The export in tmpfs: 256 MiB, read whole.
	shm, err := os.MkdirTemp("/dev/shm", "nbdroot-bench-tls-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(shm)
	tree := filepath.Join(e.Work, "tls-root")
	if err := vm.RootTree(tree, vm.RootOptions{Init: tlsMeasureScript}); err != nil {
		return "", err
	}
	img := filepath.Join(shm, "root.img")
	if err := vm.MkfsExt4(img, tree, 256, 0); err != nil {
		return "", err
	}
	// One server for all modes: TLS allowed, not required, client certificates checked.
	srv := venv.StartServer(r, 0, "--export", "root="+img, "--tls", "allow", "--tls-cert", p.Server.CertFile,
		"--tls-key", p.Server.KeyFile, "--tls-ca", p.File)

	cpus := []struct{ name, model string }{{"qemu64 (no AES-NI: ChaCha20-Poly1305)", ""}, {"max (AES-NI: AES-GCM)", "max"}}
	boots := 2
	if e.Quick {
		boots, cpus = 1, cpus[:1]
	}
	samples := map[string]map[string][]tlsSample{} // cpu+mode → test → samples
	suites := map[string]string{}
	for _, cpu := range cpus {
		for i := 0; i < boots; i++ {
			for _, m := range tlsModes {
				key := cpu.name + "\x00" + m.name
				got, suite, err := tlsBootOnce(r, venv, initrd, srv.Port, m, cpu.model)
				if err != nil {
					return "", fmt.Errorf("%s, %s, boot %d: %w", cpu.name, m.name, i+1, err)
				}
				if suite != "" {
					suites[cpu.name] = suite
				}
				if samples[key] == nil {
					samples[key] = map[string][]tlsSample{}
				}
				for test, s := range got {
					samples[key][test] = append(samples[key][test], s...)
					for _, x := range s {
						fmt.Fprintf(os.Stderr, "bench: tls %s, %s, %s: %.1f MiB/s, %.2f CPU s/GiB\n", cpu.name, m.name, test, x.rate, x.cpu)
					}
				}
			}
		}
	}

	var b strings.Builder
	clock := "TCG"
	if len(bootQEMUArgs) > 0 {
		clock = "TCG, " + strings.Join(bootQEMUArgs, " ")
	}
	fmt.Fprintf(&b, "### TLS: clear text, kernel TLS and the keeper's relay (QEMU guest: %s, %d vCPU; %d boots per mode interleaved, 2 rounds each: mean (min–max))\n\n", clock, bootCPUs, boots)
	b.WriteString("| guest CPU | mode | seq read MiB/s | × clear | CPU s/GiB | write+fsync MiB/s | × clear | CPU s/GiB |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	var verdicts []string
	for _, cpu := range cpus {
		plain := samples[cpu.name+"\x00"+tlsModes[0].name]
		for _, m := range tlsModes {
			s := samples[cpu.name+"\x00"+m.name]
			row := fmt.Sprintf("| %s | %s", cpu.name, m.name)
			for _, test := range []string{"read", "write"} {
				rate, lo, hi := stats(s[test], func(x tlsSample) float64 { return x.rate })
				base, _, _ := stats(plain[test], func(x tlsSample) float64 { return x.rate })
				c, _, _ := stats(s[test], func(x tlsSample) float64 { return x.cpu })
				row += fmt.Sprintf(" | %.1f (%.1f–%.1f) | %.2f× | %.2f", rate, lo, hi, rate/base, c)
				if m.name == "kernel TLS" {
					met := "met"
					if rate < 0.85*base {
						met = "NOT met"
					}
					verdicts = append(verdicts, fmt.Sprintf("%s %s %.0f%% of clear text (%s)", cpu.name, test, 100*rate/base, met))
				}
			}
			b.WriteString(row + " |\n")
		}
	}
	fmt.Fprintf(&b, "\nNegotiated: %s. The server (`nbdroot serve`, host, AES-NI) is the same for all rows; the guest reads its whole 256 MiB root device and writes 64 MiB with fsync. CPU s/GiB is the guest's busy time (user+system+irq+softirq jiffies) per GiB moved: what the client pays.\n", joinSuites(cpus, suites))
	fmt.Fprintf(&b, "Goal: kernel TLS at ≥ 85%% of clear-text throughput: %s.\n", strings.Join(verdicts, "; "))
	b.WriteString("\nThe same record protection on this host's CPU, natively (package ktls, one core, 16 KiB records; what a relay costs, and the order of what the kernel's AEAD costs):\n\n| suite | GiB/s | CPU s/GiB | share of a core at 1 Gbit/s |\n|---|---:|---:|---:|\n")
	for _, suite := range []ktls.Suite{ktls.AES128GCMSHA256, ktls.AES256GCMSHA384, ktls.CHACHA20POLY1305SHA256} {
		gibs := sealRate(suite)
		fmt.Fprintf(&b, "| %s | %.2f | %.3f | %.1f%% |\n", suite, gibs, 1/gibs, 100*(0.125/1.074)/gibs)
	}
	return b.String(), nil
}

// sealRate measures how fast one core seals full records of suite, in GiB/s.
func sealRate(s ktls.Suite) float64 {
	secret := make([]byte, 32)
	if s == ktls.AES256GCMSHA384 {
		secret = make([]byte, 48)
	}
	c, err := ktls.NewCipher(s, ktls.Direction{Secret: secret})
	if err != nil {
		return 0
	}
	pt := make([]byte, ktls.MaxPlaintext)
	out := make([]byte, 0, ktls.HeaderLen+ktls.MaxCiphertext)
	start, n := time.Now(), 0
	for time.Since(start) < time.Second {
		for i := 0; i < 64; i++ {
			out, _ = c.Seal(out[:0], ktls.TypeApplicationData, pt)
			n += len(pt)
		}
	}
	return float64(n) / (1 << 30) / time.Since(start).Seconds()
}

func joinSuites(cpus []struct{ name, model string }, suites map[string]string) string {
	var out []string
	for _, c := range cpus {
		out = append(out, c.name+": "+suites[c.name])
	}
	return strings.Join(out, ", ")
}

// stats returns the mean, min and max of f over xs.
func stats(xs []tlsSample, f func(tlsSample) float64) (mean, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	lo, hi = f(xs[0]), f(xs[0])
	for _, x := range xs {
		v := f(x)
		mean += v
		lo, hi = min(lo, v), max(hi, v)
	}
	return mean / float64(len(xs)), lo, hi
}

var tlsSuiteRe = regexp.MustCompile(`nbd: TLS 1\.3 (TLS_\w+)`)

// tlsBootOnce boots the guest in one mode and returns its measurements by test, and the
// suite negotiated ("" in clear text).
func tlsBootOnce(r *vm.Runner, venv *vm.Env, initrd string, port int, m tlsMode, cpuModel string) (map[string][]tlsSample, string, error) {
	args := append([]string{}, bootQEMUArgs...)
	if cpuModel != "" {
		args = append(args, "-cpu", cpuModel)
	}
	v := vm.Start(r, vm.Options{
		Kernel: venv.Vmlinuz(), Initrd: initrd,
		Append:   strings.TrimSpace("ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw console=ttyS0 " + m.append),
		Forwards: map[int]int{10809: port}, Timeout: 10 * time.Minute, CPUs: bootCPUs, MemoryMB: 512,
		ExtraArgs: args,
	})
	defer v.Kill()
	if err := v.Wait(10 * time.Minute); err != nil && !strings.Contains(v.Console(), "MEASURE-DONE") {
		return nil, "", fmt.Errorf("%v; console:\n%s", err, v.Console())
	}
	out := v.Console()
	if !strings.Contains(out, "MEASURE-DONE") {
		return nil, "", fmt.Errorf("no measurements; console:\n%s", out)
	}
	suite := ""
	if s := tlsSuiteRe.FindStringSubmatch(out); s != nil {
		suite = s[1]
	}
	if (m.name == "clear text") != (suite == "") {
		return nil, "", fmt.Errorf("mode %s, but the console says TLS suite %q", m.name, suite)
	}
	res := map[string][]tlsSample{}
	for _, s := range tlsMeasureRe.FindAllStringSubmatch(out, -1) {
		t0, _ := strconv.ParseFloat(s[2], 64)
		t1, _ := strconv.ParseFloat(s[3], 64)
		b0, _ := strconv.ParseFloat(s[4], 64)
		b1, _ := strconv.ParseFloat(s[5], 64)
		mib := 256.0
		if s[1] == "write" {
			mib = 64
		}
		res[s[1]] = append(res[s[1]], tlsSample{rate: mib / (t1 - t0), cpu: (b1 - b0) / 100 / (mib / 1024)})
	}
	return res, suite, nil
}
