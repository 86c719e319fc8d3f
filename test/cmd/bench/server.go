package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The server section compares `nbdroot serve` with nbdkit (file plugin), nbd-server and
// qemu-nbd over loopback TCP, with nbdkit's null plugin as the protocol ceiling:
//
//   - fio --ioengine=nbd, 4 KiB random reads and writes at queue depth 32 (IOPS);
//   - nbdcopy of the whole image to null: (with --no-extents, so all data is read) and
//     from a file (MiB/s), with nbdcopy's defaults (multi-conn where the server offers it).
//
// Every server is started here on 127.0.0.1 with a free port and stopped afterwards. Runs
// are interleaved — each round runs every server once — and the table shows medians, so a
// burst of load elsewhere on the machine hits all servers alike.

// benchServer runs the section.
func benchServer(ctx context.Context, e *env) (string, error) {
	for _, tool := range []string{"fio", "nbdcopy", "nbdkit", "nbd-server", "qemu-nbd"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s not installed (make deps)", tool)
		}
	}
	nbdroot, err := srvNbdroot(ctx, e)
	if err != nil {
		return "", err
	}
	size := int64(1 << 30)
	rounds, fioTime := 7, 3*time.Second
	if e.Quick {
		size, rounds, fioTime = 256<<20, 1, 2*time.Second
	}
	img := filepath.Join(e.Work, "bench.img")
	src := filepath.Join(e.Work, "source.bin")
	for _, p := range []string{img, src} {
		if err := srvRandomImage(p, size); err != nil {
			return "", err
		}
	}
	servers := []srvServer{
		{"nbdroot serve", func(ctx context.Context) (*srvProc, error) {
			return srvStartListening(ctx, e.Work, nbdroot, "serve", "--listen", "127.0.0.1:0", "--export", "bench="+img)
		}},
		{"nbdkit file", func(ctx context.Context) (*srvProc, error) {
			return srvStartOnPort(ctx, e.Work, func(port string) []string {
				return []string{"nbdkit", "-f", "-i", "127.0.0.1", "-p", port, "-e", "bench", "file", img}
			})
		}},
		{"nbd-server", func(ctx context.Context) (*srvProc, error) {
			return srvStartNbdServer(ctx, e.Work, img, "")
		}},
		{"qemu-nbd", func(ctx context.Context) (*srvProc, error) {
			return srvStartOnPort(ctx, e.Work, func(port string) []string {
				return []string{"qemu-nbd", "-f", "raw", "-b", "127.0.0.1", "-p", port, "-x", "bench", "-t", "-e", "8", "--cache=writeback", img}
			})
		}},
		{"nbdkit null (ceiling)", func(ctx context.Context) (*srvProc, error) {
			return srvStartOnPort(ctx, e.Work, func(port string) []string {
				return []string{"nbdkit", "-f", "-i", "127.0.0.1", "-p", port, "-e", "bench", "null", fmt.Sprintf("size=%d", size)}
			})
		}},
	}
	loads := []srvWorkload{
		{"randread", "IOPS", func(ctx context.Context, uri string) (float64, error) {
			return srvFioIOPS(ctx, uri, "randread", fioTime)
		}},
		{"randwrite", "IOPS", func(ctx context.Context, uri string) (float64, error) {
			return srvFioIOPS(ctx, uri, "randwrite", fioTime)
		}},
		{"seq read", "MiB/s", func(ctx context.Context, uri string) (float64, error) {
			return srvNbdcopyRate(ctx, size, "--no-extents", uri, "null:")
		}},
		{"seq write", "MiB/s", func(ctx context.Context, uri string) (float64, error) { return srvNbdcopyRate(ctx, size, src, uri) }},
	}
	results := make([][][]float64, len(servers)) // [server][workload][round]
	cpuUse := make([][][]float64, len(servers))  // server CPU seconds per workload run
	for i := range results {
		results[i] = make([][]float64, len(loads))
		cpuUse[i] = make([][]float64, len(loads))
	}
	for round := 0; round < rounds; round++ {
		// Rotate who goes first, so no server always meets the same neighbours' load.
		for k := range servers {
			si := (k + round) % len(servers)
			s := servers[si]
			if err := ctx.Err(); err != nil {
				return "", err
			}
			// Same starting point for everyone: the images in the page cache, nothing dirty.
			srvWarm(img)
			srvWarm(src)
			r, err := s.start(ctx)
			if err != nil {
				return "", fmt.Errorf("%s: %w", s.name, err)
			}
			for li, l := range loads {
				cpu0 := srvCPU(r)
				v, err := l.run(ctx, r.uri)
				if cpu1 := srvCPU(r); cpu0 >= 0 && cpu1 >= 0 {
					cpuUse[si][li] = append(cpuUse[si][li], cpu1-cpu0)
				}
				if err != nil {
					r.stop()
					return "", fmt.Errorf("%s %s: %w\n%s", s.name, l.name, err, r.log())
				}
				results[si][li] = append(results[si][li], v)
				fmt.Fprintf(os.Stderr, "bench: server round %d: %-22s %-10s %10.0f %s\n", round+1, s.name, l.name, v, l.unit)
			}
			r.stop()
		}
	}
	return srvTable(servers, loads, results, rounds, size) + srvCPUTable(servers, loads, results, cpuUse, fioTime, size), nil
}

