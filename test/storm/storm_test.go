package storm

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver"
)

func TestParseTrace(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		in   string
		want []Op
	}{
		{"reduced", "2026-11-25 09:22:56.482932 Read 0x0 0x1000\n2026-11-25 09:22:56.483932 Write 0x2000 0x200\n",
			[]Op{{0, "Read", 0, 4096}, {ms, "Write", 0x2000, 0x200}}},
		{"native", `2026-12-04 20:28:51.927467 Ready thread_model=3
2026-12-04 20:28:52.968466 Preconnect id=1 readonly=0 ...
2026-12-04 20:28:52.981485 connection=1 Connect export="" tls=0 size=0x1000000
# a comment

2026-12-04 20:28:53.000000 connection=1 Read id=1 offset=0x200 count=0x400 ...
2026-12-04 20:28:53.000100 connection=1 ...Read id=1 return=0 (Success)
2026-12-04 20:28:53.002000 connection=2 Flush id=1 ...
2026-12-04 20:28:53.003000 connection=1 Disconnect transactions=1
`, []Op{{0, "Read", 0x200, 0x400}, {2 * ms, "Flush", 0, 0}}},
		{"sorted by time", "2026-11-25 09:22:56.002 Read 0x2000 0x1000\n2026-11-25 09:22:56.001 Read 0x1000 0x1000\n",
			[]Op{{0, "Read", 0x1000, 0x1000}, {ms, "Read", 0x2000, 0x1000}}},
		{"decimal", "2026-11-25 09:22:56 Read 4096 512\n", []Op{{0, "Read", 4096, 512}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := ParseTrace(strings.NewReader(tt.in), "t")
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(tr.Ops) != fmt.Sprint(tt.want) {
				t.Errorf("ops:\n got %v\nwant %v", tr.Ops, tt.want)
			}
		})
	}
}

// TestRecordedTraces: every trace kept in testdata parses and has a boot's worth of reads.
func TestRecordedTraces(t *testing.T) {
	for _, name := range []string{"debian12-systemd-boot.trace", "debian13-systemd-boot.trace", "busybox-root-boot.trace"} {
		t.Run(name, func(t *testing.T) {
			tr, err := LoadTrace(filepath.Join("testdata", name))
			if err != nil {
				t.Fatal(err)
			}
			if n := len(tr.Reads()); n < 20 || len(tr.Bursts(0)) < 10 || tr.End() < 1<<20 {
				t.Errorf("%d reads in %d bursts up to %d: not a boot", n, len(tr.Bursts(0)), tr.End())
			}
		})
	}
}

// TestTraceWrite: what Write writes, ParseTrace reads back.
func TestTraceWrite(t *testing.T) {
	tr, err := LoadTrace("testdata/debian12-systemd-boot.trace")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := tr.Write(&b, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), "a comment"); err != nil {
		t.Fatal(err)
	}
	back, err := ParseTrace(strings.NewReader(b.String()), "again")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back.Ops) != fmt.Sprint(tr.Ops) || !strings.HasPrefix(b.String(), "# a comment\n2026-01-02 03:04:05.000000 Read 0x0 0x1000\n") {
		t.Errorf("round trip changed the trace; written:\n%.200s", b.String())
	}
}

