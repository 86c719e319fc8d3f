package nbdserver

import (
	"bytes"
	"testing"

	"github.com/nbdroot/nbdroot/nbd"
)

// hugeLen is the largest request nbd-tester-client's integrityhuge test sends (47.6 MiB),
// beyond the 32 MiB we advertise.
const hugeLen = 47<<20 + 600<<10

// Requests beyond nbd.MaxPayload are served as nbd-server serves them, not refused.
func TestHugeRequests(t *testing.T) {
	const size = 2*hugeLen + 1<<20
	for _, tt := range []struct {
		name       string
		structured bool
		fua        uint16
	}{
		{"simple", false, 0},
		{"structured", true, 0},
		{"simple fua", false, nbd.CmdFlagFUA},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Config{Exports: []Export{{Name: "root", Path: makeImage(t, size)}}})
			c := connectTest(t, s.addr, "root", tt.structured)
			const off = 1<<20 + 3
			if got := c.pread(off, hugeLen); !bytes.Equal(got, pattern(off, hugeLen)) {
				t.Fatal("huge read of the image returned wrong data")
			}
			data := bytes.Repeat([]byte("nbdroot!"), hugeLen/8)
			c.pwrite(hugeLen, data, tt.fua)
			// A small request behind the huge ones still gets its own answer.
			if got := c.pread(0, 16); !bytes.Equal(got, pattern(0, 16)) {
				t.Error("small read after huge requests returned wrong data")
			}
			if got := c.pread(hugeLen, hugeLen); !bytes.Equal(got, data) {
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
