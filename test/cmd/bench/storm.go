package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdroot/nbdroot/test/storm"
)

// The storm section (issue 13): N simulated clients, one connection each, replay the reads
// of a recorded systemd boot (test/storm) against one read-only image, side by side with
// nbdkit (file plugin) and nbd-server, each started afresh for every run:
//
//   - the storm: the clients start within stormStagger of each other and send each burst
//     of the boot as soon as the previous one is answered (think time removed) — the
//     server-bound worst case, where the server alone decides how long the storm lasts.
//     Wall time, read latency percentiles, the server's CPU time during the storm and its
//     peak RSS;
//   - memory per idle connection: RSS (and anonymous memory) added by connections that
//     finished their handshake and send nothing;
//   - fairness: a paced storm (the boot's own think times) with and without one client
//     reading the image sequentially as fast as it can (a user copying a large file);
//     the boot clients' p99 read latency with the copy over without it.
//
// Servers take turns within each round, their order rotating, so load elsewhere on the
// machine hits all alike; tables show medians and, for ratios, the spread over rounds.

// stormTrace is the recorded boot, relative to the repository root (where make runs).
var stormTrace = "test/storm/testdata/debian12-systemd-boot.trace"

// stormStagger spreads the storm's starts: machines switched on together reach their first
// read a few seconds apart (firmware, PXE, kernel); with think time removed, so is this.
const stormStagger = 250 * time.Millisecond

// Flags of the storm section: client counts and rounds instead of the defaults, and
// which parts to run.
var (
	stormClients string
	stormRounds  int
	stormParts   = "table,idle,fairness"
)

type stormServer struct {
	name  string
	forks bool // one process per client (nbd-server): measure the process tree
	start func(ctx context.Context) (*srvProc, error)
}

// stormRun is one storm against one server.
type stormRun struct {
	res        *storm.Result
	cpu        float64 // seconds
	peak, anon int64   // bytes
	copied     int64   // bytes the bulk copy read, if there was one
}