type srvServer struct {
	name  string
	start func(ctx context.Context) (*srvProc, error)
}

type srvWorkload struct {
	name, unit string
	run        func(ctx context.Context, uri string) (float64, error)
}

func srvMedian(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func srvTable(servers []srvServer, loads []srvWorkload, res [][][]float64, rounds int, size int64) string {
	var b strings.Builder
	fmt.Fprintf(&b, "### NBD server over loopback TCP (%d CPUs; medians of %d interleaved rounds)\n\n", runtime.NumCPU(), rounds)
	b.WriteString("| server |")
	for _, l := range loads {
		fmt.Fprintf(&b, " %s %s | × nbdkit |", l.name, l.unit)
	}
	b.WriteString("\n|---|")
	for range loads {
		b.WriteString("---:|---:|")
	}
	b.WriteString("\n")
	const ref, ours, ceiling = 1, 0, 4 // indexes into servers
	for si, s := range servers {
		fmt.Fprintf(&b, "| %s |", s.name)
		for li := range loads {
			v, r := srvMedian(res[si][li]), srvMedian(res[ref][li])
			fmt.Fprintf(&b, " %s | %.2f× |", srvHuman(v), v/r)
		}
		b.WriteString("\n")
	}
	floors := true
	for li := range loads {
		if srvMedian(res[ours][li]) < srvMedian(res[ref][li]) {
			floors = false
		}
	}
	rr := srvMedian(res[ours][0]) / srvMedian(res[ceiling][0])
	sr := srvMedian(res[ours][2]) / srvMedian(res[ceiling][2])
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "NOT met"
	}
	fmt.Fprintf(&b, "\nfio: 4 KiB blocks, queue depth 32, one job. nbdcopy: the whole %d MiB image with its default connections and\n"+
		"request sizes; reads with --no-extents, so every byte crosses the wire (with extents nbdcopy would skip null's \"holes\").\n", size>>20)
	fmt.Fprintf(&b, "Floor ≥ 1.0× nbdkit file on all four: %s. Reads vs the nbdkit null ceiling: random %.0f%%, sequential %.0f%% (floor 90%%: %s).\n",
		verdict(floors), 100*rr, 100*sr, verdict(rr >= 0.9 && sr >= 0.9))
	return b.String()
}

func srvHuman(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.1fGi", v/(1<<30))
	case v >= 10000:
		return fmt.Sprintf("%.1fk", v/1000)
	}
	return fmt.Sprintf("%.0f", v)
}

// srvNbdroot is build/nbdroot (what `make bench` just built), or a fresh build.
func srvNbdroot(ctx context.Context, e *env) (string, error) {
	p := filepath.Join(e.Build, "nbdroot")
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p, nil
	}
	out := filepath.Join(e.Work, "nbdroot")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/nbdroot")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building nbdroot: %w", err)
	}
	return out, nil
}

// srvRandomImage writes size bytes of incompressible data (ChaCha8), fast.
func srvRandomImage(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	var seed [32]byte
	copy(seed[:], path)
	rng := rand.NewChaCha8(seed)
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

// srvWarm puts an image in the page cache the way a long-running server's cache looks:
// written back, then read in 64 KiB pieces without readahead. A freshly written file sits
// in large folios, and on recent kernels each 4 KiB write into one costs ~100 µs of
// write-back work — that would measure the kernel, identically for every server, rather
// than the servers.
func srvWarm(path string) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return
	}
	defer f.Close()
	fd := int(f.Fd())
	unix.Fdatasync(fd)
	unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED)
	unix.Fadvise(fd, 0, 0, unix.FADV_RANDOM)
	buf := make([]byte, 64<<10)
	for off := int64(0); ; off += int64(len(buf)) {
		if n, _ := f.ReadAt(buf, off); n == 0 {
			return
		}
	}
}

