package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	"github.com/nbdroot/nbdroot/nbdserver/objstore/weedtest"
	"github.com/nbdroot/nbdroot/test/vm"
)

// The store benchmark (issue 18), against SeaweedFS on this machine:
//
//   - cold boots of a Debian 12 systemd root (QEMU, the root's own kernel, an nbdroot
//     initramfs) from a cow export of a local image file and of the same image in the
//     store, alternately, each with a freshly started server (empty block cache; the
//     file's pages evicted from the page cache first);
//   - a storm: 50 clients replaying a real boot's requests (the Debian 12 systemd boot
//     trace in shared/data: 1118 reads, 54 writes over 17 s), starting 100 ms apart as a
//     room powering on, each on its own cow overlay, against one server: request latency
//     percentiles and, for the store, the block cache's hit rate.
//
// This is a minimal replay written for this section (test/storm, a fuller one, was not on
// main when it was written): offsets past the image are folded into it, and the clients
// run in the bench process, beside the in-process server, on the same two CPUs as the
// store.

// storeTrace is the boot trace the storm replays.
const storeTrace = "/work/shared/data/debian12-systemd-boot.trace"

const (
	storeClients = 50
	storeStagger = 100 * time.Millisecond
)

func benchStore(ctx context.Context, e *env) (table string, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	r := vm.NewRunner("bench-store")
	defer r.Close()
	venv, err := vm.NewEnv()
	if err != nil || venv == nil {
		return "", fmt.Errorf("test environment: %v", err)
	}
	defer venv.Close()
	w, err := weedtest.Launch(filepath.Join(e.Work, "weed"))
	if err != nil {
		return "", err
	}
	defer w.Kill()
	bucket, err := w.CreateBucket("bench")
	if err != nil {
		return "", err
	}

	root := vm.DebianRoot(r, "bookworm")
	_, vmlinuz := vm.DebianKernel(r, root)
	initrd := venv.InitramfsFromRoot(r, root, benchHooks)
	img := venv.DebianImage(r, "bookworm", vm.DebianImageOptions{SizeMB: 1536})
	data, err := os.ReadFile(img)
	if err != nil {
		return "", err
	}
	start := time.Now()
	upCfg := w.Config()
	upCfg.Timeout = 20 * time.Minute // one PUT of the whole image
	up, err := objstore.Connect(ctx, upCfg)
	if err != nil {
		return "", err
	}
	if _, err := up.Bucket(bucket.Name()).Put(ctx, "roots/bookworm.img", data, objstore.Cond{}); err != nil {
		return "", fmt.Errorf("upload the image: %w", err)
	}
	fmt.Fprintf(os.Stderr, "bench: store: uploaded %d MiB in %v\n", len(data)>>20, time.Since(start).Round(time.Second))
	data = nil
	url := "s3://bench/roots/bookworm.img"
	storeFlags := []string{"--s3-endpoint", w.Endpoint, "--s3-region", "us-east-1", "--s3-credentials", w.CredentialsFile}

	rounds := 3
	if e.Quick {
		rounds = 1
	}
	boots := map[string][]float64{}
	for i := range rounds {
		for _, where := range []string{"file", "store"} {
			var args []string
			if where == "file" {
				if err := evict(img); err != nil {
					return "", err
				}
				args = []string{"--export", "root=" + img + ",cow"}
			} else {
				args = append([]string{"--export", fmt.Sprintf("root=%s,cowtmp=s3://bench/bench-overlays/boot-%d", url, i)}, storeFlags...)
			}
			args = append(args, "--state-dir", r.TempDir())
			srv := venv.StartServer(r, 0, args...)
			d, err := bootDebianOnce(r, vmlinuz, initrd, srv.Port)
			srv.Stop()
			if err != nil {
				return "", fmt.Errorf("%s boot %d: %w", where, i+1, err)
			}
			fmt.Fprintf(os.Stderr, "bench: store: cold boot from the %s #%d: %.2fs to the shell\n", where, i+1, d)
			boots[where] = append(boots[where], d)
		}
	}

	trace, err := loadTrace(storeTrace)
	if err != nil {
		return "", err
	}
	size, err := fileSize(img)
	if err != nil {
		return "", err
	}
	// Storms alternate, twice each: on a machine shared with other work, one run decides
	// little (the table shows both).
	var storms []stormResult
	stormRounds := 2
	if e.Quick {
		stormRounds = 1
	}
	for round := range stormRounds {
		for _, where := range []string{"file", "store"} {
			cfg := nbdserver.Config{StateDir: r.TempDir(), Logger: log.New(io.Discard, "", 0)}
			if where == "file" {
				if err := evict(img); err != nil {
					return "", err
				}
				cfg.Exports = []nbdserver.Export{{Name: "root", Path: img, Cow: true}}
			} else {
				cfg.Exports = []nbdserver.Export{{Name: "root", Path: url, Cow: true, CowDir: fmt.Sprintf("s3://bench/bench-overlays/storm-%d", round)}}
				cfg.Store = nbdserver.StoreConfig{Config: w.Config()}
			}
			res, err := storeStorm(ctx, cfg, trace, size)
			if err != nil {
				return "", fmt.Errorf("storm on the %s: %w", where, err)
			}
			res.where = where
			res.load = loadAverage()
			fmt.Fprintf(os.Stderr, "bench: store: storm on the %s: %s\n", where, res.summary())
			storms = append(storms, res)
		}
	}

	var b strings.Builder
	clock := "TCG"
	if len(bootQEMUArgs) > 0 {
		clock = "TCG, " + strings.Join(bootQEMUArgs, " ")
	}
	fmt.Fprintf(&b, "### Object store: images in SeaweedFS vs a local file\n\n")
	fmt.Fprintf(&b, "Cold boots of a Debian 12 systemd root (%s, %d vCPU, its own kernel, an nbdroot initramfs), cow export, "+
		"%d boots each alternately, each from a freshly started server (empty block cache; the file evicted from the page cache); "+
		"guest seconds from power-on to the root shell (autologin):\n\n", clock, bootCPUs, rounds)
	fmt.Fprintf(&b, "| image | median | min – max | ratio |\n|---|---:|---:|---:|\n")
	mf := median(boots["file"])
	for _, where := range []string{"file", "store"} {
		x := boots[where]
		fmt.Fprintf(&b, "| %s | %.2f s | %.2f – %.2f s | %.2f× |\n", map[string]string{"file": "local file", "store": "s3:// in SeaweedFS (same machine)"}[where],
			median(x), slices.Min(x), slices.Max(x), median(x)/mf)
	}
	fmt.Fprintf(&b, "\nStorm: %d clients replaying a Debian 12 systemd boot (%d reads, %d writes, a FLUSH at the end; original timing, "+
		"clients starting %v apart), each on its own cow overlay, one in-process server; latency from request to reply as the client sees it:\n\n",
		storeClients, trace.reads, trace.writes, storeStagger)
	fmt.Fprintf(&b, "| image | read p50 | read p99 | read max | write p99 | FLUSH p99 | errors | block cache hit rate | GETs | fetched | load avg after |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range storms {
		hit, gets, fetched := "", "", ""
		if s.where == "store" {
			hit = fmt.Sprintf("%.1f%% (%d hits, %d joins, %d misses)", 100*s.cache.HitRate(), s.cache.Hits, s.cache.Joins, s.cache.Misses)
			gets, fetched = strconv.FormatUint(s.cache.Fetches, 10), nbd.FormatSize(s.cache.FetchedBytes)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %s |\n", s.where,
			ms(pct(s.reads, 50)), ms(pct(s.reads, 99)), ms(pct(s.reads, 100)), ms(pct(s.writes, 99)), ms(pct(s.flushes, 99)), s.errors, hit, gets, fetched, s.load)
	}
	return b.String(), nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/1e6) }

