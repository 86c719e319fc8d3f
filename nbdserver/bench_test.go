package nbdserver

import (
	"bufio"
	"io"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// BenchmarkServe4K drives one connection with 4 KiB requests at queue depth 32 (fio's
// randread/randwrite shape, without fio), so the cost of the transmission path — the
// fleet counters included — can be compared between builds: it reports the process's CPU
// time per request (server and this lean client together) next to ns/op.
func BenchmarkServe4K(b *testing.B) {
	for _, tc := range []struct {
		name string
		typ  uint16
		cow  bool
	}{{"read", nbd.CmdRead, false}, {"write", nbd.CmdWrite, false}, {"cow-read", nbd.CmdRead, true}, {"cow-write", nbd.CmdWrite, true}} {
		b.Run(tc.name, func(b *testing.B) { benchServe4K(b, tc.typ, tc.cow) })
	}
}

func benchServe4K(b *testing.B, typ uint16, cow bool) {
	const size, depth, bs = 64 << 20, 32, 4096
	s := startServer(b, Config{Exports: []Export{{Name: "root", Path: makeImage(b, size), Cow: cow}}})
	c := connectTest(b, s.addr, "root", false)
	c.nc.SetDeadline(time.Time{})
	payload := make([]byte, bs)
	slots := make(chan struct{}, depth)
	done := make(chan error, 1)
	go func() {
		br := bufio.NewReaderSize(c.nc, 256<<10)
		var hdr [nbd.SimpleReplySize]byte
		for i := 0; i < b.N; i++ {
			if _, err := io.ReadFull(br, hdr[:]); err != nil {
				done <- err
				return
			}
			rp, err := nbd.ParseSimpleReply(hdr[:])
			if err == nil && rp.Error != 0 {
				err = nbd.Errno(rp.Error)
			}
			if err == nil && typ == nbd.CmdRead {
				_, err = br.Discard(bs)
			}
			if err != nil {
				done <- err
				return
			}
			<-slots
		}
		done <- nil
	}()
	rng := rand.New(rand.NewPCG(1, 2))
	bw := bufio.NewWriterSize(c.nc, 64<<10)
	var ru0, ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		select {
		case slots <- struct{}{}:
		default:
			bw.Flush() // the queue is full: let the server see what is pending
			slots <- struct{}{}
		}
		r := nbd.Request{Type: typ, Handle: uint64(i), Offset: uint64(rng.IntN(size/bs)) * bs, Length: bs}
		var h [nbd.RequestSize]byte
		bw.Write(nbd.AppendRequest(h[:0], r))
		if typ == nbd.CmdWrite {
			bw.Write(payload)
		}
		if len(slots) < depth/2 {
			bw.Flush()
		}
	}
	bw.Flush()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
}
