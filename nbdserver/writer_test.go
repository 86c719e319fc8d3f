package nbdserver

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

type countRel struct{ n *atomic.Int64 }

func (c countRel) release() { c.n.Add(1) }

// lockedBuf is an io.Writer that records writes (net.Buffers falls back to one Write per
// buffer for writers without writev).
type lockedBuf struct {
	mu  sync.Mutex
	b   bytes.Buffer
	err error
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		return 0, l.err
	}
	return l.b.Write(p)
}

// Concurrent submitters: every submission arrives whole and contiguous, everything lent is
// released.
func TestReplyWriterConcurrent(t *testing.T) {
	out := &lockedBuf{}
	w := newReplyWriter(out)
	var released atomic.Int64
	w.sendfile = func(bufs [][]byte, fd int, off int64, n int) error {
		for _, b := range bufs {
			if _, err := out.Write(b); err != nil {
				return err
			}
		}
		_, err := out.Write(bytes.Repeat([]byte{'F'}, n))
		return err
	}
	var wg sync.WaitGroup
	const goroutines, each = 8, 200
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				msg := fmt.Sprintf("<%d:%d|", g, i)
				var err error
				switch i % 3 {
				case 0:
					err = w.submit([][]byte{[]byte(msg), []byte("a>")}, []releaser{countRel{&released}})
				case 1:
					err = w.submit2([]byte(msg), []byte("b>"), countRel{&released}, nil)
				case 2:
					err = w.sendFile([]byte(msg), 0, 0, 3, countRel{&released}, nil)
				}
				if err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	got := out.b.String()
	for g := 0; g < goroutines; g++ {
		for i := 0; i < each; i++ {
			var want string
			switch i % 3 {
			case 0:
				want = fmt.Sprintf("<%d:%d|a>", g, i)
			case 1:
				want = fmt.Sprintf("<%d:%d|b>", g, i)
			case 2:
				want = fmt.Sprintf("<%d:%d|FFF", g, i)
			}
			if !bytes.Contains([]byte(got), []byte(want)) {
				t.Fatalf("submission %q missing or torn", want)
			}
		}
	}
	if n := released.Load(); n != goroutines*each {
		t.Errorf("released %d of %d", n, goroutines*each)
	}
}

// After a write error every submitter (also those waiting for a sendfile turn) gets the
// error and everything is released.
func TestReplyWriterError(t *testing.T) {
	out := &lockedBuf{err: errors.New("connection reset")}
	w := newReplyWriter(out)
	w.sendfile = func(bufs [][]byte, fd int, off int64, n int) error {
		for _, b := range bufs {
			if _, err := out.Write(b); err != nil {
				return err
			}
		}
		return nil
	}
	var released atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.sendFile([]byte("h"), 0, 0, 1, countRel{&released}, nil)
			w.submit2([]byte("h"), nil, countRel{&released}, nil)
		}()
	}
	wg.Wait()
	if w.failed() == nil {
		t.Error("no error recorded")
	}
	if n := released.Load(); n != 32 {
		t.Errorf("released %d of 32", n)
	}
}
