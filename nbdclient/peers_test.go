package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver"
)

// The handshake against the NBD servers people run: nbd-server, nbdkit, qemu-nbd and our
// own nbdroot serve, each on a free loopback port. Every peer serves "root" (read-write,
// 4 MiB of known data) and "ro" (read-only); the tests negotiate, list, ask for a missing
// export, and read a block through the negotiated socket with a simple request — the
// socket is then in the exact state the kernel gets it in.

const peerImageSize = 4 << 20

// peer is a running server.
type peer struct {
	name string
	addr string
	// multiConn says whether the server advertises NBD_FLAG_CAN_MULTI_CONN on "root".
	multiConn bool
	// strictNames says whether the server refuses unknown export names.
	strictNames bool
	// blockSizes says whether the server sends NBD_INFO_BLOCK_SIZE.
	blockSizes bool
	// flush says whether it advertises NBD_FLAG_SEND_FLUSH.
	flush bool
}

// needTool finds a peer binary; missing ones fail the test under NBDROOT_REQUIRE_PEERS=1.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("%s is not installed (NBDROOT_REQUIRE_PEERS=1): run scripts/deps.sh", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// freePort picks a port nobody listens on by listening on port 0 and closing; the caller
// retries when someone else took it meanwhile.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// peerImages writes the images: "root" holds a recognisable pattern.
func peerImages(t *testing.T) (root, ro string, data []byte) {
	dir := t.TempDir()
	data = make([]byte, peerImageSize)
	for i := range data {
		data[i] = byte(i*7 + i/4096)
	}
	root, ro = filepath.Join(dir, "root.img"), filepath.Join(dir, "ro.img")
	if err := os.WriteFile(root, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ro, data[:1<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	return root, ro, data
}

// startProc runs a server command that listens on port and waits until it accepts
// connections; ok=false when it exited first (the port was taken: the caller retries).
func startProc(t *testing.T, port int, name string, args ...string) (ok bool) {
	t.Helper()
	var out bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
	return waitListening(t, port, exited)
}

func waitListening(t *testing.T, port int, exited <-chan struct{}) bool {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second)
		if err == nil {
			c.Close()
			return true
		}
		select {
		case <-exited:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("nothing listens on port %d after 20s", port)
	return false
}

// withPort retries start on fresh ports.
func withPort(t *testing.T, start func(port int) bool) int {
	t.Helper()
	for try := 0; try < 5; try++ {
		port := freePort(t)
		if start(port) {
			return port
		}
		t.Logf("port %d was taken meanwhile; retrying", port)
	}
	t.Fatal("no free port after 5 tries")
	return 0
}

func startNBDServer(t *testing.T, root, ro string) peer {
	bin := needTool(t, "nbd-server")
	dir := t.TempDir()
	port := withPort(t, func(port int) bool {
		cfg := filepath.Join(dir, "config")
		pidfile := filepath.Join(dir, "pid")
		os.Remove(pidfile)
		conf := fmt.Sprintf("[generic]\nport = %d\nlistenaddr = 127.0.0.1\nallowlist = true\n"+
			"[root]\nexportname = %s\nflush = true\nfua = true\n[ro]\nexportname = %s\nreadonly = true\n", port, root, ro)
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		return startNBDServerDaemon(t, bin, cfg, pidfile, port)
	})
	return peer{name: "nbd-server", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), multiConn: true, strictNames: true, flush: true}
}

func startNbdkit(t *testing.T, root, ro string) peer {
	bin := needTool(t, "nbdkit")
	// nbdkit serves one plugin; the exportname filter makes it refuse other names, and
	// blocksize-policy has it announce block sizes.
	port := withPort(t, func(port int) bool {
		return startProc(t, port, bin, "-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
			"--filter=exportname", "--filter=blocksize-policy", "file", root,
			"exportname=root", "exportname-list=explicit", "exportname-strict=true",
			"blocksize-minimum=512", "blocksize-preferred=4096", "blocksize-maximum=65536")
	})
	return peer{name: "nbdkit", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), multiConn: true, strictNames: true, blockSizes: true, flush: true}
}

func startQemuNBD(t *testing.T, root, ro string) peer {
	bin := needTool(t, "qemu-nbd")
	port := withPort(t, func(port int) bool {
		// --shared: several connections at once (the default is one client in total).
		return startProc(t, port, bin, "-t", "-b", "127.0.0.1", "-p", strconv.Itoa(port),
			"-x", "root", "-f", "raw", "--shared=8", "--cache=writeback", root)
	})
	// qemu-nbd advertises multi-conn when it allows several clients (--shared).
	return peer{name: "qemu-nbd", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), multiConn: true, strictNames: true, blockSizes: true, flush: true}
}

