// Command bench runs nbdroot's benchmarks side by side with their baselines in one run on one
// machine and prints Markdown tables of ratios (absolute numbers vary by machine; ratios are
// what the README reports). `make bench` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/test/storm"
)

// env is what every benchmark section gets.
type env struct {
	Build  string // directory holding nbdroot and nbdroot-init
	Kernel string // test kernel directory (vmlinuz, modules, config)
	Work   string // scratch directory, removed afterwards
	Quick  bool   // smaller sizes and fewer repetitions, for a smoke run
}

// section is one benchmark: it returns Markdown starting with a "### " heading that begins
// with heading, and no other "### " line; or an error.
type section struct {
	name    string
	heading string
	run     func(ctx context.Context, e *env) (string, error)
}

func sections() []section {
	return []section{
		{"server", "### NBD server", benchServer},
		{"storm", "### Boot storm", benchStorm},
		{"luks", "### LUKS", benchLUKS},
		{"boot", "### Boot: init phase", benchBoot},
		{"initramfs", "### Initramfs build time", benchInitramfs},
		{"tls", "### TLS", benchTLS},
		{"store", "### Object store", benchStore},
	}
}

func main() {
	var e env
	only := flag.String("only", "", "comma-separated sections to run (server, storm, luks, boot, initramfs, tls, store); default all")
	out := flag.String("out", "", "also write the tables to this file (e.g. docs/bench.md)")
	flag.StringVar(&e.Build, "build", "build", "directory with the nbdroot binaries")
	flag.StringVar(&e.Kernel, "kernel", os.Getenv("NBDROOT_KERNEL"), "test kernel directory")
	flag.BoolVar(&e.Quick, "quick", false, "small sizes, one repetition (smoke test)")
	flag.IntVar(&bootCPUs, "cpus", 1, "virtual CPUs of the boot benchmark's guest")
	icount := flag.String("icount", "shift=0,sleep=on", "QEMU -icount setting of the boot guests (\"\" for none): guest time counts executed instructions (1 ns each) plus real time spent idle, so the host's load does not blur the comparison")
	flag.StringVar(&stormTrace, "storm-trace", stormTrace, "storm and store sections: the boot trace to replay (test/storm/testdata has others)")
	flag.StringVar(&stormClients, "storm-clients", "", "storm section: comma-separated client counts (default 50,200,1000)")
	flag.IntVar(&stormRounds, "storm-rounds", 3, "storm section: rounds per client count with -storm-clients")
	flag.StringVar(&stormParts, "storm-parts", stormParts, "storm section: parts to run (table, idle, fairness)")
	flag.IntVar(&storeClients, "store-clients", storeClients, "store section: clients of the storm")
	flag.StringVar(&storeParts, "store-parts", storeParts, "store section: parts to run (boots, storm)")
	bulkClient := flag.String("bulk-client", "", "internal: run the storm section's bulk copy against this address")
	var bulk storm.Bulk
	var bulkID int
	flag.StringVar(&bulk.Export, "bulk-export", "bench", "internal: the bulk copy's export")
	flag.Uint64Var(&bulk.Size, "bulk-size", 0, "internal: bytes the bulk copy reads")
	bulkReq := flag.Uint("bulk-request", 256<<10, "internal: the bulk copy's request size")
	flag.IntVar(&bulk.Depth, "bulk-depth", 8, "internal: the bulk copy's reads in flight")
	flag.IntVar(&bulkID, "bulk-id", 0, "internal: the bulk copy's client number")
	flag.Parse()
	if *bulkClient != "" {
		bulk.Request = uint32(*bulkReq)
		os.Exit(bulkClientMain(*bulkClient, bulk, bulkID))
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	work, err := os.MkdirTemp("", "nbdroot-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(work)
	e.Work = work
	if e.Build, err = filepath.Abs(e.Build); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}

	if *icount != "" {
		bootQEMUArgs = []string{"-icount", *icount}
	}
	// The boot-test harness takes the binaries from here instead of building them.
	os.Setenv("NBDROOT_BUILD", e.Build)

	tables := map[string]string{}
	failed := false
	for _, s := range sections() {
		if *only != "" && !contains(strings.Split(*only, ","), s.name) {
			continue
		}
		start := time.Now()
		fmt.Fprintf(os.Stderr, "bench: %s …\n", s.name)
		t, err := s.run(ctx, &e)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: %s: %v\n", s.name, err)
			failed = true
			continue
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", s.name, time.Since(start).Round(time.Second))
		fmt.Println(t)
		tables[s.name] = t
	}
	if *out != "" && len(tables) > 0 {
		// Sections not run this time keep what the file says about them.
		old, _ := os.ReadFile(*out)
		hdr := fmt.Sprintf("# Benchmarks\n\n<!-- written by `make bench` on %s; reproduce with `make bench` -->\n\n", time.Now().UTC().Format("2006-01-02"))
		if err := os.WriteFile(*out, []byte(hdr+mergeTables(string(old), tables)), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
}

// mergeTables puts the sections' new tables in place of their old ones in the text of an
// earlier bench.md, in the order of sections(); old parts of no section stay at the end.
func mergeTables(old string, fresh map[string]string) string {
	parts := map[string]string{}
	var unknown []string
	for _, block := range strings.SplitAfter(old, "\n### ")[1:] {
		block = "### " + strings.TrimSuffix(block, "### ")
		name := ""
		for _, s := range sections() {
			if strings.HasPrefix(block, s.heading) {
				name = s.name
			}
		}
		if name == "" {
			unknown = append(unknown, block)
			continue
		}
		parts[name] = block
	}
	var out []string
	for _, s := range sections() {
		t, ok := fresh[s.name]
		if !ok {
			t, ok = parts[s.name]
		}
		if ok {
			out = append(out, strings.TrimRight(t, "\n")+"\n")
		}
	}
	return strings.Join(append(out, unknown...), "\n")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if strings.TrimSpace(x) == s {
			return true
		}
	}
	return false
}