func fileSize(p string) (int64, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// evict drops a file's pages from the page cache (POSIX_FADV_DONTNEED after a sync), so a
// boot from it starts cold without dropping the whole machine's caches.
func evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	unix.Fdatasync(int(f.Fd()))
	return unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
}

var uptimeRe = regexp.MustCompile(`(\d+\.\d+) \d+\.\d+\r?\n`)

// bootDebianOnce boots the Debian root and returns the guest's uptime at its shell.
func bootDebianOnce(r *vm.Runner, vmlinuz, initrd string, port int) (float64, error) {
	v := vm.Start(r, vm.Options{
		Kernel: vmlinuz, Initrd: initrd,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw console=ttyS0",
		Forwards: map[int]int{10809: port}, MemoryMB: 1024, CPUs: bootCPUs, ExtraArgs: bootQEMUArgs,
		Timeout: 8 * time.Minute,
	})
	defer v.Kill()
	_, off := v.ExpectAfter(0, vm.DebianShellPrompt, 6*time.Minute)
	v.Send("cat /proc/uptime\n")
	m, _ := v.ExpectAfter(off, uptimeRe.String(), time.Minute)
	return strconv.ParseFloat(m[1], 64)
}

// trace is a boot's requests: when, what, where.
type trace struct {
	ops           []traceOp
	reads, writes int
}

