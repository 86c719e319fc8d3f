package storm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Op is one request of a trace.
type Op struct {
	// At is when the request was sent, from the trace's first request.
	At time.Duration
	// Type is the request as nbdkit's log filter names it: "Read", "Write", "Flush", "Trim",
	// "Zero", "Cache", "Extents".
	Type   string
	Offset uint64
	Length uint32
}

// Trace is the I/O of one client, in the order it was sent.
type Trace struct {
	Name string
	Ops  []Op
}

// Limits of what a trace may contain: a boot reads tens of megabytes in a few thousand
// requests, and a request is at most 32 MiB (the largest NBD block size servers accept).
const (
	maxTraceOps   = 1 << 20
	maxTraceLine  = 64 << 10
	maxRequestLen = 32 << 20
)

// ParseTrace reads a trace in either of the two forms of nbdkit's log filter:
//
//	2026-11-25 09:22:56.482932 Read 0x0 0x1000
//	2026-11-25 09:22:56.482932 connection=1 Read id=1 offset=0x0 count=0x1000 fua=0 ...
//
// The first is the reduced form of recorded boots (time, op, offset, length). In the
// second, the filter's own, completion lines ("...Read id=1 return=0") and lines that are
// not requests (Connect, Disconnect, Ready) are skipped, and the requests of every
// connection are merged into one stream, as one client sent them. Blank lines and lines
// starting with '#' are comments. Ops are sorted by time (the filter may log concurrent
// requests slightly out of order); At counts from the first request.
func ParseTrace(r io.Reader, name string) (*Trace, error) {
	t := &Trace{Name: name}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxTraceLine)
	var first time.Time
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimSpace(sc.Text())
		if s == "" || s[0] == '#' {
			continue
		}
		at, op, ok, err := parseTraceLine(s)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		if !ok {
			continue
		}
		if len(t.Ops) == maxTraceOps {
			return nil, fmt.Errorf("%s:%d: more than %d requests", name, line, maxTraceOps)
		}
		if len(t.Ops) == 0 || at.Before(first) {
			first = at
		}
		op.At = time.Duration(at.UnixNano())
		t.Ops = append(t.Ops, op)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(t.Ops) == 0 {
		return nil, fmt.Errorf("%s: no requests", name)
	}
	base := time.Duration(first.UnixNano())
	for i := range t.Ops {
		t.Ops[i].At -= base
	}
	slices.SortStableFunc(t.Ops, func(a, b Op) int {
		switch {
		case a.At < b.At:
			return -1
		case a.At > b.At:
			return 1
		}
		return 0
	})
	return t, nil
}

// LoadTrace reads a trace file (see ParseTrace); its name is the file's base name.
func LoadTrace(path string) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseTrace(f, filepath.Base(path))
}

// opTypes are the request names of nbdkit's log filter.
var opTypes = []string{"Read", "Write", "Flush", "Trim", "Zero", "Cache", "Extents"}

// parseTraceLine parses one non-comment line; ok is false for lines that are not requests.
func parseTraceLine(s string) (at time.Time, op Op, ok bool, err error) {
	f := strings.Fields(s)
	if len(f) < 3 {
		return at, op, false, fmt.Errorf("want DATE TIME …, got %q", s)
	}
	at, err = time.Parse("2006-01-02 15:04:05.999999999", f[0]+" "+f[1])
	if err != nil {
		return at, op, false, fmt.Errorf("time: %w", err)
	}
	rest := f[2:]
	if strings.HasPrefix(rest[0], "connection=") {
		rest = rest[1:]
	}
	if len(rest) == 0 || strings.HasPrefix(rest[0], "...") || !slices.Contains(opTypes, rest[0]) {
		// A completion, or Ready/Connect/Disconnect/Preconnect and the like.
		return at, op, false, nil
	}
	op.Type = rest[0]
	args := rest[1:]
	var off, n uint64
	if len(args) >= 2 && !strings.Contains(args[0], "=") {
		// The reduced form: offset and length as bare numbers.
		if off, err = parseNum(args[0]); err == nil {
			n, err = parseNum(args[1])
		}
	} else {
		for _, a := range args {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "offset":
				off, err = parseNum(v)
			case "count":
				n, err = parseNum(v)
			}
			if err != nil {
				break
			}
		}
	}
	if err != nil {
		return at, op, false, fmt.Errorf("%s: %w", op.Type, err)
	}
	if n > maxRequestLen {
		return at, op, false, fmt.Errorf("%s of %d bytes (limit %d)", op.Type, n, maxRequestLen)
	}
	if off+n < off {
		return at, op, false, fmt.Errorf("%s at %#x+%#x overflows", op.Type, off, n)
	}
	op.Offset, op.Length = off, uint32(n)
	return at, op, true, nil
}

