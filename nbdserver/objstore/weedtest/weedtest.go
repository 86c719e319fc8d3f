// Package weedtest starts a real S3-compatible store for tests: SeaweedFS (`weed server
// -s3`, Apache-2.0), built by `scripts/deps.sh weed` into the cache. The store listens on
// loopback only, on free ports, keeps its data in a temporary directory, sends no
// telemetry, and knows one S3 identity whose keys the tests sign with.
//
// Tests skip when the binary is missing, unless NBDROOT_REQUIRE_PEERS=1 (as `make test`
// sets), in which case that is a failure.
package weedtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
)

// Version is the SeaweedFS pseudo-version scripts/deps.sh builds
// (github.com/seaweedfs/seaweedfs@v0.0.0-Version-…).
const Version = "20261109003541"

// Binary finds the weed binary: $NBDROOT_WEED, else
// ${NBDROOT_CACHE:-~/.cache/nbdroot}/bin/weed-Version.
func Binary() (string, error) {
	if p := os.Getenv("NBDROOT_WEED"); p != "" {
		return p, nil
	}
	cache := os.Getenv("NBDROOT_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "nbdroot")
	}
	p := filepath.Join(cache, "bin", "weed-"+Version)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("SeaweedFS not built (%w): run `scripts/deps.sh weed`", err)
	}
	return p, nil
}

// Keys of the store's one identity.
const (
	AccessKey = "nbdroot-test"
	SecretKey = "nbdroot-test-secret-key"
)

// Weed is a running SeaweedFS.
type Weed struct {
	// Endpoint is the S3 API's URL.
	Endpoint string
	// CredentialsFile is an AWS shared credentials file holding the keys ([default]).
	CredentialsFile string
	// Dir holds the store's data.
	Dir string

	bin  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  *bytes.Buffer
}

// Start starts a store for t, stopped when t ends.
func Start(t testing.TB) *Weed {
	t.Helper()
	bin := binary(t)
	w, err := start(bin, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		w.Kill()
		if t.Failed() {
			t.Logf("weed log (tail):\n%s", w.Log(4000))
		}
	})
	return w
}

func binary(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("%v (NBDROOT_REQUIRE_PEERS=1)", err)
		}
		t.Skip(err)
	}
	return bin
}

var shared struct {
	once sync.Once
	w    *Weed
	dir  string
	err  error
}

// Shared returns one store for every test of the test binary (a start takes seconds);
// tests keep apart by using buckets of their own (NewBucket). TestMain calls StopShared.
func Shared(t testing.TB) *Weed {
	t.Helper()
	bin := binary(t)
	shared.once.Do(func() {
		shared.dir, shared.err = os.MkdirTemp("", "weedtest-")
		if shared.err == nil {
			shared.w, shared.err = start(bin, shared.dir)
		}
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("weed log (tail):\n%s", shared.w.Log(4000))
		}
	})
	return shared.w
}

// StopShared stops the shared store, if one was started, and removes its data.
func StopShared() {
	if shared.w != nil {
		shared.w.Kill()
	}
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
}

// Log returns the last n bytes of the store's output.
func (w *Weed) Log(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return string(tail(w.log.Bytes(), n))
}

var bucketSeq atomic.Int64

// NewBucket creates a bucket of a name no other test of this process uses.
func (w *Weed) NewBucket(t testing.TB) objstore.Bucket {
	t.Helper()
	return w.Bucket(t, fmt.Sprintf("t%d-%d", os.Getpid(), bucketSeq.Add(1)))
}

// Launch starts a store whose files live under dir, for programs that are not tests (the
// benchmarks); Kill stops it.
func Launch(dir string) (*Weed, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return start(bin, dir)
}

// CreateBucket creates a bucket and returns it.
func (w *Weed) CreateBucket(name string) (objstore.Bucket, error) {
	st, err := w.connect()
	if err != nil {
		return nil, err
	}
	if err := st.CreateBucket(context.Background(), name); err != nil {
		return nil, err
	}
	return st.Bucket(name), nil
}

func start(bin, dir string) (*Weed, error) {
	ports, err := freePorts(8)
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`{"identities":[{"name":"nbdroot","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","Write","List","Tagging"]}]}`, AccessKey, SecretKey)
	s3cfg := filepath.Join(dir, "s3.json")
	creds := filepath.Join(dir, "credentials")
	if err := os.WriteFile(s3cfg, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(creds, []byte(fmt.Sprintf("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n", AccessKey, SecretKey)), 0o600); err != nil {
		return nil, err
	}
	// weed reads master.toml from its working directory: grow one volume at a time (the
	// default, 7 for unreplicated data, costs seconds at the first write of each bucket).
	if err := os.WriteFile(filepath.Join(dir, "master.toml"), []byte("[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n"), 0o600); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		return nil, err
	}
	p := func(i int) string { return strconv.Itoa(ports[i]) }
	w := &Weed{
		Endpoint:        "http://127.0.0.1:" + p(6),
		CredentialsFile: creds,
		Dir:             data,
		bin:             bin,
		args: []string{"server",
			"-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-dir=" + data,
			"-master.port=" + p(0), "-master.port.grpc=" + p(1), "-master.telemetry=false",
			// One master: it leads at once instead of waiting for peers to bootstrap a cluster.
			"-master.peers=none",
			"-master.volumeSizeLimitMB=256", "-volume.max=64",
			"-volume.port=" + p(2), "-volume.port.grpc=" + p(3),
			"-filer", "-filer.port=" + p(4), "-filer.port.grpc=" + p(5), "-filer.localSocket=" + filepath.Join(dir, "filer.sock"),
			"-s3", "-s3.port=" + p(6), "-s3.port.grpc=" + p(7), "-s3.config=" + s3cfg,
			"-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.localSocket=" + filepath.Join(dir, "s3.sock"),
		},
	}
	if err := w.start(); err != nil {
		return nil, err
	}
	if err := w.waitReady(90 * time.Second); err != nil {
		w.Kill()
		return nil, fmt.Errorf("%w\nweed log (tail):\n%s", err, w.Log(4000))
	}
	return w, nil
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// lockedWriter serialises the process's writes into the log buffer.
type lockedWriter struct{ w *Weed }

