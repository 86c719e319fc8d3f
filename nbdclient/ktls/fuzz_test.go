package ktls

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzServerStream feeds the relay bytes as from the server: records that do not
// authenticate, bad headers, truncations. The relay must end with an error, never panic
// or hang, and pass nothing unauthenticated to the kernel.
func FuzzServerStream(f *testing.F) {
	st := State{Suite: AES128GCMSHA256, TX: Direction{Secret: rfc8448ClientAppSecret}, RX: Direction{Secret: rfc8448ServerAppSecret}}
	f.Add(append(bytes.Clone(rfc8448ServerTicketRecord), rfc8448ServerAppRecord...))
	f.Add(rfc8448ServerAppRecord[:20])
	f.Add([]byte{TypeApplicationData, 3, 3, 0xff, 0xff})
	f.Add([]byte{TypeChangeCipherSpec, 3, 3, 0, 1, 1})
	f.Fuzz(func(t *testing.T, stream []byte) {
		kernel, plain := net.Pipe()
		defer kernel.Close()
		wire := &fakeWire{r: bytes.NewReader(stream)}
		r, err := NewRelay(plain, wire, st)
		if err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		copied := make(chan struct{})
		go func() { io.Copy(&got, kernel); close(copied) }()
		done := make(chan error, 1)
		go func() { done <- r.Run() }()
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("the relay ended without an error")
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the relay hangs")
		}
		kernel.Close()
		<-copied
		// Only the RFC's authenticated payload may ever reach the kernel.
		if got.Len() > 0 && !bytes.Contains(bytes.Repeat(rfc8448AppData, 1+got.Len()/len(rfc8448AppData)), got.Bytes()) {
			t.Fatalf("the kernel got %x", got.Bytes())
		}
	})
}

// fakeWire is a server connection that sends a fixed stream and swallows writes.
type fakeWire struct{ r io.Reader }

func (w *fakeWire) Read(p []byte) (int, error)  { return w.r.Read(p) }
func (w *fakeWire) Write(p []byte) (int, error) { return len(p), nil }
func (w *fakeWire) Close() error                { return nil }

// FuzzCounter follows arbitrary streams in arbitrary chunks: reads never pass a record
// boundary, and the counts never exceed the records seen.
func FuzzCounter(f *testing.F) {
	f.Add(append(bytes.Clone(rfc8448ServerTicketRecord), rfc8448ServerAppRecord...), uint8(7))
	f.Add([]byte{TypeApplicationData, 3, 3, 0, 0, TypeAlert, 3, 3, 0, 2, 1, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		var s recordStream
		n := int(chunk%16) + 1
		for len(stream) > 0 {
			want := s.want()
			k := min(n, len(stream))
			if s.err == nil && k > want && want > 0 {
				k = want // a Counter's Read never asks for more
			}
			s.feed(stream[:k], true)
			stream = stream[k:]
			if s.err != nil {
				return
			}
		}
		if s.count > 0 && len(s.last) < HeaderLen {
			t.Fatalf("counted %d records but kept a last record of %d bytes", s.count, len(s.last))
		}
	})
}