type traceOp struct {
	at    time.Duration
	write bool
	off   int64
	n     uint32
}

// loadTrace reads "DATE TIME OP OFFSET LENGTH" lines (hex offset and length).
func loadTrace(path string) (*trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("storm trace: %w", err)
	}
	defer f.Close()
	tr := &trace{}
	var t0 time.Time
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 5 {
			continue
		}
		at, err := time.Parse("2006-01-02 15:04:05.999999", fs[0]+" "+fs[1])
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		off, err1 := strconv.ParseInt(strings.TrimPrefix(fs[3], "0x"), 16, 64)
		n, err2 := strconv.ParseUint(strings.TrimPrefix(fs[4], "0x"), 16, 32)
		if err1 != nil || err2 != nil || n == 0 || n > nbd.MaxPayload {
			return nil, fmt.Errorf("%s: bad line %q", path, sc.Text())
		}
		if t0.IsZero() {
			t0 = at
		}
		op := traceOp{at: at.Sub(t0), write: fs[2] == "Write", off: off, n: uint32(n)}
		if op.write {
			tr.writes++
		} else {
			tr.reads++
		}
		tr.ops = append(tr.ops, op)
	}
	slices.SortStableFunc(tr.ops, func(a, b traceOp) int { return int(a.at - b.at) })
	return tr, sc.Err()
}

type stormResult struct {
	where, load            string
	reads, writes, flushes []time.Duration
	errors                 int
	cache                  objstore.CacheStats
	took                   time.Duration
}

func (s stormResult) summary() string {
	return fmt.Sprintf("%d reads p50 %s p99 %s, %d errors, %v, cache %+v", len(s.reads), ms(pct(s.reads, 50)), ms(pct(s.reads, 99)), s.errors, s.took.Round(time.Second), s.cache)
}

func pct(x []time.Duration, p int) time.Duration {
	if len(x) == 0 {
		return 0
	}
	s := slices.Clone(x)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[min(max(i-1, 0), len(s)-1)]
}

// storeStorm serves cfg in-process and replays the trace from storeClients clients.
func storeStorm(ctx context.Context, cfg nbdserver.Config, tr *trace, size int64) (stormResult, error) {
	srv, err := nbdserver.New(cfg)
	if err != nil {
		return stormResult{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return stormResult{}, err
	}
	sctx, cancel := context.WithCancel(ctx)
	go srv.Serve(sctx, ln)
	defer func() {
		cancel()
		c, stop := context.WithTimeout(context.Background(), time.Minute)
		defer stop()
		srv.Shutdown(c)
	}()
	var (
		mu  sync.Mutex
		res stormResult
		wg  sync.WaitGroup
	)
	start := time.Now()
	for i := range storeClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-time.After(time.Duration(i) * storeStagger):
			case <-ctx.Done():
				return
			}
			// Clients without identity are keyed by address: one loopback address each.
			src := fmt.Sprintf("127.0.%d.%d", 1+i/200, 10+i%200)
			c, err := replay(ctx, ln.Addr().String(), src, tr, size)
			mu.Lock()
			defer mu.Unlock()
			res.reads = append(res.reads, c.reads...)
			res.writes = append(res.writes, c.writes...)
			res.flushes = append(res.flushes, c.flushes...)
			res.errors += c.errors
			if err != nil {
				res.errors++
				fmt.Fprintf(os.Stderr, "bench: store: storm client %s: %v\n", src, err)
			}
		}()
	}
	wg.Wait()
	res.took = time.Since(start)
	res.cache = srv.CacheStats()
	return res, nil
}

