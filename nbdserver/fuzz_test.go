package nbdserver

import (
	"context"
	"errors"
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

	// A TCP listener of the same server, for inputs fed over a real socket (feedSocket).
	tcpOnce sync.Once
	addr    string
}

func sharedFuzzServer(t testing.TB) *Server {
	fuzzServer.once.Do(func() {
		dir, err := os.MkdirTemp("", "nbdserver-fuzz-")
		if err != nil {
			fuzzServer.err = err
			return
		}
		img, ro, base := filepath.Join(dir, "disk.img"), filepath.Join(dir, "ro.img"), filepath.Join(dir, "base.img")
		for _, p := range []string{img, ro, base} {
			size := 1 << 20
			if p == base {
				size = 3 << 20 // reads over 1 MiB are streamed
			}
			if err := os.WriteFile(p, pattern(0, size), 0o600); err != nil {
				fuzzServer.err = err
				return
			}
		}
		if fuzzServer.err = os.MkdirAll(filepath.Join(os.TempDir(), "nbdserver-fuzz-cow"), 0o700); fuzzServer.err != nil {
			return
		}
		// The image stays open (flocked) while the process runs, so it can go now.
		fuzzServer.s, fuzzServer.err = New(Config{
			Exports: []Export{{Name: "root", Path: img}, {Name: "ro", Path: ro, ReadOnly: true},
				// Overlays are created later, in a directory of their own that outlives dir.
				{Name: "cow", Path: base, Cow: true, CowDir: filepath.Join(os.TempDir(), "nbdserver-fuzz-cow")}},
			HandshakeTimeout: 2 * time.Second,
			StateDir:         filepath.Join(os.TempDir(), "nbdserver-fuzz-state"),
			// Inputs follow each other faster than closed connections give back their slots.
			MaxClientConnections: 1024,
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

// feedSocket is feed over a TCP connection to the shared server's listener: the paths of
// real sockets — raw reads and writev, sendfile for large reads, splice for large writes —
// see the input, which net.Pipe never reaches. The input ends with a half-close.
func feedSocket(t *testing.T, s *Server, input []byte) []byte {
	fuzzServer.tcpOnce.Do(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		fuzzServer.addr = ln.Addr().String()
		go s.Serve(context.Background(), ln)
	})
	nc, err := net.Dial("tcp", fuzzServer.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	c := nc.(*net.TCPConn)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		c.Write(input)
		c.CloseWrite()
	}()
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := c.Read(buf)
		if len(out) < 1<<16 {
			out = append(out, buf[:n]...)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatal("server connection did not end after the input")
		}
		if err != nil {
			return out
		}
	}
}

var goPrefix = func() []byte {
	b := []byte{0, 0, 0, byte(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)}
	return nbd.AppendOption(b, nbd.OptGo, nbd.AppendInfoRequest(nil, "root"))
}()

var structuredPrefix = structuredGo("root")

func structuredGo(export string) []byte {
	b := []byte{0, 0, 0, byte(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)}
	b = nbd.AppendOption(b, nbd.OptStructuredReply, nil)
	b = nbd.AppendOption(b, nbd.OptSetMetaContext, nbd.AppendMetaContextRequest(nil,
		nbd.MetaContextRequest{Export: export, Queries: []string{nbd.MetaBaseAllocation}}))
	return nbd.AppendOption(b, nbd.OptGo, nbd.AppendInfoRequest(nil, export, nbd.InfoBlockSize))
}

// cowPrefixes negotiate the copy-on-write export, whose reads take no sendfile path.
var cowPrefixes = [2][]byte{
	nbd.AppendOption([]byte{0, 0, 0, byte(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)}, nbd.OptGo, nbd.AppendInfoRequest(nil, "cow")),
	structuredGo("cow"),
}

// FuzzHandshake sends arbitrary client handshakes (client flags, then options). The server
// must greet, never panic, never hang past the input, and keep memory bounded whatever
// lengths the input claims.
func FuzzHandshake(f *testing.F) {
	handshakeSeeds(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		s := sharedFuzzServer(t)
		out := feed(t, s, input)
		if len(out) < 18 || string(out[:8]) != "NBDMAGIC" {
			t.Fatalf("no greeting: % x", out[:min(len(out), 18)])
		}
	})
}

func handshakeSeeds(f *testing.F) {
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
}

// requestSeeds are transmission-phase inputs: a first byte choosing simple (bit 0 clear)
// or structured (set) replies and the export (bit 1: the copy-on-write one), then requests.
func requestSeeds(f *testing.F) {
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
}

func req(typ, flags uint16, off uint64, n uint32, payload []byte) []byte {
	return append(nbd.AppendRequest(nil, nbd.Request{Type: typ, Flags: flags, Handle: 7, Offset: off, Length: n}), payload...)
}

// requestInput is the whole client byte stream for a requestSeeds-style input.
func requestInput(input []byte) []byte {
	prefix := goPrefix
	switch {
	case input[0]&2 != 0:
		prefix = cowPrefixes[input[0]&1]
	case input[0]&1 != 0:
		prefix = structuredPrefix
	}
	return append(append([]byte{}, prefix...), input[1:]...)
}

// FuzzRequests negotiates an export (simple or structured replies, by the first input
// byte) and then sends the rest of the input as transmission-phase traffic.
func FuzzRequests(f *testing.F) {
	requestSeeds(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		out := feed(t, sharedFuzzServer(t), requestInput(input))
		if len(out) < 18 {
			t.Fatalf("short server output: % x", out)
		}
	})
}

// FuzzRequestsSocket is FuzzRequests over a TCP socket, with seeds that take the socket
// paths: reads large enough for sendfile (on the read-write and the read-only export),
// writes large enough to be spliced from the socket, and those cut short.
func FuzzRequestsSocket(f *testing.F) {
	requestSeeds(f)
	big := pattern(0, 600<<10)
	f.Add(append([]byte{0}, req(nbd.CmdRead, 0, 4096, 300<<10, nil)...))
	f.Add(append([]byte{1}, req(nbd.CmdRead, 0, 0, 1<<20, nil)...))
	f.Add(append([]byte{0}, req(nbd.CmdWrite, 0, 1000, uint32(len(big)), big)...))
	f.Add(append([]byte{1}, append(req(nbd.CmdWrite, 0, 0, 1<<20, big), req(nbd.CmdRead, 0, 0, 1<<20, nil)...)...))
	f.Add(append(append([]byte{0}, req(nbd.CmdWrite, nbd.CmdFlagFUA, 0, 200<<10, big[:200<<10])...), req(nbd.CmdRead, 0, 64<<10, 128<<10, nil)...))
	// The copy-on-write export: reads streamed in pieces, with and without holes.
	f.Add(append(append([]byte{2}, req(nbd.CmdWrite, 0, 300<<10, 4096, big[:4096])...), req(nbd.CmdRead, 0, 0, 3<<20, nil)...))
	f.Add(append(append([]byte{3}, req(nbd.CmdTrim, 0, 1<<20, 1<<20, nil)...), req(nbd.CmdRead, 0, 1000, 2<<20, nil)...))
	f.Fuzz(func(t *testing.T, input []byte) {
		if len(input) == 0 {
			return
		}
		out := feedSocket(t, sharedFuzzServer(t), requestInput(input))
		if len(out) < 18 || string(out[:8]) != "NBDMAGIC" {
			t.Fatalf("short server output: % x", out[:min(len(out), 18)])
		}
	})
}

// FuzzHandshakeSocket is FuzzHandshake over a TCP socket.
func FuzzHandshakeSocket(f *testing.F) {
	handshakeSeeds(f)
	f.Fuzz(func(t *testing.T, input []byte) {
		out := feedSocket(t, sharedFuzzServer(t), input)
		if len(out) < 18 || string(out[:8]) != "NBDMAGIC" {
			t.Fatalf("no greeting: % x", out[:min(len(out), 18)])
		}
	})
}
