package nbdserver

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// scriptSource plays back a script of reads: each step is a chunk of data the client sent,
// or a gap (nil) where the socket is empty and a read would have to wait. It records which
// reads were allowed to wait.
type scriptSource struct {
	steps [][]byte
	log   []string
}

func (s *scriptSource) read(p []byte, wait bool) (int, error) {
	for len(s.steps) > 0 && s.steps[0] != nil && len(s.steps[0]) == 0 {
		s.steps = s.steps[1:]
	}
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	if s.steps[0] == nil {
		if !wait {
			s.log = append(s.log, "would block")
			return 0, errWouldBlock
		}
		s.log = append(s.log, "waited")
		s.steps = s.steps[1:]
		n, err := s.read(p, false)
		s.log = s.log[:len(s.log)-1] // one read, logged as "waited"
		return n, err
	}
	n := copy(p, s.steps[0])
	s.steps[0] = s.steps[0][n:]
	s.log = append(s.log, "read")
	return n, nil
}

func seq(from, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(from + i)
	}
	return b
}

// onWait must run exactly before the reads that wait — never while the client's data is
// already there — and everything read must come out in order, whatever the chunking.
func TestInbufWaitsOnlyWhenEmpty(t *testing.T) {
	src := &scriptSource{steps: [][]byte{seq(0, 10), seq(10, 30), nil, seq(40, 5), nil, seq(45, 100)}}
	var log []string
	in := newInbuf(src, 16, func() error {
		log = append(log, "onWait")
		src.log = append(src.log, "onWait")
		return nil
	})
	var got []byte
	for _, n := range []int{4, 16, 1, 16} { // peeks up to the buffer size
		p, err := in.peek(n)
		if err != nil {
			t.Fatalf("peek(%d): %v", n, err)
		}
		got = append(got, p...)
		in.discard(n)
	}
	if err := in.skip(20); err != nil { // 37..56 dropped
		t.Fatal(err)
	}
	rest := make([]byte, 88)
	if err := in.readFull(rest); err != nil {
		t.Fatal(err)
	}
	got = append(got, rest...)
	want := append(seq(0, 37), seq(57, 88)...)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("bytes (-want +got):\n%s", diff)
	}
	if len(log) != 2 {
		t.Errorf("onWait ran %d times, want 2 (once per gap)", len(log))
	}
	for i, e := range src.log {
		if e == "waited" && (i == 0 || src.log[i-1] != "onWait") {
			t.Errorf("read %d waited without onWait first: %v", i, src.log)
		}
		if e == "onWait" && (i == 0 || src.log[i-1] != "would block") {
			t.Errorf("onWait at %d while data was there: %v", i, src.log)
		}
	}
	if _, err := in.peek(1); !errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("peek at the end of the stream: %v, want io.EOF", err)
	}
}