// parseNum parses a number as the log filter writes it: 0x-prefixed hexadecimal, or decimal.
func parseNum(s string) (uint64, error) {
	if h, ok := strings.CutPrefix(s, "0x"); ok {
		return strconv.ParseUint(h, 16, 64)
	}
	return strconv.ParseUint(s, 10, 64)
}

// Reads returns the trace's reads.
func (t *Trace) Reads() []Op {
	var r []Op
	for _, op := range t.Ops {
		if op.Type == "Read" && op.Length > 0 {
			r = append(r, op)
		}
	}
	return r
}

// End is the offset just past the furthest byte the trace touches: the smallest image it fits.
func (t *Trace) End() uint64 {
	var end uint64
	for _, op := range t.Ops {
		end = max(end, op.Offset+uint64(op.Length))
	}
	return end
}

// Burst is a run of reads the client had in flight together, and the think time after it.
type Burst struct {
	Reads []Op
	// Writes are the writes sent with the reads, in bursts from BurstsWithWrites; Bursts
	// leaves them out.
	Writes []Op
	// Think is the time from the burst's last request to the next burst's first in the
	// trace: what the client did (computing, and waiting for this burst's replies) before
	// it asked for more.
	Think time.Duration
}

// DefaultBurstGap is the gap below which consecutive reads count as sent together. A reply
// cannot come back in less — a loopback round trip of a 4 KiB read takes longer — so the
// client cannot have been waiting for the first before it sent the second.
const DefaultBurstGap = 100 * time.Microsecond

// Bursts groups the trace's reads: a read less than gap (0: DefaultBurstGap) after the
// previous one joins its burst.
func (t *Trace) Bursts(gap time.Duration) []Burst { return t.bursts(gap, false) }

// BurstsWithWrites groups the trace's reads and writes as Bursts groups its reads: a
// request less than gap after the previous one joins its burst, whichever kind either is.
// A replay of a writable root's boot sends them (Config.Writes).
func (t *Trace) BurstsWithWrites(gap time.Duration) []Burst { return t.bursts(gap, true) }

func (t *Trace) bursts(gap time.Duration, writes bool) []Burst {
	if gap <= 0 {
		gap = DefaultBurstGap
	}
	var ops []Op
	for _, op := range t.Ops {
		if op.Length > 0 && (op.Type == "Read" || writes && op.Type == "Write") {
			ops = append(ops, op)
		}
	}
	var bs []Burst
	for i, op := range ops {
		if i == 0 || op.At-ops[i-1].At >= gap {
			if n := len(bs); n > 0 {
				bs[n-1].Think = op.At - ops[i-1].At
			}
			bs = append(bs, Burst{})
		}
		b := &bs[len(bs)-1]
		if op.Type == "Write" {
			b.Writes = append(b.Writes, op)
		} else {
			b.Reads = append(b.Reads, op)
		}
	}
	return bs
}

// ErrNoReads is returned for a trace without reads.
var ErrNoReads = errors.New("trace has no reads")

// WriteImage creates a sparse image at path that fits the trace (End rounded up to 1 MiB),
// with pseudo-random data, derived from the offset, everywhere the trace reads: what a
// replay needs, at a fraction of the disk space of a full image.
func WriteImage(path string, t *Trace) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	size := (t.End() + 1<<20 - 1) &^ (1<<20 - 1)
	if err := f.Truncate(int64(size)); err != nil {
		f.Close()
		return err
	}
	// Whole 64 KiB blocks around every read, so the data does not depend on the order.
	const blk = 64 << 10
	done := map[uint64]bool{}
	buf := make([]byte, blk)
	for _, op := range t.Reads() {
		for b := op.Offset / blk; b*blk < op.Offset+uint64(op.Length); b++ {
			if done[b] {
				continue
			}
			done[b] = true
			fillBlock(buf, b)
			if _, err := f.WriteAt(buf, int64(b*blk)); err != nil {
				f.Close()
				return err
			}
		}
	}
	return f.Close()
}

// fillBlock fills buf with bytes that differ from block to block (xorshift64 seeded by b).
func fillBlock(buf []byte, b uint64) {
	x := b*0x9E3779B97F4A7C15 + 1
	for i := 0; i+8 <= len(buf); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(buf[i:], x)
	}
}

// Write writes the trace in the reduced form ParseTrace reads ("DATE TIME Op 0xOFF 0xLEN"),
// with times counted from start, after comment lines (one per element of comments).
func (t *Trace) Write(w io.Writer, start time.Time, comments ...string) error {
	bw := bufio.NewWriter(w)
	for _, c := range comments {
		fmt.Fprintf(bw, "# %s\n", c)
	}
	for _, op := range t.Ops {
		fmt.Fprintf(bw, "%s %s %#x %#x\n", start.Add(op.At).UTC().Format("2006-01-02 15:04:05.000000"), op.Type, op.Offset, op.Length)
	}
	return bw.Flush()
}
