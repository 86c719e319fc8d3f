package nbdserver

import (
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// fuzzServer is one server shared by all inputs of a fuzz target (per fuzzing process).
var fuzzServer struct {
	once sync.Once
	s    *Server
	err  error
}

func sharedFuzzServer(t testing.TB) *Server {
	fuzzServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "nbdserver-fuzz-")
		if err != nil {
			fuzzServer.err = err
			return
		}
		img, ro := filepath.Join(dir, "disk.img"), filepath.Join(dir, "ro.img")
		for _, p := range []string{img, ro} {
			if err := os.WriteFile(p, pattern(0, 1<<20), 0o600); err != nil {
				fuzzServer.err = err
				return
			}
		}
		// The image stays open (flocked) while the process runs, so it can go now.
		fuzzServer.s, fuzzServer.err = New(Config{
			Exports:          []Export{{Name: "root", Path: img}, {Name: "ro", Path: ro, ReadOnly: true}},
			HandshakeTimeout: 2 * time.Second,
		})
		if fuzzServer.err != nil {
			return
		}
		os.RemoveAll(dir)
	})
	if fuzzServer.err != nil {
		t.Fatal(fuzzServer.err)
	}
	return fuzzServer.s
}

// feed plays input as a client's byte stream against one server connection and returns
// what the server sent. The connection must end on its own once the input is exhausted.
func feed(t *testing.T, s *Server, input []byte) []byte {
	client, server := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.ServeConn(server)
	}()
	var out []byte
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 64<<10)
		for {
			n, err := client.Read(buf)
			// Keep only a bounded prefix: enough to check the greeting.
			if len(out) < 1<<16 {
				out = append(out, buf[:n]...)
			}
			if err != nil {
				return
			}
		}
	}()
	client.SetWriteDeadline(time.Now().Add(5 * time.Second))
	client.Write(input)
	// A pipe cannot be half-closed: closing it is how the input ends.
	client.Close()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("server connection did not end after the input")
	}
	<-readDone
	return out
}

var goPrefix = func() []byte {
	b := []byte{0, 0, 0, byte(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)}
	return nbd.AppendOption(b, nbd.OptGo, nbd.AppendInfoRequest(nil, "root"))
}()

var structuredPrefix = func() []byte {
	b := []byte{0, 0, 0, byte(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)}
	b = nbd.AppendOption(b, nbd.OptStructuredReply, nil)
	b = nbd.AppendOption(b, nbd.OptSetMetaContext, nbd.AppendMetaContextRequest(nil,
		nbd.MetaContextRequest{Export: "root", Queries: []string{nbd.MetaBaseAllocation}}))
	return nbd.AppendOption(b, nbd.OptGo, nbd.AppendInfoRequest(nil, "root", nbd.InfoBlockSize))
}()

// FuzzHandshake sends arbitrary client handshakes (client flags, then options). The server
// must greet, never panic, never hang past the input, and keep memory bounded whatever
// lengths the input claims.
func FuzzHandshake(f *testing.F) {
	flags := []byte{0, 0, 0, 3}
	f.Add(goPrefix)
	f.Add(structuredPrefix)
	f.Add(nbd.AppendOption(append([]byte{}, flags...), nbd.OptList, nil))
	f.Add(nbd.AppendOption(append([]byte{}, flags...), nbd.OptExportName, []byte("root")))
	f.Add(nbd.AppendOption(append([]byte{}, flags...), nbd.OptInfo, nbd.AppendInfoRequest(nil, "nosuch", 1, 2, 3)))
	f.Add(nbd.AppendOption(append([]byte{}, flags...), nbd.OptListMetaContext, nbd.AppendMetaContextRequest(nil, nbd.MetaContextRequest{Export: "root", Queries: []string{"base:"}})))
	f.Add(nbd.AppendOption(append([]byte{}, flags...), nbd.OptStartTLS, nil))
	f.Add(nbd.AppendOption(append([]byte{}, flags...), 0xffffffff, []byte{1, 2, 3}))
	f.Add(append(append([]byte{}, flags...), 0x49, 0x48, 0x41, 0x56, 0x45, 0x4f, 0x50, 0x54, 0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff))
	f.Add([]byte{0, 0, 0, 0x80})
	identified := nbd.AppendOption(append([]byte{}, flags...), nbd.OptNbdrootClient, []byte("id=52:54:00:12:34:56 overlay=00112233445566778899aabbccddeeff"))
	f.Add(nbd.AppendOption(identified, nbd.OptGo, nbd.AppendInfoRequest(nil, "root", nbd.InfoNbdrootOverlay)))
	f.Add(nbd.AppendOption(append([]byte{}, flags...), nbd.OptNbdrootClient, []byte("id=../x\x00")))
	f.Fuzz(func(t *testing.T, input []byte) {
		s := sharedFuzzServer(t)
		out := feed(t, s, input)
		if len(out) < 18 || string(out[:8]) != "NBDMAGIC" {
			t.Fatalf("no greeting: % x", out[:min(len(out), 18)])
		}
	})
}

// FuzzRequests negotiates an export (simple or structured replies, by the first input
// byte) and then sends the rest of the input as transmission-phase traffic.
func FuzzRequests(f *testing.F) {
	req := func(typ, flags uint16, off uint64, n uint32, payload []byte) []byte {
		return append(nbd.AppendRequest(nil, nbd.Request{Type: typ, Flags: flags, Handle: 7, Offset: off, Length: n}), payload...)
	}
	f.Add(append([]byte{0}, req(nbd.CmdRead, 0, 0, 4096, nil)...))
	f.Add(append([]byte{1}, req(nbd.CmdRead, nbd.CmdFlagDF, 1000, 300000, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdWrite, nbd.CmdFlagFUA, 10, 5, []byte("hello"))...))
	f.Add(append([]byte{1}, req(nbd.CmdBlockStatus, nbd.CmdFlagReqOne, 0, 1<<20, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdWriteZeroes, nbd.CmdFlagNoHole|nbd.CmdFlagFastZero, 4096, 8192, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdTrim, 0, 1<<19, 1<<19, nil)...))
	f.Add(append([]byte{1}, req(nbd.CmdFlush, 0, 0, 0, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdWrite, 0, 0, 0xffffffff, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdRead, 0, 0xfffffffffffffff0, 0x100, nil)...))
	f.Add(append([]byte{1}, req(99, 0xffff, 0, 0, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdDisc, 0, 0, 0, nil)...))
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		s := sharedFuzzServer(t)
		prefix := goPrefix
		if input[0]&1 != 0 {
			prefix = structuredPrefix
		}
		out := feed(t, s, append(append([]byte{}, prefix...), input[1:]...))
		if len(out) < 18 {
			t.Fatalf("short server output: % x", out)
		}
	})
}