// The end of the stream in the middle of something is unexpected; an onWait error stops
// the read before it waits; a peek beyond the buffer is refused.
func TestInbufErrors(t *testing.T) {
	tests := []struct {
		name  string
		steps [][]byte
		op    func(in *inbuf) error
		want  error
	}{
		{"eof inside a header", [][]byte{seq(0, 5)}, func(in *inbuf) error { _, err := in.peek(8); return err }, io.ErrUnexpectedEOF},
		{"eof inside a skip", [][]byte{seq(0, 5)}, func(in *inbuf) error { return in.skip(8) }, io.ErrUnexpectedEOF},
		{"eof inside a payload", [][]byte{seq(0, 5)}, func(in *inbuf) error { return in.readFull(make([]byte, 100)) }, io.ErrUnexpectedEOF},
		{"eof inside a direct read", [][]byte{seq(0, 5)}, func(in *inbuf) error { return in.readDirect(make([]byte, 100)) }, io.ErrUnexpectedEOF},
		{"onWait fails", [][]byte{seq(0, 5), nil, seq(5, 5)}, func(in *inbuf) error { _, err := in.peek(8); return err }, errTestWait},
		{"peek too large", [][]byte{seq(0, 100)}, func(in *inbuf) error { _, err := in.peek(17); return err }, errShortBuffer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := newInbuf(&scriptSource{steps: tt.steps}, 16, func() error { return errTestWait })
			if err := tt.op(in); !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
}

var errTestWait = errors.New("test: onWait failed")

// A large write payload is partly buffered (taken in place) and partly read straight into
// its own buffer; the buffered head must stay intact while the tail is read, and what
// follows the payload must come out next.
func TestInbufReadDirectKeepsHead(t *testing.T) {
	src := &scriptSource{steps: [][]byte{seq(0, 12), nil, seq(12, 40), seq(52, 8)}}
	in := newInbuf(src, 16, func() error { return nil })
	if _, err := in.peek(4); err != nil { // the request header
		t.Fatal(err)
	}
	in.discard(4)
	head := in.b[in.r : in.r+in.buffered()]
	headCopy := bytes.Clone(head)
	tail := make([]byte, 48-len(head))
	if err := in.readDirect(tail); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(head, headCopy) {
		t.Error("the buffered head changed while the tail was read")
	}
	in.discard(len(head))
	if diff := cmp.Diff(seq(4, 48), append(headCopy, tail...)); diff != "" {
		t.Errorf("payload (-want +got):\n%s", diff)
	}
	next, err := in.peek(8)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(seq(52, 8), next); diff != "" {
		t.Errorf("after the payload (-want +got):\n%s", diff)
	}
}

// lazyScript is a scriptSource that can wait without a buffer (lazySource), and records
// whether the inbuf held its buffer while it waited.
type lazyScript struct {
	scriptSource
	in         *inbuf
	heldInWait []bool
}

func (s *lazyScript) readWhenReady(want int, get func(int) []byte) (int, error) {
	s.heldInWait = append(s.heldInWait, s.in.buf != nil)
	return s.read(get(want), true)
}

// An idle connection holds no input buffer: it is given back before every wait with
// nothing buffered, and taken again when data comes.
func TestInbufIdleHoldsNoBuffer(t *testing.T) {
	src := &lazyScript{scriptSource: scriptSource{steps: [][]byte{seq(0, 10), nil, seq(10, 20), nil, seq(30, 2), nil, seq(32, 8)}}}
	in := newInbuf(src, 16, func() error { return nil })
	src.in = in
	var got []byte
	for len(got) < 40 {
		n := min(4, 40-len(got))
		p, err := in.peek(n)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p...)
		in.discard(n)
	}
	if !bytes.Equal(got, seq(0, 40)) {
		t.Fatalf("read % x", got)
	}
	// A peek spanning a gap waits with the bytes before it buffered (an ordinary read);
	// the others wait with nothing buffered, and without the buffer.
	if len(src.heldInWait) == 0 {
		t.Fatal("never waited without a buffer")
	}
	for i, held := range src.heldInWait {
		if held {
			t.Errorf("wait %d: the buffer was held while nothing was buffered", i)
		}
	}
	in.release()
	if in.buf != nil {
		t.Error("release kept the buffer")
	}
}

// The buffer starts small and grows when a peek needs more or a read filled it.
func TestInbufGrows(t *testing.T) {
	big := seq(0, 3*inbufStart)
	src := &scriptSource{steps: [][]byte{big[:inbufStart+100], big[inbufStart+100:]}}
	in := newInbuf(src, 4*inbufStart, func() error { return nil })
	p, err := in.peek(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.b) != inbufStart || !bytes.Equal(p, big[:100]) {
		t.Fatalf("first buffer %d bytes, want %d", len(in.b), inbufStart)
	}
	in.discard(100)
	// A peek larger than the small buffer: grown, nothing lost.
	p, err = in.peek(2 * inbufStart)
	if err != nil {
		t.Fatal(err)
	}
	if len(in.b) != 4*inbufStart || !bytes.Equal(p, big[100:100+2*inbufStart]) {
		t.Fatalf("after a large peek: buffer %d bytes, data equal %v", len(in.b), bytes.Equal(p, big[100:100+2*inbufStart]))
	}
	in.release()
	in.src = &scriptSource{steps: [][]byte{seq(0, 10)}}
	if _, err := in.peek(10); err != nil || len(in.b) != inbufStart {
		t.Errorf("after release: %v, buffer %d bytes, want small again", err, len(in.b))
	}
}