// srvProc is a server process started by the bench.
type srvProc struct {
	forks  bool // serves each client in a child process (nbd-server)
	cmd    *exec.Cmd
	uri    string
	output *srvLog
	done   chan struct{}
}

type srvLog struct {
	mu chan struct{}
	b  strings.Builder
}

func newSrvLog() *srvLog { return &srvLog{mu: make(chan struct{}, 1)} }

func (l *srvLog) Write(p []byte) (int, error) {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.b.Write(p)
}

func (l *srvLog) String() string {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.b.String()
}

func (r *srvProc) log() string { return r.output.String() }

// stop ends the server (SIGTERM, then SIGKILL) and waits for it.
func (r *srvProc) stop() {
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
}

func srvStart(ctx context.Context, args []string, stderr io.Writer) (*srvProc, error) {
	cmd := exec.Command(args[0], args[1:]...)
	out := newSrvLog()
	cmd.Stdout = out
	cmd.Stderr = out
	if stderr != nil {
		cmd.Stderr = stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	r := &srvProc{cmd: cmd, output: out, done: make(chan struct{})}
	go func() { cmd.Wait(); close(r.done) }()
	return r, nil
}

// srvStartListening starts nbdroot with --listen 127.0.0.1:0 and reads the port from its
// "listening on ADDR" line.
func srvStartListening(ctx context.Context, work string, args ...string) (*srvProc, error) {
	pr, pw := io.Pipe()
	r, err := srvStart(ctx, args, pw)
	if err != nil {
		return nil, err
	}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.output.Write([]byte(sc.Text() + "\n"))
			if a, ok := strings.CutPrefix(sc.Text(), "listening on "); ok {
				select {
				case addrc <- a:
				default:
				}
			}
		}
	}()
	go func() { <-r.done; pw.Close() }()
	select {
	case a := <-addrc:
		r.uri = "nbd://" + a + "/bench"
		return r, nil
	case <-r.done:
		return nil, fmt.Errorf("exited before listening:\n%s", r.log())
	case <-time.After(20 * time.Second):
		r.stop()
		return nil, fmt.Errorf("no 'listening on' line:\n%s", r.log())
	}
}

// srvStartOnPort starts a server that needs a port number on its command line: it picks a free
// port and waits until the server accepts NBD connections there.
func srvStartOnPort(ctx context.Context, work string, argv func(port string) []string) (*srvProc, error) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := srvFreePort()
		if err != nil {
			return nil, err
		}
		r, err := srvStart(ctx, argv(port), nil)
		if err != nil {
			return nil, err
		}
		addr := net.JoinHostPort("127.0.0.1", port)
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			if srvGreets(addr) {
				r.uri = "nbd://" + addr + "/bench"
				return r, nil
			}
			select {
			case <-r.done:
				lastErr = fmt.Errorf("exited: %s", r.log())
				deadline = time.Time{}
			case <-time.After(50 * time.Millisecond):
			}
		}
		r.stop()
		if lastErr == nil {
			lastErr = fmt.Errorf("not accepting on %s:\n%s", addr, r.log())
		}
	}
	return nil, lastErr
}

func srvFreePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port, nil
}

// srvGreets reports whether an NBD server answers at addr (it sends NBDMAGIC first).
func srvGreets(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	b := make([]byte, 8)
	_, err = io.ReadFull(c, b)
	return err == nil && string(b) == "NBDMAGIC"
}

func srvFioIOPS(ctx context.Context, uri, rw string, d time.Duration) (float64, error) {
	cmd := exec.CommandContext(ctx, "fio", "--name=bench", "--ioengine=nbd", "--uri="+uri, "--rw="+rw, "--bs=4k",
		"--iodepth=32", "--numjobs=1", "--time_based", fmt.Sprintf("--runtime=%ds", int(d.Seconds())),
		"--ramp_time=1s", "--output-format=json")
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("fio: %w: %s", err, srvStderr(err))
	}
	var res struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS float64 `json:"iops"`
			} `json:"read"`
			Write struct {
				IOPS float64 `json:"iops"`
			} `json:"write"`
		} `json:"jobs"`
	}
	if i := strings.IndexByte(string(out), '{'); i > 0 {
		out = out[i:]
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, fmt.Errorf("fio output: %w", err)
	}
	if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 {
		return 0, errors.New("fio job failed")
	}
	if strings.HasSuffix(rw, "read") {
		return res.Jobs[0].Read.IOPS, nil
	}
	return res.Jobs[0].Write.IOPS, nil
}