// replay plays the trace over one connection with its original timing, requests in
// flight as the kernel had them, and returns each request's latency.
func replay(ctx context.Context, addr, src string, tr *trace, size int64) (stormResult, error) {
	var res stormResult
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return res, err
	}
	defer nc.Close()
	if _, err := nbdclient.Handshake(nc, nbdclient.DialOptions{Export: "root"}); err != nil {
		return res, err
	}
	type pending struct {
		sent time.Time
		op   traceOp
		kind int // 0 read, 1 write, 2 flush
	}
	var mu sync.Mutex
	inflight := map[uint64]pending{}
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(nc, 1<<20)
		hdr := make([]byte, nbd.SimpleReplySize)
		buf := make([]byte, nbd.MaxPayload)
		for n := 0; n < len(tr.ops)+1; n++ {
			if _, err := io.ReadFull(br, hdr); err != nil {
				done <- err
				return
			}
			rp, err := nbd.ParseSimpleReply(hdr)
			if err != nil {
				done <- err
				return
			}
			mu.Lock()
			p, ok := inflight[rp.Handle]
			delete(inflight, rp.Handle)
			mu.Unlock()
			if !ok {
				done <- fmt.Errorf("reply to unknown handle %d", rp.Handle)
				return
			}
			if p.kind == 0 && rp.Error == 0 {
				if _, err := io.ReadFull(br, buf[:p.op.n]); err != nil {
					done <- err
					return
				}
			}
			lat := time.Since(p.sent)
			if rp.Error != 0 {
				res.errors++
			}
			switch p.kind {
			case 0:
				res.reads = append(res.reads, lat)
			case 1:
				res.writes = append(res.writes, lat)
			default:
				res.flushes = append(res.flushes, lat)
			}
		}
		done <- nil
	}()
	payload := make([]byte, nbd.MaxPayload)
	for i := range payload {
		payload[i] = byte(i * 31)
	}
	start := time.Now()
	send := func(h uint64, p pending, req nbd.Request, data []byte) error {
		mu.Lock()
		p.sent = time.Now()
		inflight[h] = p
		mu.Unlock()
		b := nbd.AppendRequest(nil, req)
		if _, err := nc.Write(append(b, data...)); err != nil {
			return err
		}
		return nil
	}
	for h, op := range tr.ops {
		if wait := op.at - time.Since(start); wait > 0 {
			time.Sleep(wait)
		}
		// Fold offsets past the image into it, 4 KiB aligned.
		off := op.off
		if off+int64(op.n) > size {
			off = (off % (size - int64(op.n))) &^ 4095
		}
		req := nbd.Request{Handle: uint64(h), Offset: uint64(off), Length: op.n, Type: nbd.CmdRead}
		var data []byte
		kind := 0
		if op.write {
			req.Type, data, kind = nbd.CmdWrite, payload[:op.n], 1
		}
		if err := send(uint64(h), pending{op: op, kind: kind}, req, data); err != nil {
			return res, err
		}
	}
	if err := send(uint64(len(tr.ops)), pending{kind: 2}, nbd.Request{Handle: uint64(len(tr.ops)), Type: nbd.CmdFlush}, nil); err != nil {
		return res, err
	}
	select {
	case err := <-done:
		if err != nil {
			return res, err
		}
	case <-time.After(5 * time.Minute):
		return res, errors.New("replies did not arrive within 5 minutes")
	}
	nc.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdDisc}))
	return res, nil
}