func (l lockedWriter) Write(p []byte) (int, error) {
	l.w.mu.Lock()
	defer l.w.mu.Unlock()
	return l.w.log.Write(p)
}

func (w *Weed) start() error {
	cmd := exec.Command(w.bin, w.args...)
	if w.log == nil {
		w.log = &bytes.Buffer{}
	}
	cmd.Stdout, cmd.Stderr = lockedWriter{w}, lockedWriter{w}
	cmd.Dir = filepath.Dir(w.Dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	w.mu.Lock()
	w.cmd, w.done = cmd, done
	w.mu.Unlock()
	return nil
}

// waitReady waits until the S3 API stores an object. Object writes take a lock in the
// filers' lock ring, which forms some seconds after the start; until then writes wait.
func (w *Weed) waitReady(limit time.Duration) error {
	st, err := w.connect()
	if err != nil {
		return err
	}
	deadline := time.Now().Add(limit)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := st.CreateBucket(ctx, "nbdroot-ready")
		if err == nil || errors.Is(err, objstore.ErrPrecondition) || strings.Contains(err.Error(), "BucketAlready") {
			_, err = st.Bucket("nbdroot-ready").Put(ctx, "ready", []byte("ok"), objstore.Cond{})
		}
		cancel()
		if err == nil {
			return nil
		}
		w.mu.Lock()
		done := w.done
		w.mu.Unlock()
		select {
		case <-done:
			return fmt.Errorf("weed exited before it was ready")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("weed's S3 API did not store an object within %v: %v", limit, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

func (w *Weed) connect() (*objstore.Store, error) {
	return objstore.Connect(context.Background(), w.Config())
}

// Config is how a server reaches the store.
func (w *Weed) Config() objstore.Config {
	return objstore.Config{Endpoint: w.Endpoint, Region: "us-east-1", CredentialsFile: w.CredentialsFile, Timeout: 20 * time.Second}
}

// Env is the environment that points AWS tools (and `nbdroot serve`) at the store.
func (w *Weed) Env() []string {
	return []string{"AWS_ENDPOINT_URL=" + w.Endpoint, "AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=" + AccessKey, "AWS_SECRET_ACCESS_KEY=" + SecretKey, "AWS_EC2_METADATA_DISABLED=true"}
}

// Bucket creates a bucket and returns it.
func (w *Weed) Bucket(t testing.TB, name string) objstore.Bucket {
	t.Helper()
	b, err := w.CreateBucket(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Kill stops the store at once (SIGKILL), as a crash or a pulled cable would.
func (w *Weed) Kill() {
	w.mu.Lock()
	cmd, done := w.cmd, w.done
	w.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. weed needs explicit ports (its
// gRPC ports default to the HTTP port + 10000, which may not exist); the ports are free
// when returned, which leaves a small window in which another process could take one.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

// Gate is a TCP relay in front of a store's S3 API that a test closes and opens again:
// what a server sees of a store that goes down (connections reset, new ones refused) and
// comes back, without the seconds a store takes to start again. The store behind it keeps
// its data either way.
type Gate struct {
	// Endpoint is the S3 API's URL through the gate.
	Endpoint string

	w      *Weed
	addr   string // the gate's address, kept across Close and Open
	target string // the store's host:port

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]bool
	wg    sync.WaitGroup
}

// Gate opens a gate in front of w for t, closed when t ends.
func (w *Weed) Gate(t testing.TB) *Gate {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &Gate{w: w, addr: ln.Addr().String(), target: strings.TrimPrefix(w.Endpoint, "http://"), conns: map[net.Conn]bool{}}
	g.Endpoint = "http://" + g.addr
	g.serve(ln)
	t.Cleanup(g.Close)
	return g
}

// Config is how a server reaches the store through the gate.
func (g *Gate) Config() objstore.Config {
	c := g.w.Config()
	c.Endpoint = g.Endpoint
	return c
}

// Close takes the store away: the gate stops listening (new connections are refused) and
// resets every connection through it.
func (g *Gate) Close() {
	g.mu.Lock()
	if g.ln != nil {
		g.ln.Close()
		g.ln = nil
	}
	for c := range g.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset, as from a host whose store process died
		}
		c.Close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// Open brings the store back on the same address.
func (g *Gate) Open(t testing.TB) {
	t.Helper()
	ln, err := net.Listen("tcp", g.addr)
	if err != nil {
		t.Fatal(err)
	}
	g.serve(ln)
}

func (g *Gate) serve(ln net.Listener) {
	g.mu.Lock()
	g.ln = ln
	g.mu.Unlock()
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			g.wg.Add(1)
			go func() {
				defer g.wg.Done()
				g.relay(c)
			}()
		}
	}()
}

// relay copies between a client and the store until either side closes or Close resets
// both.
func (g *Gate) relay(c net.Conn) {
	s, err := net.Dial("tcp", g.target)
	if err != nil {
		c.Close()
		return
	}
	g.mu.Lock()
	if g.ln == nil { // closed meanwhile
		g.mu.Unlock()
		c.Close()
		s.Close()
		return
	}
	g.conns[c], g.conns[s] = true, true
	g.mu.Unlock()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go pipe(s, c)
	go pipe(c, s)
	<-done
	<-done
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, s)
	g.mu.Unlock()
}