func srvNbdcopyRate(ctx context.Context, size int64, args ...string) (float64, error) {
	began := time.Now()
	cmd := exec.CommandContext(ctx, "nbdcopy", args...)
	if _, err := cmd.Output(); err != nil {
		return 0, fmt.Errorf("nbdcopy: %w: %s", err, srvStderr(err))
	}
	return float64(size) / (1 << 20) / time.Since(began).Seconds(), nil
}

func srvStderr(err error) string {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return strings.TrimSpace(string(ee.Stderr))
	}
	return ""
}

// srvStartNbdServer starts nbd-server, which always daemonizes (its -d mode serves a single
// client): the bench follows it through its PID file. extra is added to the export's section.
func srvStartNbdServer(ctx context.Context, work, img, extra string) (*srvProc, error) {
	port, err := srvFreePort()
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(work, "nbd-server.conf")
	pidFile := filepath.Join(work, "nbd-server.pid")
	os.Remove(pidFile)
	if err := os.WriteFile(cfg, []byte("[generic]\nlistenaddr = 127.0.0.1\nport = "+port+
		"\n[bench]\nexportname = "+img+"\nflush = true\nfua = true\ntrim = true\n"+extra), 0o600); err != nil {
		return nil, err
	}
	out, err := exec.CommandContext(ctx, "nbd-server", "-C", cfg, "-p", pidFile).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("nbd-server: %w: %s", err, out)
	}
	var pid int
	addr := net.JoinHostPort("127.0.0.1", port)
	for deadline := time.Now().Add(20 * time.Second); ; {
		if b, err := os.ReadFile(pidFile); err == nil {
			fmt.Sscan(string(b), &pid)
		}
		if pid > 0 && srvGreets(addr) {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("nbd-server not accepting on %s: %s", addr, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	proc, err := os.FindProcess(pid)
	if err != nil {
		return nil, err
	}
	r := &srvProc{forks: true, cmd: &exec.Cmd{Process: proc}, output: newSrvLog(), done: make(chan struct{}), uri: "nbd://" + addr + "/bench"}
	go func() {
		// Not our child: poll for its exit.
		for proc.Signal(syscall.Signal(0)) == nil {
			time.Sleep(20 * time.Millisecond)
		}
		close(r.done)
	}()
	return r, nil
}

// srvCPU is the CPU time (user+system, seconds) the server process has used so far, from
// /proc; -1 where that does not describe the server (nbd-server forks a process per client).
func srvCPU(r *srvProc) float64 {
	if r.cmd.Process == nil || r.forks {
		return -1
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", r.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	// Fields after the command name (which may contain spaces): state is field 3;
	// utime and stime are fields 14 and 15, in clock ticks (100 per second on Linux).
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return -1
	}
	var ut, st float64
	fmt.Sscan(f[11], &ut)
	fmt.Sscan(f[12], &st)
	return (ut + st) / 100
}

// srvCPUTable shows how much CPU each server spends per unit of work: a measure of
// efficiency that, unlike throughput, hardly depends on what else the machine is doing.
func srvCPUTable(servers []srvServer, loads []srvWorkload, res, cpu [][][]float64, fioTime time.Duration, size int64) string {
	var b strings.Builder
	b.WriteString("\nServer CPU time per unit of work (user+system of the server process; lower is better):\n\n")
	b.WriteString("| server | randread µs/op | randwrite µs/op | seq read s/GiB | seq write s/GiB |\n|---|---:|---:|---:|---:|\n")
	for si, s := range servers {
		fmt.Fprintf(&b, "| %s |", s.name)
		for li := range loads {
			if len(cpu[si][li]) == 0 {
				b.WriteString(" n/a |")
				continue
			}
			c := srvMedian(cpu[si][li])
			if li < 2 {
				// fio ran for fioTime at the measured IOPS (plus a 1 s ramp we do not count).
				ops := srvMedian(res[si][li]) * (fioTime.Seconds() + 1)
				fmt.Fprintf(&b, " %.1f |", c/ops*1e6)
			} else {
				fmt.Fprintf(&b, " %.2f |", c/(float64(size)/(1<<30)))
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