func benchStorm(ctx context.Context, e *env) (string, error) {
	for _, tool := range []string{"nbdkit", "nbd-server"} {
		if _, err := exec.LookPath(tool); err != nil {
			return "", fmt.Errorf("%s not installed (make deps)", tool)
		}
	}
	tr, err := storm.LoadTrace(stormTrace)
	if err != nil {
		return "", err
	}
	nbdroot, err := srvNbdroot(ctx, e)
	if err != nil {
		return "", err
	}
	// A full image of incompressible data, not a sparse one: the copy of the fairness
	// test reads all of it.
	img := filepath.Join(e.Work, "storm.img")
	size := int64((tr.End() + 1<<20 - 1) &^ (1<<20 - 1))
	if e.Quick {
		size = min(size, 1<<30)
		tr = fitTrace(tr, uint64(size))
	}
	if err := srvRandomImage(img, size); err != nil {
		return "", err
	}
	servers := stormServers(e, nbdroot, img)

	sizes, rounds := []int{50, 200, 1000}, []int{5, 5, 3}
	if e.Quick {
		sizes, rounds = []int{20, 50}, []int{1, 1}
	}
	if stormClients != "" {
		sizes, rounds = nil, nil
		for _, f := range strings.Split(stormClients, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n <= 0 {
				return "", fmt.Errorf("-storm-clients %q: want a comma-separated list of client counts", stormClients)
			}
			sizes, rounds = append(sizes, n), append(rounds, max(stormRounds, 1))
		}
	}
	var b strings.Builder
	reads, bytes := 0, int64(0)
	for _, op := range tr.Reads() {
		reads++
		bytes += int64(op.Length)
	}
	fmt.Fprintf(&b, "### Boot storm: N clients replaying a Debian 12 systemd boot (%d CPUs, load average %s when the run started%s)\n", runtime.NumCPU(), loadAverage(), niceNote())
	if contains(strings.Split(stormParts, ","), "table") {
		fmt.Fprintf(&b, "\nEach client has one connection and replays the %d reads (%s) of `%s`, as the kernel client sent them:\n"+
			"reads the trace shows in flight together go together, the next burst waits for their replies. The clients start within\n"+
			"%v and think time is removed, so the server alone decides how long the storm takes. Image %s, read-only, in the page\n"+
			"cache; each server started afresh per run. Medians of interleaved rounds; ratios to nbdkit per round, spread in brackets.\n\n",
			reads, mib(bytes), filepath.Base(stormTrace), stormStagger, mib(size))
		b.WriteString("| clients | server | wall | × nbdkit | p50 | p99 | × nbdkit | max | server CPU | × nbdkit | peak RSS (anon) |\n")
		b.WriteString("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		var verdicts []string
		for ni, n := range sizes {
			runs := make([][]stormRun, len(servers)) // [server][round]
			for round := 0; round < rounds[ni]; round++ {
				for k := range servers {
					si := (k + round) % len(servers)
					if err := ctx.Err(); err != nil {
						return "", err
					}
					warmTrace(img, tr)
					r, err := stormRetry(ctx, servers[si], tr, n, 0, stormStagger, nil)
					if err != nil {
						return "", fmt.Errorf("%s, %d clients: %w", servers[si].name, n, err)
					}
					fmt.Fprintf(os.Stderr, "bench: storm %4d clients round %d: %-12s wall %-9v p50 %-9v p99 %-9v max %-9v cpu %5.2fs peak %s anon %s failed %d\n",
						n, round+1, servers[si].name, r.res.Wall.Round(time.Millisecond), r.res.P(50).Round(time.Microsecond),
						r.res.P(99).Round(time.Microsecond), r.res.Max().Round(time.Microsecond), r.cpu, mib(r.peak), mib(r.anon), r.res.Failed)
					runs[si] = append(runs[si], r)
				}
			}
			verdicts = append(verdicts, stormRows(&b, servers, runs, n, n == 50 || n == 200 || e.Quick))
		}
		b.WriteString("\n" + strings.Join(verdicts, "\n") + "\n")
		b.WriteString("\nserver CPU: user+system time of the server during the storm (after every handshake), nbd-server's per-client\n" +
			"processes included. Peak RSS: the server's high-water mark (VmHWM) — nbdroot's includes the image pages it reads\n" +
			"through a mapping, which are page cache, not its own memory — and in brackets the peak of anonymous memory (sampled);\n" +
			"for nbd-server the peak of the summed proportional set sizes of its processes.\n")
	}

	if contains(strings.Split(stormParts, ","), "idle") {
		idle, err := stormIdle(ctx, servers, e.Quick)
		if err != nil {
			return "", err
		}
		b.WriteString(idle)
	}
	if contains(strings.Split(stormParts, ","), "fairness") {
		fair, err := stormFairness(ctx, servers, img, size, tr, e.Quick)
		if err != nil {
			return "", err
		}
		b.WriteString(fair)
	}
	if len(stormRepeats) > 0 {
		b.WriteString("\nRuns repeated after a failure: " + strings.Join(stormRepeats, "; ") + ".\n")
	}
	return b.String(), nil
}

// niceNote names the scheduling priority the bench and the servers it starts ran at, when
// it is not the default: `make storm` raises it (nice -10) so that other work on a shared
// machine takes less of the CPU time the comparison is about. Every server and client runs
// at the same priority; the servers' own threads (nbdkit's per-connection threads,
// nbd-server's processes, nbdroot's runtime threads) still compete with each other as usual.
func niceNote() string {
	// getpriority(2): the raw system call returns 20 - nice.
	prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil || 20-prio == 0 {
		return ""
	}
	return fmt.Sprintf(", servers and clients at nice %d", 20-prio)
}

func stormServers(e *env, nbdroot, img string) []stormServer {
	return []stormServer{
		{"nbdroot serve", false, func(ctx context.Context) (*srvProc, error) {
			return srvStartListening(ctx, e.Work, nbdroot, "serve", "--listen", "127.0.0.1:0", "--export", "bench="+img+",readonly")
		}},
		{"nbdkit file", false, func(ctx context.Context) (*srvProc, error) {
			return srvStartOnPort(ctx, e.Work, func(port string) []string {
				return []string{"nbdkit", "-f", "-r", "-i", "127.0.0.1", "-p", port, "-e", "bench", "file", img}
			})
		}},
		{"nbd-server", true, func(ctx context.Context) (*srvProc, error) {
			return srvStartNbdServer(ctx, e.Work, img, "readonly = true\n")
		}},
	}
}

// fitTrace drops the reads of tr beyond size (quick runs use a smaller image).
func fitTrace(tr *storm.Trace, size uint64) *storm.Trace {
	out := &storm.Trace{Name: tr.Name}
	for _, op := range tr.Ops {
		if op.Offset+uint64(op.Length) <= size {
			out.Ops = append(out.Ops, op)
		}
	}
	return out
}

// warmTrace puts what the trace reads in the page cache, as the storm's first client
// would, and nothing dirty.
func warmTrace(img string, tr *storm.Trace) {
	f, err := os.Open(img)
	if err != nil {
		return
	}
	defer f.Close()
	unix.Fdatasync(int(f.Fd()))
	buf := make([]byte, 32<<20)
	for _, op := range tr.Reads() {
		f.ReadAt(buf[:op.Length], int64(op.Offset))
	}
}

// stormOnce starts the server, runs one storm and stops the server. With a bulk copy
// (bulkSize > 0), one more client reads the image sequentially during the storm.
func stormOnce(ctx context.Context, s stormServer, tr *storm.Trace, clients int, scale float64, stagger time.Duration, bulk *storm.Bulk) (stormRun, error) {
	var r stormRun
	p, err := s.start(ctx)
	if err != nil {
		return r, err
	}
	defer p.stop()
	pid := p.cmd.Process.Pid
	addr := strings.TrimSuffix(strings.TrimPrefix(p.uri, "nbd://"), "/bench")
	sampler := storm.StartSampler(pid, s.forks, samplerInterval(s.forks))
	var cpu0 time.Duration
	var copier *bulkProcess
	res, err := storm.Run(ctx, storm.Config{
		Addr: addr, Export: "bench", Clients: clients, Trace: tr, Scale: scale, Stagger: stagger,
		Ready: func() {
			if u, err := storm.ProcUsage(pid, s.forks); err == nil {
				cpu0 = u.CPU
			}
			if bulk != nil {
				copier = startBulkProcess(addr, *bulk, clients)
			}
		},
	})
	if copier != nil {
		n, cerr := copier.stop()
		if err == nil && cerr != nil {
			err = fmt.Errorf("bulk copy: %w", cerr)
		}
		r.copied = n
	}
	if err != nil {
		return r, err
	}
	if res.Failed > 0 {
		return r, fmt.Errorf("%d of %d clients failed, first: %v\n%s", res.Failed, clients, res.Errors[0], tail(p.log(), 30))
	}
	// nbd-server's children exit after their client: wait until they are reaped, so their
	// CPU time is in the parent's.
	deadline := time.Now().Add(10 * time.Second)
	var u storm.Usage
	for {
		if u, err = storm.ProcUsage(pid, s.forks); err != nil {
			select {
			case <-p.done:
				return r, fmt.Errorf("%s exited during the storm (%v)\n%s", s.name, p.cmd.ProcessState, tail(p.log(), 30))
			default:
			}
			return r, err
		}
		if u.Procs == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.res = res
	r.cpu = (u.CPU - cpu0).Seconds()
	r.peak, r.anon = sampler.Stop()
	return r, nil
}

// stormRepeats lists the runs that failed once and were repeated, for the section's text.
var stormRepeats []string

// stormRetry is stormOnce, repeated once if it fails: on a machine shared with other work
// a peer server now and then dies or stalls for reasons of its own (nbdkit once exited in
// the middle of a fairness round); one such run should not throw away the others. A
// second failure is the section's error. Repeats are listed under the section's tables.
func stormRetry(ctx context.Context, s stormServer, tr *storm.Trace, clients int, scale float64, stagger time.Duration, bulk *storm.Bulk) (stormRun, error) {
	r, err := stormOnce(ctx, s, tr, clients, scale, stagger, bulk)
	if err == nil || ctx.Err() != nil {
		return r, err
	}
	fmt.Fprintf(os.Stderr, "bench: %s, %d clients: %v — once more\n", s.name, clients, err)
	stormRepeats = append(stormRepeats, fmt.Sprintf("%s, %d clients: %s", s.name, clients, strings.SplitN(err.Error(), "\n", 2)[0]))
	return stormOnce(ctx, s, tr, clients, scale, stagger, bulk)
}

// samplerInterval: /proc/PID/status is cheap to read; summing smaps_rollup over a
// thousand nbd-server processes is not, and would steal CPU from the storm.
func samplerInterval(forks bool) time.Duration {
	if forks {
		return 250 * time.Millisecond
	}
	return 20 * time.Millisecond
}

// stormRows writes the table rows for one storm size and returns its verdict: the floor
// and the goal of issue 13 where it sets them (floor: at 50 and 200 clients), else that
// every client was served (a storm with a failed client is an error before this).
func stormRows(b *strings.Builder, servers []stormServer, runs [][]stormRun, n int, floor bool) string {
	const ours, ref = 0, 1
	med := func(si int, f func(stormRun) float64) float64 {
		var v []float64
		for _, r := range runs[si] {
			v = append(v, f(r))
		}
		return median(v)
	}
	// ratio is the median and spread of per-round ratios to nbdkit.
	ratio := func(si int, f func(stormRun) float64) (float64, float64, float64) {
		var v []float64
		for i := range runs[si] {
			if i < len(runs[ref]) {
				v = append(v, f(runs[si][i])/f(runs[ref][i]))
			}
		}
		return median(v), slices.Min(v), slices.Max(v)
	}
	wall := func(r stormRun) float64 { return r.res.Wall.Seconds() }
	p50 := func(r stormRun) float64 { return r.res.P(50).Seconds() }
	p99 := func(r stormRun) float64 { return r.res.P(99).Seconds() }
	mx := func(r stormRun) float64 { return r.res.Max().Seconds() }
	cpu := func(r stormRun) float64 { return r.cpu }
	fmtRatio := func(si int, f func(stormRun) float64) string {
		m, lo, hi := ratio(si, f)
		if si == ref {
			return "1.00×"
		}
		return fmt.Sprintf("%.2f× [%.2f–%.2f]", m, lo, hi)
	}
	for si, s := range servers {
		fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %s | %s | %s | %.2f s | %s | %s (%s) |\n", n, s.name,
			secs(med(si, wall)), fmtRatio(si, wall), secs(med(si, p50)), secs(med(si, p99)), fmtRatio(si, p99),
			secs(med(si, mx)), med(si, cpu), fmtRatio(si, cpu),
			mib(int64(med(si, func(r stormRun) float64 { return float64(r.peak) }))),
			mib(int64(med(si, func(r stormRun) float64 { return float64(r.anon) }))))
	}
	w, _, _ := ratio(ours, wall)
	p, _, _ := ratio(ours, p99)
	c, _, _ := ratio(ours, cpu)
	if !floor {
		return fmt.Sprintf("N = %d: all %d clients served in every round; wall %.2f×, p99 %.2f×, CPU %.2f× nbdkit (no floor at this size).", n, n, w, p, c)
	}
	worst := math.Max(w, math.Max(p, c))
	verdict := "NOT met"
	if worst <= 1.0 {
		verdict = "met"
	}
	goal := "NOT met"
	if worst <= 0.7 {
		goal = "met"
	}
	return fmt.Sprintf("N = %d: wall %.2f×, p99 %.2f×, CPU %.2f× nbdkit — floor ≤ 1.0× %s, goal ≤ 0.7× %s.", n, w, p, c, verdict, goal)
}

func secs(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d >= 10*time.Second:
		return fmt.Sprintf("%.1f s", s)
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", s)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", s*1e3)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", s*1e3)
	}
	return fmt.Sprintf("%.0f µs", s*1e6)
}