func startNbdrootServe(t *testing.T, root, ro string) peer {
	srv, err := nbdserver.New(nbdserver.Config{
		Exports: []nbdserver.Export{{Name: "root", Path: root, Default: true}, {Name: "ro", Path: ro, ReadOnly: true},
			{Name: "lan-only", Path: ro, ReadOnly: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			{Name: "one-client", Path: ro, ReadOnly: true, MaxConnections: 1}},
		Logger: log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	return peer{name: "nbdroot serve", addr: serveInProcess(t, srv), multiConn: true, strictNames: true, blockSizes: true, flush: true}
}

// readBlock sends one simple NBD_CMD_READ on a negotiated connection and returns the data:
// what the kernel does with the socket.
func readBlock(t *testing.T, c net.Conn, off uint64, n uint32) []byte {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	req := nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Handle: 0x1234, Offset: off, Length: n})
	if _, err := c.Write(req); err != nil {
		t.Fatal(err)
	}
	var h [nbd.SimpleReplySize]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatal(err)
	}
	r, err := nbd.ParseSimpleReply(h[:])
	if err != nil {
		t.Fatalf("reply: %v (a structured reply would mean the negotiation asked for one)", err)
	}
	if r.Handle != 0x1234 || r.Error != 0 {
		t.Fatalf("reply %+v", r)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(c, data); err != nil {
		t.Fatal(err)
	}
	return data
}

func TestPeers(t *testing.T) {
	root, ro, data := peerImages(t)
	for _, start := range []func(*testing.T, string, string) peer{startNBDServer, startNbdkit, startQemuNBD, startNbdrootServe} {
		p := start(t, root, ro)
		t.Run(p.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			t.Run("go", func(t *testing.T) {
				c, err := Dial(ctx, p.addr, DialOptions{Export: "root"})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				in := c.Info
				if in.Size != peerImageSize {
					t.Errorf("size %d, want %d", in.Size, peerImageSize)
				}
				if in.Flags&nbd.TransHasFlags == 0 || in.Flags&nbd.TransReadOnly != 0 {
					t.Errorf("flags %v", nbd.FlagNames(in.Flags))
				}
				if got := in.Flags&nbd.TransSendFlush != 0; got != p.flush {
					t.Errorf("SEND_FLUSH = %v, want %v (flags %v)", got, p.flush, nbd.FlagNames(in.Flags))
				}
				if got := in.Flags&nbd.TransCanMultiConn != 0; got != p.multiConn {
					t.Errorf("CAN_MULTI_CONN = %v, want %v", got, p.multiConn)
				}
				if got := in.MinBlock != 0; got != p.blockSizes {
					t.Errorf("block sizes sent = %v (%d/%d/%d), want %v", got, in.MinBlock, in.PrefBlock, in.MaxBlock, p.blockSizes)
				}
				bs, err := BlockSize(in, 0)
				if err != nil || bs != 512 {
					t.Errorf("BlockSize = %d, %v", bs, err)
				}
				off := uint64(3 << 20)
				if got := readBlock(t, c, off, 4096); !bytes.Equal(got, data[off:off+4096]) {
					t.Error("the block read through the negotiated socket differs from the image")
				}
			})
			t.Run("default export", func(t *testing.T) {
				if p.name != "nbdroot serve" {
					t.Skipf("%s has no default export in this setup", p.name)
				}
				c, err := Dial(ctx, p.addr, DialOptions{Export: ""})
				if err != nil {
					t.Fatal(err)
				}
				c.Close()
				if c.Info.Size != peerImageSize {
					t.Errorf("default export size %d", c.Info.Size)
				}
			})
			t.Run("read-only", func(t *testing.T) {
				if p.name == "nbdkit" || p.name == "qemu-nbd" {
					t.Skipf("%s serves one export here", p.name)
				}
				c, err := Dial(ctx, p.addr, DialOptions{Export: "ro"})
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if c.Info.Flags&nbd.TransReadOnly == 0 || c.Info.Size != 1<<20 {
					t.Errorf("ro: size %d flags %v", c.Info.Size, nbd.FlagNames(c.Info.Flags))
				}
			})
			t.Run("unknown export", func(t *testing.T) {
				if !p.strictNames {
					t.Skip("the server accepts any name")
				}
				c, err := Dial(ctx, p.addr, DialOptions{Export: "no-such-export"})
				if err == nil {
					c.Close()
					t.Fatal("an unknown export was negotiated")
				}
				var de *DialError
				if !errors.As(err, &de) || !strings.Contains(err.Error(), `NBD server `+p.addr+`, export "no-such-export"`) {
					t.Errorf("error does not name server, port and export: %v", err)
				}
				t.Logf("%v", err)
			})
			t.Run("list", func(t *testing.T) {
				c, err := net.Dial("tcp", p.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				names, err := List(c)
				if err != nil {
					t.Fatal(err)
				}
				if !contains(names, "root") {
					t.Errorf("list %q has no root", names)
				}
			})
			t.Run("identity", func(t *testing.T) {
				// Servers without nbdroot's extension answer NBD_REP_ERR_UNSUP and are used
				// as before; ours reports the (here: no) overlay. The read-only export where
				// there is one: ours would otherwise see a second writer (an identity is
				// another client than the address the other subtests are keyed by) until it
				// noticed that the last one closed.
				export := "ro"
				if p.name == "nbdkit" || p.name == "qemu-nbd" {
					export = "root"
				}
				conns, err := DialConns(ctx, Dial, p.addr, DialOptions{Export: export, Client: &nbd.ClientOption{ID: "52:54:00:12:34:56"}},
					2, func(s string) { t.Log(s) })
				if err != nil {
					t.Fatal(err)
				}
				defer CloseAll(conns)
				for i, c := range conns {
					if got, want := c.Info.HasOverlay, p.name == "nbdroot serve"; got != want || !c.Info.Overlay.IsZero() {
						t.Errorf("connection %d: overlay reported %v (%s), want %v and none", i, got, c.Info.Overlay, want)
					}
					if got := readBlock(t, c, 4096, 4096); !bytes.Equal(got, data[4096:8192]) {
						t.Errorf("connection %d read other data", i)
					}
				}
			})
			t.Run("multi-conn", func(t *testing.T) {
				conns, err := DialConns(ctx, Dial, p.addr, DialOptions{Export: "root"}, 3, func(s string) { t.Log(s) })
				if err != nil {
					t.Fatal(err)
				}
				defer CloseAll(conns)
				want := 1
				if p.multiConn {
					want = 3
				}
				if len(conns) != want {
					t.Errorf("%d connections, want %d", len(conns), want)
				}
				for i, c := range conns {
					if got := readBlock(t, c, uint64(i)*4096, 4096); !bytes.Equal(got, data[i*4096:(i+1)*4096]) {
						t.Errorf("connection %d read other data", i)
					}
				}
			})
		})
	}
}

func TestPeerBlockSizes(t *testing.T) {
	bin := needTool(t, "nbdkit")
	root, _, _ := peerImages(t)
	port := withPort(t, func(port int) bool {
		return startProc(t, port, bin, "-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
			"--filter=blocksize-policy", "file", root,
			"blocksize-minimum=4096", "blocksize-preferred=65536", "blocksize-maximum=131072", "blocksize-error-policy=error")
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Info.MinBlock != 4096 || c.Info.PrefBlock != 65536 || c.Info.MaxBlock != 131072 {
		t.Fatalf("block sizes %d/%d/%d", c.Info.MinBlock, c.Info.PrefBlock, c.Info.MaxBlock)
	}
	// The device gets the server's minimum as its logical block size, and asking for less
	// than the minimum is refused.
	if bs, err := BlockSize(c.Info, 0); err != nil || bs != 4096 {
		t.Errorf("BlockSize = %d, %v; want 4096", bs, err)
	}
	if _, err := BlockSize(c.Info, 512); err == nil {
		t.Error("a block size below the server's minimum was accepted")
	}
}

func TestPeerPolicy(t *testing.T) {
	root, ro, _ := peerImages(t)
	p := startNbdrootServe(t, root, ro)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// An export the allow-list hides from this client answers as one that does not exist
	// (issue 13: a refusal would leak that it exists).
	_, err := Dial(ctx, p.addr, DialOptions{Export: "lan-only"})
	var oe *nbd.OptionError
	if !errors.As(err, &oe) || oe.Type != nbd.RepErrUnknown {
		t.Errorf("hidden export: err = %v, want an unknown export", err)
	}
	// A policy refusal (here the export's connection limit) is explained.
	first, err := Dial(ctx, p.addr, DialOptions{Export: "one-client"})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	_, err = Dial(ctx, p.addr, DialOptions{Export: "one-client"})
	if !errors.As(err, &oe) || oe.Type != nbd.RepErrPolicy || !strings.Contains(err.Error(), "refuses this client") {
		t.Fatalf("err = %v, want a policy refusal explained", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestPeerCowOverlays attaches to a copy-on-write export of nbdroot serve the way the init
// and the keeper do: the extra connections of a fresh attach resume the first one's overlay,
// writes on one are seen by a reconnect that resumes it, and an overlay that was never
// there is refused as gone (never replaced by a fresh view).
func TestPeerCowOverlays(t *testing.T) {
	root, _, data := peerImages(t)
	srv, err := nbdserver.New(nbdserver.Config{
		Exports:  []nbdserver.Export{{Name: "root", Path: root, Cow: true, Default: true}},
		StateDir: t.TempDir(),
		Logger:   log.New(io.Discard, "", 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(sctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	addr := ln.Addr().String()
	ctx, cancelDial := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancelDial()

	client := &nbd.ClientOption{ID: "52:54:00:12:34:56"}
	conns, err := DialConns(ctx, Dial, addr, DialOptions{Client: client}, 3, func(s string) { t.Log(s) })
	if err != nil {
		t.Fatal(err)
	}
	u := conns[0].Info.Overlay
	if len(conns) != 3 || u.IsZero() {
		t.Fatalf("%d connections, first overlay %s", len(conns), u)
	}
	for i, c := range conns {
		if c.Info.Overlay != u {
			t.Errorf("connection %d has overlay %s, the first %s", i, c.Info.Overlay, u)
		}
	}
	// A write on the second connection, flushed, is what a resumed connection reads.
	block := bytes.Repeat([]byte{0xa5}, 4096)
	writeBlock(t, conns[1], 8192, block)
	CloseAll(conns)
	c, err := Dial(ctx, addr, DialOptions{Client: &nbd.ClientOption{ID: client.ID, Overlay: u}})
	if err != nil {
		t.Fatal(err)
	}
	if c.Info.Overlay != u {
		t.Errorf("resumed overlay %s, want %s", c.Info.Overlay, u)
	}
	if got := readBlock(t, c, 8192, 4096); !bytes.Equal(got, block) {
		t.Error("the resumed overlay lost the write")
	}
	if got := readBlock(t, c, 0, 4096); !bytes.Equal(got, data[:4096]) {
		t.Error("the overlay does not show the image where it was not written")
	}
	c.Close()
	// An overlay this server does not have: refused, as the keeper must see it.
	other := nbd.OverlayID{1, 2, 3}
	l, err := negotiate(ctx, linkSpec{dial: Dial, client: &nbd.ClientOption{ID: client.ID, Overlay: other}, expect: &other}, addr)
	var oe *OverlayError
	if l != nil || !errors.As(err, &oe) || !oe.Gone || oe.Expected != other || stepOf(err) != StepCompatible {
		t.Fatalf("negotiate(gone overlay) = %v, %v; want an *OverlayError (gone)", l, err)
	}
	t.Log(err)
}

// writeBlock sends one NBD_CMD_WRITE with FUA and checks the reply.
func writeBlock(t *testing.T, c *Conn, off uint64, b []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	req := nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdWrite, Flags: nbd.CmdFlagFUA, Handle: 0x4321, Offset: off, Length: uint32(len(b))})
	if _, err := c.Write(append(req, b...)); err != nil {
		t.Fatal(err)
	}
	var h [nbd.SimpleReplySize]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatal(err)
	}
	r, err := nbd.ParseSimpleReply(h[:])
	if err != nil || r.Handle != 0x4321 || r.Error != 0 {
		t.Fatalf("write reply %+v, %v", r, err)
	}
}

// startNBDServerDaemon runs nbd-server with the configuration file cfg as a daemon (nbd-server
// -d serves one client and exits; as a daemon it serves many and writes its pid, which the
// cleanup signals) and reports whether it listens on port.
func startNBDServerDaemon(t *testing.T, bin, cfg, pidfile string, port int) bool {
	t.Helper()
	out, err := exec.Command(bin, "-C", cfg, "-p", pidfile).CombinedOutput()
	if err != nil {
		t.Fatalf("nbd-server: %v\n%s", err, out)
	}
	var pid int
	for i := 0; i < 200 && pid == 0; i++ {
		b, _ := os.ReadFile(pidfile)
		pid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		if pid == 0 {
			time.Sleep(25 * time.Millisecond)
		}
	}
	if pid == 0 {
		return false
	}
	exited := make(chan struct{})
	go func() {
		for syscall.Kill(pid, 0) == nil {
			time.Sleep(50 * time.Millisecond)
		}
		close(exited)
	}()
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGTERM) })
	return waitListening(t, port, exited)
}

// serveInProcess serves srv on a loopback port until the test ends and returns its address.
func serveInProcess(t *testing.T, srv *nbdserver.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx, ln); close(done) }()
	t.Cleanup(func() { cancel(); srv.Close(); <-done })
	return ln.Addr().String()
}