func TestParseTraceErrors(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "# nothing\n", "no requests"},
		{"short line", "Read 0x0\n", "want DATE TIME"},
		{"bad time", "2026-13-45 99:00:00 Read 0x0 0x1000\n", "time"},
		{"bad number", "2026-11-25 09:22:56 Read 0xzz 0x1000\n", "Read"},
		{"too long", "2026-11-25 09:22:56 Read 0x0 0x2000001\n", "limit"},
		{"overflow", "2026-11-25 09:22:56 Read 0xffffffffffffffff 0x10\n", "overflows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseTrace(strings.NewReader(tt.in), "t")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestBursts(t *testing.T) {
	us := time.Microsecond
	tr := &Trace{Ops: []Op{
		{0, "Read", 0, 4096},
		{10 * us, "Read", 4096, 4096},    // with the first
		{50 * us, "Write", 0, 4096},      // not a read: ignored
		{150 * us, "Read", 8192, 4096},   // 140 µs after the last read: a new burst
		{2150 * us, "Read", 16384, 4096}, // a new burst after 2 ms
		{2200 * us, "Read", 0, 0},        // empty: ignored
	}}
	bs := tr.Bursts(0)
	got := ""
	for _, b := range bs {
		got += fmt.Sprintf("[%d reads, think %v]", len(b.Reads), b.Think)
	}
	want := "[2 reads, think 140µs][1 reads, think 2ms][1 reads, think 0s]"
	if got != want {
		t.Errorf("bursts %s, want %s", got, want)
	}
	if n := len(tr.Bursts(time.Hour)); n != 1 {
		t.Errorf("with a 1 h gap: %d bursts, want 1", n)
	}
	// With writes, the write 40 µs after the second read joins its burst, and the third
	// read, 100 µs after the write, starts a new one.
	got = ""
	for _, b := range tr.BurstsWithWrites(0) {
		got += fmt.Sprintf("[%d reads %d writes, think %v]", len(b.Reads), len(b.Writes), b.Think)
	}
	want = "[2 reads 1 writes, think 100µs][1 reads 0 writes, think 2ms][1 reads 0 writes, think 0s]"
	if got != want {
		t.Errorf("bursts with writes %s, want %s", got, want)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {99, 99}, {100, 100}, {0.5, 1}} {
		if got := Percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 99) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

// startServer serves image read-only in this process on a loopback port.
func startServer(t *testing.T, image string) string {
	t.Helper()
	srv, err := nbdserver.New(nbdserver.Config{
		Exports: []nbdserver.Export{{Name: "root", Path: image, ReadOnly: true}},
		Logger:  log.New(testWriter{t}, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func loadBoot(t *testing.T) (*Trace, string) {
	t.Helper()
	tr, err := LoadTrace("testdata/debian12-systemd-boot.trace")
	if err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if err := WriteImage(img, tr); err != nil {
		t.Fatal(err)
	}
	return tr, img
}

// TestReplay replays the recorded Debian boot with a few clients, every byte checked.
func TestReplay(t *testing.T) {
	tr, img := loadBoot(t)
	addr := startServer(t, img)
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ready := false
	const clients = 4
	res, err := Run(context.Background(), Config{
		Addr: addr, Export: "root", Clients: clients, Trace: tr,
		Stagger: 20 * time.Millisecond, Check: f, CheckClients: clients,
		Ready: func() { ready = true },
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 0 {
		t.Fatalf("%d clients failed: %v", res.Failed, res.Errors)
	}
	reads, bytes := 0, int64(0)
	for _, op := range tr.Reads() {
		reads++
		bytes += int64(op.Length)
	}
	if res.Reads != clients*reads || res.Bytes != clients*bytes || len(res.Latencies) != res.Reads || len(res.Boots) != clients {
		t.Errorf("%d reads, %d bytes, %d latencies, %d boots; want %d reads, %d bytes, %d boots",
			res.Reads, res.Bytes, len(res.Latencies), len(res.Boots), clients*reads, clients*bytes, clients)
	}
	if !ready {
		t.Error("Ready was not called")
	}
	if res.Wall <= 0 || res.P(50) <= 0 || res.P(50) > res.P(99) || res.P(99) > res.Max() || res.Boots[clients-1] > res.Wall {
		t.Errorf("inconsistent result: wall %v, p50 %v, p99 %v, max %v, boots %v", res.Wall, res.P(50), res.P(99), res.Max(), res.Boots)
	}
}

// TestReplayWrites replays the recorded boot's writes too against a cow export (an overlay
// per client): every write and each client's final FLUSH is answered and timed; a
// read-only export fails every client at its first write.
func TestReplayWrites(t *testing.T) {
	tr, img := loadBoot(t)
	srv, err := nbdserver.New(nbdserver.Config{
		Exports:  []nbdserver.Export{{Name: "root", Path: img, Cow: true}, {Name: "ro", Path: img, ReadOnly: true}},
		StateDir: t.TempDir(),
		Logger:   log.New(testWriter{t}, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()

	const clients = 3
	res, err := Run(context.Background(), Config{Addr: addr, Export: "root", Clients: clients, Trace: tr, Writes: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 0 {
		t.Fatalf("%d clients failed: %v", res.Failed, res.Errors)
	}
	writes := 0
	for _, op := range tr.Ops {
		if op.Type == "Write" && op.Length > 0 {
			writes++
		}
	}
	if writes == 0 {
		t.Fatal("the recorded boot has no writes")
	}
	if res.Reads != clients*len(tr.Reads()) || res.Writes != clients*writes || len(res.WriteLatencies) != res.Writes || len(res.FlushLatencies) != clients {
		t.Errorf("%d reads, %d writes (%d timed), %d FLUSHes; want %d reads, %d writes, %d FLUSHes",
			res.Reads, res.Writes, len(res.WriteLatencies), len(res.FlushLatencies), clients*len(tr.Reads()), clients*writes, clients)
	}
	if Percentile(res.WriteLatencies, 50) <= 0 || Percentile(res.FlushLatencies, 100) <= 0 {
		t.Errorf("write p50 %v, FLUSH max %v: not timed", Percentile(res.WriteLatencies, 50), Percentile(res.FlushLatencies, 100))
	}

	res, err = Run(context.Background(), Config{Addr: addr, Export: "ro", Clients: 2, Trace: tr, Writes: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 2 || !strings.Contains(res.Errors[0].Error(), "WRITE") {
		t.Errorf("writes to a read-only export: failed %d, errors %v; want both clients failed at a WRITE", res.Failed, res.Errors)
	}
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Run(context.Background(), Config{Addr: addr, Export: "root", Clients: 1, Trace: tr, Writes: true, Check: f, CheckClients: 1}); err == nil {
		t.Error("Check with Writes was accepted")
	}
}

// TestReplayThinkTime checks that Scale keeps the trace's pace: three reads 20 ms apart
// take at least 40 ms with Scale 1 and far less with Scale 0.
func TestReplayThinkTime(t *testing.T) {
	ms := time.Millisecond
	tr := &Trace{Name: "paced", Ops: []Op{{0, "Read", 0, 4096}, {20 * ms, "Read", 4096, 4096}, {40 * ms, "Read", 8192, 4096}}}
	img := filepath.Join(t.TempDir(), "img")
	if err := WriteImage(img, tr); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, img)
	paced, err := Run(context.Background(), Config{Addr: addr, Export: "root", Clients: 2, Trace: tr, Scale: 1})
	if err != nil || paced.Failed > 0 {
		t.Fatalf("paced: %v %v", err, paced.Errors)
	}
	if paced.Boots[0] < 40*ms {
		t.Errorf("paced replay took %v, want at least the trace's 40ms", paced.Boots[0])
	}
	fast, err := Run(context.Background(), Config{Addr: addr, Export: "root", Clients: 2, Trace: tr, Scale: 0})
	if err != nil || fast.Failed > 0 {
		t.Fatalf("fast: %v %v", err, fast.Errors)
	}
	if fast.Boots[1] >= paced.Boots[0] {
		t.Errorf("replay without think time took %v, no faster than the paced %v", fast.Boots[1], paced.Boots[0])
	}
}

// TestReplayFailures counts clients that cannot boot instead of giving up on the storm.
func TestReplayFailures(t *testing.T) {
	tr := &Trace{Name: "t", Ops: []Op{{0, "Read", 0, 4096}}}
	img := filepath.Join(t.TempDir(), "img")
	if err := WriteImage(img, tr); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, img)
	res, err := Run(context.Background(), Config{Addr: addr, Export: "nosuch", Clients: 3, Trace: tr})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 3 || len(res.Errors) != 3 || !strings.Contains(res.Errors[0].Error(), "nosuch") {
		t.Errorf("failed %d, errors %v; want 3 failures naming the export", res.Failed, res.Errors)
	}
	// Data that differs from the image is caught.
	res, err = Run(context.Background(), Config{Addr: addr, Export: "root", Clients: 2, Trace: tr,
		Check: bytes.NewReader(make([]byte, 1<<20)), CheckClients: 1})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || !strings.Contains(res.Errors[0].Error(), "wrong data") {
		t.Errorf("checked against other data: failed %d, errors %v; want client 0 to fail", res.Failed, res.Errors)
	}
	beyond := &Trace{Name: "t", Ops: []Op{{0, "Read", 1 << 30, 4096}}}
	res, err = Run(context.Background(), Config{Addr: addr, Export: "root", Clients: 1, Trace: beyond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Failed != 1 || !strings.Contains(res.Errors[0].Error(), "READ 0x40000000+0x1000") {
		t.Errorf("a read past the end: failed %d, errors %v", res.Failed, res.Errors)
	}
	if _, err := Run(context.Background(), Config{Addr: addr, Clients: 1, Trace: &Trace{Name: "w", Ops: []Op{{0, "Write", 0, 1}}}}); err == nil {
		t.Error("a trace without reads was accepted")
	}
}

func TestBulk(t *testing.T) {
	tr := &Trace{Name: "t", Ops: []Op{{0, "Read", 0, 4 << 20}}}
	img := filepath.Join(t.TempDir(), "img")
	if err := WriteImage(img, tr); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, img)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	n, err := Bulk{Dial: TCP(addr), Export: "root", Size: 4 << 20, Request: 64 << 10, Depth: 4}.Run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n < 4<<20 {
		t.Errorf("bulk read %d bytes in 200ms, want at least the 4 MiB image once", n)
	}
}

func TestProcUsage(t *testing.T) {
	// Burn a little CPU so the process has some to show.
	for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
	}
	for _, children := range []bool{false, true} {
		u, err := ProcUsage(os.Getpid(), children)
		if err != nil {
			t.Fatal(err)
		}
		if u.CPU <= 0 || u.RSS <= 0 || u.Anon <= 0 || u.Anon > u.RSS || u.Procs < 1 {
			t.Errorf("children=%v: implausible usage %+v", children, u)
		}
		if !children && u.Peak < u.RSS {
			t.Errorf("peak %d below RSS %d", u.Peak, u.RSS)
		}
	}
	s := StartSampler(os.Getpid(), false, 5*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	if peak, anon := s.Stop(); peak <= 0 || anon <= 0 {
		t.Errorf("sampler peaks %d, %d", peak, anon)
	}
}

func FuzzParseTrace(f *testing.F) {
	f.Add([]byte("2026-11-25 09:22:56.482932 Read 0x0 0x1000\n"))
	f.Add([]byte("2026-12-04 20:28:53.000000 connection=1 Read id=1 offset=0x200 count=0x400 ...\n2026-12-04 20:28:53.000100 connection=1 ...Read id=1 return=0\n"))
	f.Add([]byte("# c\n\n2026-11-25 09:22:56 Write 4096 512\n2026-11-25 09:22:55 Zero 0x0 0x10\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		tr, err := ParseTrace(strings.NewReader(string(in)), "fuzz")
		if err != nil {
			return
		}
		for i, op := range tr.Ops {
			if op.At < 0 || i > 0 && op.At < tr.Ops[i-1].At || op.Length > maxRequestLen || op.Offset+uint64(op.Length) < op.Offset {
				t.Fatalf("op %d: %+v", i, op)
			}
		}
		tr.Bursts(0)
		tr.BurstsWithWrites(0)
	})
}