func mib(n int64) string {
	if n >= 10<<20 {
		return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

// stormIdle measures the memory each idle connection costs a server: K connections that
// finished their handshake and send nothing.
func stormIdle(ctx context.Context, servers []stormServer, quick bool) (string, error) {
	k, rounds := 1000, 3
	if quick {
		k, rounds = 200, 1
	}
	per := make([][2][]float64, len(servers)) // [server][rss, anon][round]
	for round := 0; round < rounds; round++ {
		for si, s := range servers {
			p, err := s.start(ctx)
			if err != nil {
				return "", fmt.Errorf("%s: %w", s.name, err)
			}
			pid := p.cmd.Process.Pid
			addr := strings.TrimSuffix(strings.TrimPrefix(p.uri, "nbd://"), "/bench")
			settle := func() (storm.Usage, error) {
				time.Sleep(500 * time.Millisecond)
				return storm.ProcUsage(pid, s.forks)
			}
			u0, err := settle()
			if err != nil {
				p.stop()
				return "", err
			}
			conns, err := storm.Connect(ctx, storm.TCP(addr), "bench", k)
			if err != nil {
				p.stop()
				return "", fmt.Errorf("%s: %d idle connections: %w", s.name, k, err)
			}
			// Each client has booted: it read something (128 KiB, the kernel's usual
			// readahead) before going quiet, so its connection's buffers were used. All
			// read the same range: image pages a server maps count once, not per client.
			for i, c := range conns {
				if err := storm.ReadOnce(c, 0, 128<<10); err != nil {
					p.stop()
					return "", fmt.Errorf("%s: read on idle connection %d: %w", s.name, i, err)
				}
			}
			u1, err := settle()
			for _, c := range conns {
				c.Close()
			}
			p.stop()
			if err != nil {
				return "", err
			}
			per[si][0] = append(per[si][0], float64(u1.RSS-u0.RSS)/float64(k))
			per[si][1] = append(per[si][1], float64(u1.Anon-u0.Anon)/float64(k))
			fmt.Fprintf(os.Stderr, "bench: idle round %d: %-14s %6.1f KiB RSS, %6.1f KiB anon per connection\n",
				round+1, s.name, per[si][0][round]/1024, per[si][1][round]/1024)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nMemory per idle connection (%d clients connect, each reads 128 KiB, then all go quiet; RSS growth over the\n"+
		"idle server divided by %d; nbd-server: proportional set size of its processes; median of %d, spread in brackets):\n\n", k, k, rounds)
	b.WriteString("| server | RSS per idle connection | anonymous |\n|---|---:|---:|\n")
	for si, s := range servers {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", s.name, kibSpread(per[si][0]), kibSpread(per[si][1]))
	}
	goal := "NOT met"
	if median(per[0][0]) <= 64<<10 {
		goal = "met"
	}
	fmt.Fprintf(&b, "\nGoal ≤ 64 KiB per idle connection: %s.\n", goal)
	return b.String(), nil
}

func kibSpread(v []float64) string {
	return fmt.Sprintf("%.1f KiB [%.1f–%.1f]", median(v)/1024, slices.Min(v)/1024, slices.Max(v)/1024)
}

// stormFairness compares a paced storm's read latency with and without one client copying
// the image as fast as it can.
func stormFairness(ctx context.Context, servers []stormServer, img string, size int64, tr *storm.Trace, quick bool) (string, error) {
	// At twice the recorded pace (Scale 0.5): shorter runs, so more rounds fit, and the
	// medians resist bursts of load from elsewhere on a shared machine.
	clients, rounds, stagger, scale := 50, 5, 2*time.Second, 0.5
	if quick {
		clients, rounds = 20, 1
	}
	bulk := &storm.Bulk{Export: "bench", Size: uint64(size), Request: 256 << 10, Depth: 8}
	type pair struct{ alone, loaded, rate []float64 }
	res := make([]pair, len(servers))
	for round := 0; round < rounds; round++ {
		for k := range servers {
			si := (k + round) % len(servers)
			s := servers[si]
			for _, withBulk := range []bool{false, true} {
				// The copy reads the whole image: all of it in the page cache, for everyone.
				srvWarm(img)
				var bk *storm.Bulk
				if withBulk {
					bk = bulk
				}
				r, err := stormRetry(ctx, s, tr, clients, scale, stagger, bk)
				if err != nil {
					return "", fmt.Errorf("fairness, %s: %w", s.name, err)
				}
				p99 := r.res.P(99).Seconds()
				if withBulk {
					res[si].loaded = append(res[si].loaded, p99)
					res[si].rate = append(res[si].rate, float64(r.copied)/(1<<20)/r.res.Wall.Seconds())
				} else {
					res[si].alone = append(res[si].alone, p99)
				}
				fmt.Fprintf(os.Stderr, "bench: fairness round %d: %-14s copy %-5v p99 %v, boots p50 %v\n", round+1, s.name, withBulk,
					r.res.P(99).Round(time.Microsecond), storm.Percentile(r.res.Boots, 50).Round(time.Millisecond))
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nFairness: %d clients replay the boot at twice its pace (think times halved, starts spread over %v), alone and\n"+
		"while one more client — a process of its own — copies the whole %s image (sequential 256 KiB reads, 8 in flight, as\n"+
		"fast as it goes); p99 read latency of the booting clients, median of %d rounds (ratio per round, spread in brackets),\n"+
		"and the copy's throughput meanwhile:\n\n",
		clients, stagger, mib(size), rounds)
	b.WriteString("| server | p99 alone | p99 with the copy | ratio | the copy |\n|---|---:|---:|---:|---:|\n")
	for si, s := range servers {
		var ratios []float64
		for i := range res[si].alone {
			ratios = append(ratios, res[si].loaded[i]/res[si].alone[i])
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.2f× [%.2f–%.2f] | %.0f MiB/s |\n", s.name, secs(median(res[si].alone)), secs(median(res[si].loaded)),
			median(ratios), slices.Min(ratios), slices.Max(ratios), median(res[si].rate))
	}
	var ours []float64
	for i := range res[0].alone {
		ours = append(ours, res[0].loaded[i]/res[0].alone[i])
	}
	verdict := "NOT met"
	if median(ours) <= 2 {
		verdict = "met"
	}
	fmt.Fprintf(&b, "\nnbdroot: the copy must not push the boots' p99 past 2× its unloaded value: %s.\n", verdict)
	return b.String(), nil
}

// bulkProcess is the fairness test's copy: this program again, with -bulk-client, so the
// copy is a client of its own (as a copying machine would be), not goroutines sharing the
// replaying clients' runtime.
type bulkProcess struct {
	cmd *exec.Cmd
	out strings.Builder
	err error
}

func startBulkProcess(addr string, b storm.Bulk, client int) *bulkProcess {
	p := &bulkProcess{}
	exe, err := os.Executable()
	if err != nil {
		p.err = err
		return p
	}
	p.cmd = exec.Command(exe, "-bulk-client", addr, "-bulk-export", b.Export, "-bulk-size", strconv.FormatUint(b.Size, 10),
		"-bulk-request", strconv.FormatUint(uint64(b.Request), 10), "-bulk-depth", strconv.Itoa(b.Depth), "-bulk-id", strconv.Itoa(client))
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.err = p.cmd.Start()
	return p
}

// stop ends the copy and returns the bytes it read.
func (p *bulkProcess) stop() (int64, error) {
	if p.err != nil {
		return 0, p.err
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		return 0, fmt.Errorf("%v: %s", err, p.out.String())
	}
	var n int64
	if _, err := fmt.Sscanf(p.out.String(), "copied %d", &n); err != nil {
		return 0, fmt.Errorf("copy's output %q: %v", p.out.String(), err)
	}
	return n, nil
}

// bulkClientMain is the copy's process (-bulk-client): it reads until SIGTERM and prints
// "copied BYTES".
func bulkClientMain(addr string, b storm.Bulk, client int) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	b.Dial, b.Client = storm.TCP(addr), client
	n, err := b.Run(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bulk client:", err)
		return 1
	}
	fmt.Printf("copied %d\n", n)
	return 0
}
