package nbdserver

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/nbd"
)

// hugeLen is the largest request nbd-tester-client's integrityhuge test sends (47.6 MiB),
// beyond the 32 MiB we advertise.
const hugeLen = 47<<20 + 600<<10

// Requests beyond nbd.MaxPayload are served as nbd-server serves them, not refused.
func TestHugeRequests(t *testing.T) {
	const size = hugeLen + 1<<20
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: makeImage(t, size)}}})
	want := pattern(0, size) // the image's content, as the subtests change it
	for i, tt := range []struct {
		name       string
		structured bool
		fua        uint16
	}{
		{"simple", false, 0},
		{"structured", true, 0},
		{"simple fua", false, nbd.CmdFlagFUA},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := connectTest(t, s.addr, "root", tt.structured)
			off := uint64(i*4096 + 3)
			if got := c.pread(off, hugeLen); !bytes.Equal(got, want[off:off+hugeLen]) {
				t.Fatal("huge read returned wrong data")
			}
			data := bytes.Repeat([]byte(tt.name[:1]), hugeLen)
			off = uint64(i * 512)
			c.pwrite(off, data, tt.fua)
			copy(want[off:], data)
			// A small request behind the huge ones still gets its own answer.
			if got := c.pread(size-16, 16); !bytes.Equal(got, want[size-16:]) {
				t.Error("small read after huge requests returned wrong data")
			}
			if got := c.pread(off, hugeLen); !bytes.Equal(got, data) {
				t.Error("huge read after a huge write returned other data")
			}
			c.disconnect()
		})
	}
}

// A refused huge WRITE has its payload read and dropped, and the connection goes on.
func TestHugeRequestErrors(t *testing.T) {
	for _, tt := range []struct {
		name       string
		readOnly   bool
		structured bool
		typ        uint16
		off        uint64
		want       uint32
	}{
		{name: "read past end", typ: nbd.CmdRead, off: 0, want: nbd.EINVAL},
		{name: "structured read past end", structured: true, typ: nbd.CmdRead, want: nbd.EINVAL},
		{name: "write past end", typ: nbd.CmdWrite, want: nbd.ENOSPC},
		{name: "write read-only", readOnly: true, typ: nbd.CmdWrite, want: nbd.EPERM},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, oneExport(t, func(e *Export) { e.ReadOnly = tt.readOnly }))
			c := connectTest(t, s.addr, "root", tt.structured)
			var payload []byte
			if tt.typ == nbd.CmdWrite {
				payload = make([]byte, hugeLen)
			}
			rp := c.do(tt.typ, 0, tt.off, hugeLen, payload)
			if rp.Errno != tt.want {
				t.Fatalf("got %v, want %v", nbd.Errno(rp.Errno), nbd.Errno(tt.want))
			}
			if got := c.pread(0, 16); !bytes.Equal(got, pattern(0, 16)) {
				t.Error("read after the refused request returned wrong data")
			}
			c.disconnect()
		})
	}
}

// The memory a huge request pins is bounded: a `nbdroot serve` process serving 47.6 MiB
// writes and reads grows by far less than one request (measured: about 6 MiB, the 4 MiB
// chunk and the runtime's share), where buffering whole requests would add at least 47.6.
func TestHugeRequestMemoryBound(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads VmHWM from /proc")
	}
	for _, structured := range []bool{false, true} {
		t.Run(fmt.Sprintf("structured=%v", structured), func(t *testing.T) {
			p := startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + makeImage(t, 2*hugeLen)}})
			before := peakRSS(t, p.cmd.Process.Pid)
			c := connectTest(t, p.addr, "root", structured)
			data := bytes.Repeat([]byte("abcdefgh"), hugeLen/8)
			for i := range 4 {
				off := uint64(i%2) * hugeLen
				c.pwrite(off, data, 0)
				if got := c.pread(off, hugeLen); !bytes.Equal(got, data) {
					t.Fatal("huge read returned other data than written")
				}
			}
			c.disconnect()
			after := peakRSS(t, p.cmd.Process.Pid)
			t.Logf("peak RSS %d KiB → %d KiB", before>>10, after>>10)
			if after-before > hugeLen/2 {
				t.Errorf("serving %d-byte requests raised the peak RSS by %d KiB (more than half a request)", hugeLen, (after-before)>>10)
			}
		})
	}
}

// peakRSS is a process's VmHWM in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			var kb int64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d kB", &kb); err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc/PID/status")
	return 0
}
