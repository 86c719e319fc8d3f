package nbdserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// Object exports against the in-memory bucket. The same scenarios run against a real
// store (SeaweedFS) in s3_store_test.go.

const testImageURL = "s3://fleet/images/root.img"

// memStore is a bucket with the test image in it.
func memStore(t testing.TB) *objstore.Mem {
	t.Helper()
	b := objstore.NewMem("fleet")
	if _, err := b.Put(context.Background(), "images/root.img", pattern(0, testSize), objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	return b
}

// cutBucket is how a server sees the store: cut() makes every request fail, as if the
// server had died or lost the network to the store (the store itself goes on).
type cutBucket struct {
	objstore.Bucket
	isCut atomic.Bool
}

var errCut = errors.New("connection refused (test: cut off from the store)")

func (c *cutBucket) cut()  { c.isCut.Store(true) }
func (c *cutBucket) heal() { c.isCut.Store(false) }
func (c *cutBucket) check(op, key string) error {
	if c.isCut.Load() {
		return &objstore.OpError{Op: op, URL: objstore.URL{Bucket: c.Name(), Key: key}, Err: errCut}
	}
	return nil
}
func (c *cutBucket) Get(ctx context.Context, key string) ([]byte, objstore.Attrs, error) {
	if err := c.check("get", key); err != nil {
		return nil, objstore.Attrs{}, err
	}
	return c.Bucket.Get(ctx, key)
}
func (c *cutBucket) ReadRange(ctx context.Context, key string, p []byte, off int64, ifMatch string) (int, error) {
	if err := c.check("get", key); err != nil {
		return 0, err
	}
	return c.Bucket.ReadRange(ctx, key, p, off, ifMatch)
}
func (c *cutBucket) Head(ctx context.Context, key string) (objstore.Attrs, error) {
	if err := c.check("head", key); err != nil {
		return objstore.Attrs{}, err
	}
	return c.Bucket.Head(ctx, key)
}
func (c *cutBucket) Put(ctx context.Context, key string, data []byte, cond objstore.Cond) (string, error) {
	if err := c.check("put", key); err != nil {
		return "", err
	}
	return c.Bucket.Put(ctx, key, data, cond)
}
func (c *cutBucket) Delete(ctx context.Context, key, ifMatch string) error {
	if err := c.check("delete", key); err != nil {
		return err
	}
	return c.Bucket.Delete(ctx, key, ifMatch)
}
func (c *cutBucket) List(ctx context.Context, prefix string, fn func(objstore.Object) error) error {
	if err := c.check("list", prefix); err != nil {
		return err
	}
	return c.Bucket.List(ctx, prefix, fn)
}

// objectServer starts a server whose store is b, seen through a cutBucket.
func objectServer(t *testing.T, b objstore.Bucket, ttl time.Duration, opts ...func(*Export)) (*testServer, *cutBucket) {
	t.Helper()
	cb := &cutBucket{Bucket: b}
	e := Export{Name: "root", Path: testImageURL}
	for _, o := range opts {
		o(&e)
	}
	s := startServer(t, Config{Exports: []Export{e},
		Store: StoreConfig{LeaseTTL: ttl, Bucket: func(string) objstore.Bucket { return cb }}})
	return s, cb
}

func TestObjectExportRead(t *testing.T) {
	b := memStore(t)
	s, _ := objectServer(t, b, 0, func(e *Export) { e.ReadOnly = true })
	c := connectTest(t, s.addr, "root", true)
	if c.info.Size != testSize {
		t.Fatalf("size %d, want %d", c.info.Size, testSize)
	}
	for _, r := range []struct{ off, n int }{{0, 4096}, {100, 1}, {300 << 10, 200 << 10}, {testSize - 4096, 4096}, {1 << 20, 1 << 20}} {
		if got := c.pread(uint64(r.off), uint32(r.n)); !bytes.Equal(got, pattern(r.off, r.n)) {
			t.Errorf("read %d+%d differs from the object", r.off, r.n)
		}
	}
	gets := b.Count("get")
	c.pread(0, 4096)
	c.pread(300<<10, 100<<10)
	if b.Count("get") != gets {
		t.Errorf("re-reads went to the store (%d GETs)", b.Count("get")-gets)
	}
	if st := s.CacheStats(); st.Hits == 0 || st.Misses == 0 {
		t.Errorf("cache stats %+v", st)
	}
	rec := httptest.NewRecorder()
	s.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`nbdroot_store_cache_lookups_total{result="hit"}`, "nbdroot_store_fetched_bytes_total", `nbdroot_store_cache_bytes{what="max"} 5.36870912e+08`} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if rp := c.do(nbd.CmdWrite, 0, 0, 4, []byte("nope")); rp.Errno != nbd.EPERM {
		t.Errorf("write to a read-only object export: %v", nbd.Errno(rp.Errno))
	}
}

// A cow client of server A flushes and A dies; server B (same store) serves the client's
// overlay when it resumes it, after the lease of the dead server has run out.
func TestObjectCowFailover(t *testing.T) {
	b := memStore(t)
	const ttl = 3 * time.Second
	a, acut := objectServer(t, b, ttl, func(e *Export) { e.Cow = true })
	bsrv, _ := objectServer(t, b, ttl, func(e *Export) { e.Cow = true })

	ca, u := mustGoAs(t, a.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	ca.pwrite(8192, []byte("flushed on A"), 0)
	ca.pwrite(3<<20, fill(200<<10, 'x'), 0)
	flush(t, ca)
	ca.pwrite(16384, []byte("unflushed"), 0)
	// A is cut off from the store; the client gives up on A and turns to B (a partition:
	// A and its connection to the client live on).
	acut.cut()

	// B refuses while A's lease may still be valid, naming the holder...
	_, _, err := goAs(t, bsrv.addr, "127.0.0.1", "root", "pc1", u)
	wantRefusal(t, err, nbd.RepErrPolicy, "held by server")
	// ...and serves the overlay once the lease went unrenewed for its TTL.
	var cb *testClient
	deadline := time.Now().Add(10 * ttl)
	for {
		var info nbd.ExportInfo
		cb, info, err = goAs(t, bsrv.addr, "127.0.0.1", "root", "pc1", u)
		if err == nil {
			if info.Overlay != u {
				t.Fatalf("B served overlay %s, want %s", info.Overlay, u)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B never took over: %v", err)
		}
		cb.nc.Close() // a refused connection still holds one of pc1's connection slots
		time.Sleep(100 * time.Millisecond)
	}
	if d := cb.pread(8192, 12); string(d) != "flushed on A" {
		t.Errorf("B reads %q where A flushed", d)
	}
	if d := cb.pread(3<<20, 200<<10); !bytes.Equal(d, fill(200<<10, 'x')) {
		t.Errorf("B lost the flushed 200 KiB write")
	}
	if d := cb.pread(0, 8192); !bytes.Equal(d, pattern(0, 8192)) {
		t.Errorf("B reads changed image blocks")
	}
	cb.pwrite(8192, []byte("written on B"), nbd.CmdFlagFUA)

	// A's network heals: its next renewal finds the lease taken over, and it fails what its
	// old connection still sends (EIO) instead of writing beside B.
	acut.heal()
	waitFor(t, "A to notice its lost lease", func() bool { return strings.Contains(a.logs.String(), "taken over by another server") })
	if rp := ca.do(nbd.CmdWrite, 0, 8192, 5, []byte("stale")); rp.Errno != nbd.EIO {
		t.Errorf("write to A after it lost the lease: %v, want EIO", nbd.Errno(rp.Errno))
	}
	if rp := ca.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != nbd.EIO {
		t.Errorf("FLUSH on A after it lost the lease: %v, want EIO", nbd.Errno(rp.Errno))
	}
	if d := cb.pread(8192, 12); string(d) != "written on B" {
		t.Errorf("after A came back, B reads %q", d)
	}
}

// A server cut off from the store stops acknowledging writes once its lease may have run
// out (EIO), and acknowledges them again when the store answers and nobody took over.
func TestObjectLeaseLapse(t *testing.T) {
	b := memStore(t)
	const ttl = 2 * time.Second
	a, acut := objectServer(t, b, ttl, func(e *Export) { e.Cow = true })
	c, _ := mustGoAs(t, a.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pwrite(0, []byte("before"), 0)
	flush(t, c)
	acut.cut()
	time.Sleep(ttl + ttl/5)
	if rp := c.do(nbd.CmdWrite, 0, 4096, 5, []byte("lapse")); rp.Errno != nbd.EIO {
		t.Errorf("write with a lapsed lease: %v, want EIO", nbd.Errno(rp.Errno))
	}
	if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != nbd.EIO {
		t.Errorf("FLUSH with a lapsed lease: %v, want EIO", nbd.Errno(rp.Errno))
	}
	acut.heal()
	waitFor(t, "the lease renewed", func() bool {
		return c.do(nbd.CmdWrite, 0, 4096, 5, []byte("again")).Errno == 0
	})
	flush(t, c)
	if d := c.pread(0, 6); string(d) != "before" {
		t.Errorf("reads %q", d)
	}
}

// A read-write export of an object: one writer at a time across servers, its writes in
// the store beside the image; the image object itself never changes.
func TestObjectWritesOneWriter(t *testing.T) {
	b := memStore(t)
	const ttl = 3 * time.Second
	a, _ := objectServer(t, b, ttl)
	bsrv, _ := objectServer(t, b, ttl)
	w := connectFrom(t, a.addr, "127.0.0.1", "root", false)
	w.pwrite(4096, []byte("written via A"), 0)
	flush(t, w)
	if w.info.Overlay != (nbd.OverlayID{}) {
		t.Errorf("a read-write export reports overlay %s", w.info.Overlay)
	}
	_, _, err := goFrom(t, bsrv.addr, "127.0.0.2", "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write through another server")
	w.disconnect()
	// A released the lease at the disconnect: B takes the writer at once.
	var w2 *testClient
	waitFor(t, "B to accept the writer", func() bool {
		c, _, err := goFrom(t, bsrv.addr, "127.0.0.2", "root")
		if err != nil {
			c.nc.Close() // refused: give its connection slot back
			return false
		}
		w2 = c
		return true
	})
	if d := w2.pread(4096, 13); string(d) != "written via A" {
		t.Errorf("B reads %q", d)
	}
	img, _, err := b.Get(context.Background(), "images/root.img")
	if err != nil || !bytes.Equal(img, pattern(0, testSize)) {
		t.Errorf("the image object changed (%v)", err)
	}
	if keys := b.Keys("images/root.img.nbdroot/writes/"); len(keys) != 3 {
		t.Errorf("writes overlay objects: %q", keys)
	}
}

// Overlays of an object export are listed, and removed, through the store.
func TestObjectOverlayAdmin(t *testing.T) {
	b := memStore(t)
	s, _ := objectServer(t, b, time.Second, func(e *Export) { e.Cow = true })
	c, u := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pwrite(0, []byte("x"), nbd.CmdFlagFUA)
	list, err := s.Admin().List(context.Background())
	if err != nil || len(list) != 1 || list[0].ID != u || !list[0].Attached || !strings.HasPrefix(list[0].Dir, "s3://fleet/images/root.img.nbdroot/overlays/root/id-pc1/") {
		t.Fatalf("list: %+v %v", list, err)
	}
	if err := s.Admin().Remove(context.Background(), u, true); err != nil {
		t.Fatal(err)
	}
	if keys := b.Keys("images/root.img.nbdroot/"); len(keys) != 0 {
		t.Errorf("left behind: %q", keys)
	}
	_, _, err = goAs(t, s.addr, "127.0.0.1", "root", "pc1", u)
	wantRefusal(t, err, nbd.RepErrNbdrootOverlayGone, u.String())
	_ = ovstore.Writes
}

// A store that ignores conditional writes cannot hold leases: writable exports of it are
// refused at start with a message saying why; read-only ones work.
func TestObjectStoreWithoutConditionalWrites(t *testing.T) {
	b := memStore(t)
	b.IgnoreConditions = true
	store := StoreConfig{Bucket: func(string) objstore.Bucket { return b }}
	for _, opt := range []string{"", "cow"} {
		spec := "root=" + testImageURL
		if opt != "" {
			spec += "," + opt
		}
		e, err := ParseExport(spec)
		if err != nil {
			t.Fatal(err)
		}
		_, err = New(Config{Exports: []Export{e}, StateDir: t.TempDir(), Store: store})
		if !errors.Is(err, objstore.ErrNoConditionalWrites) || !strings.Contains(err.Error(), `export "root"`) {
			t.Errorf("%q: %v, want a refusal naming the export and ErrNoConditionalWrites", opt, err)
		}
	}
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: testImageURL, ReadOnly: true}}, Store: store})
	c := connectTest(t, s.addr, "root", false)
	if got := c.pread(0, 4096); !bytes.Equal(got, pattern(0, 4096)) {
		t.Error("read-only export of such a store")
	}
}

// nbd-server's INI form takes s3:// in exportname and cowdir.
func TestObjectExportINI(t *testing.T) {
	sf, err := ParseServerFile(strings.NewReader("[generic]\n[root]\nexportname = s3://fleet/images/root.img\ncopyonwrite = true\ncowdir = s3://fleet/overlays\ncowpersistent = true\n"), "test.conf", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := sf.Exports[0]
	if e.Path != testImageURL || !e.Cow || e.CowDir != "s3://fleet/overlays" || !e.CowPersistent {
		t.Fatalf("export %+v", e)
	}
	b := memStore(t)
	s := startServer(t, Config{Exports: sf.Exports, Store: StoreConfig{Bucket: func(string) objstore.Bucket { return b }}})
	c, u := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pwrite(0, []byte("kept"), nbd.CmdFlagFUA)
	if keys := b.Keys("overlays/overlays/root/id-pc1/" + u.String()); len(keys) != 3 {
		t.Errorf("overlay objects: %q", keys)
	}
}

// A FLUSH with nothing new to flush sends nothing to the store (file systems flush often).
func TestObjectIdleFlush(t *testing.T) {
	b := memStore(t)
	s, _ := objectServer(t, b, 0, func(e *Export) { e.Cow = true })
	c, _ := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pwrite(0, []byte("x"), 0)
	flush(t, c)
	puts := b.Count("put")
	for range 5 {
		flush(t, c)
	}
	c.pread(0, 4096)
	flush(t, c)
	if n := b.Count("put") - puts; n > 1 { // a lease renewal may fall in between
		t.Errorf("idle FLUSHes sent %d PUTs", n)
	}
}

// A writable export of an object makes the state directory at the start (its overlays are
// staged there, and the control socket in it lists the store's overlays); a read-only one
// leaves no trace.
func TestObjectExportStateDir(t *testing.T) {
	b := memStore(t)
	for _, tc := range []struct {
		name string
		e    Export
		want bool
	}{
		{"cow", Export{Name: "root", Path: testImageURL, Cow: true}, true},
		{"read-write", Export{Name: "root", Path: testImageURL}, true},
		{"readonly", Export{Name: "root", Path: testImageURL, ReadOnly: true}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			s, err := New(Config{Exports: []Export{tc.e}, StateDir: state,
				Store: StoreConfig{Bucket: func(string) objstore.Bucket { return b }}})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if _, err := os.Stat(state); (err == nil) != tc.want {
				t.Errorf("state directory after New: %v, want it made: %v", err, tc.want)
			}
		})
	}
}

// An object export whose image object is missing, or whose store cannot be reached at the
// start, is skipped as a missing image file is (Run logs each skipped export): the others
// are served; with strict nothing starts, nor without an export left. A store that cannot
// even be configured is no fact about one export and refuses the start.
func TestSkipBrokenObjectExports(t *testing.T) {
	file := makeImage(t, testSize)
	const missing = "s3://fleet/images/missing.img"
	down := errors.New("connection refused (test: the store is down)")
	for _, tt := range []struct {
		name    string
		exports []string
		down    bool   // every request to the store fails
		creds   string // a credentials file instead of the in-memory bucket
		strict  bool
		kept    []string
		skipped []string // names of skipped exports, in order
		wantErr string   // an error instead
		isErr   error
	}{
		{name: "missing object", exports: []string{"gone=" + missing, "root=" + testImageURL + ",cow", "file=" + file},
			kept: []string{"root", "file"}, skipped: []string{"gone"}, isErr: objstore.ErrNotFound},
		{name: "store down", exports: []string{"gone=" + missing, "root=" + testImageURL, "file=" + file}, down: true,
			kept: []string{"file"}, skipped: []string{"gone", "root"}, isErr: down},
		{name: "strict", exports: []string{"root=" + testImageURL, "gone=" + missing, "file=" + file}, strict: true,
			wantErr: `export "gone": image: head ` + missing + ": no such object (--strict)", isErr: objstore.ErrNotFound},
		{name: "nothing left", exports: []string{"gone=" + missing}, wantErr: "no export can be served", isErr: objstore.ErrNotFound},
		{name: "store down, nothing left", exports: []string{"root=" + testImageURL}, down: true, wantErr: "no export can be served", isErr: down},
		{name: "store not configurable", exports: []string{"root=" + testImageURL, "file=" + file},
			creds: filepath.Join(t.TempDir(), "no-such-credentials"), wantErr: `export "root": credentials file: `, isErr: os.ErrNotExist},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := memStore(t)
			if tt.down {
				b.Fail = func(op, key string) error { return down }
			}
			p := &Plan{}
			for _, spec := range tt.exports {
				e, err := ParseExport(spec)
				if err != nil {
					t.Fatal(err)
				}
				p.Config.Exports = append(p.Config.Exports, e)
			}
			p.Config.Store = StoreConfig{Bucket: func(string) objstore.Bucket { return b }}
			if tt.creds != "" {
				p.Config.Store = StoreConfig{Config: objstore.Config{CredentialsFile: tt.creds, Endpoint: "http://127.0.0.1:1"}}
			}
			skipped, err := p.skipBroken(tt.strict)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, tt.isErr) {
					t.Fatalf("skipBroken: %v; want an error containing %q, and %v", err, tt.wantErr, tt.isErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names, kept []string
			for _, err := range skipped {
				var se *SkippedError
				if !errors.As(err, &se) || !errors.Is(err, tt.isErr) {
					t.Errorf("skipped: %v; want a *SkippedError and %v", err, tt.isErr)
					continue
				}
				names = append(names, se.Export)
			}
			for _, e := range p.Config.Exports {
				kept = append(kept, e.Name)
			}
			if fmt.Sprint(names) != fmt.Sprint(tt.skipped) || fmt.Sprint(kept) != fmt.Sprint(tt.kept) {
				t.Fatalf("skipped %v, kept %v; want skipped %v, kept %v", names, kept, tt.skipped, tt.kept)
			}
			if !strings.Contains(skipped[0].Error(), `export "gone": image: head `+missing+": ") {
				t.Errorf("skipped: %q; want the export and the object named", skipped[0])
			}
			// What is left starts and serves (the store is back for it, if it was down).
			b.Fail = nil
			s := startServer(t, p.Config)
			for _, name := range tt.kept {
				c := connectTest(t, s.addr, name, false)
				if got := c.pread(0, 4096); !bytes.Equal(got, pattern(0, 4096)) {
					t.Errorf("export %q beside the skipped ones serves wrong data", name)
				}
				c.disconnect()
			}
		})
	}
}

// nbdroot serve with an s3:// export on a store that does not answer (nothing listens at
// the endpoint) logs the export and the object, skips it and serves the file beside it.
func TestRunUnreachableStore(t *testing.T) {
	dir := t.TempDir()
	img := makeImage(t, testSize)
	creds := filepath.Join(dir, "credentials")
	if err := os.WriteFile(creds, []byte("[default]\naws_access_key_id = test\naws_secret_access_key = test\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	endpoint := "http://" + ln.Addr().String()
	ln.Close() // a port nothing listens on: connections are refused
	o := Options{Exports: []string{"store=" + testImageURL, "root=" + img}, Listen: []string{"127.0.0.1:0"}, StateDir: dir,
		S3Endpoint: endpoint, S3Region: "us-east-1", S3CredentialsFile: creds}
	var stderr syncBuffer
	o.Log = &stderr
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	reload := make(chan struct{})
	go func() { done <- Run(ctx, o, reload) }()
	var addr string
	waitFor(t, "the listening line", func() bool {
		_, a, ok := strings.Cut(stderr.String(), "listening on ")
		addr, _, _ = strings.Cut(a, "\n")
		return ok && strings.HasSuffix(a, "\n")
	})
	c := connectTest(t, addr, "root", false)
	if got := c.pread(0, 16); !bytes.Equal(got, pattern(0, 16)) {
		t.Error("the export beside the skipped one serves wrong data")
	}
	c.disconnect()
	// A reload while the store does not answer keeps the configuration being served: an
	// outage must not take exports away (here none was served from the store; the
	// decision is the same).
	reload <- struct{}{}
	waitFor(t, "the reload's outcome", func() bool {
		return strings.Contains(stderr.String(), "reload failed") || strings.Contains(stderr.String(), "configuration reloaded")
	})
	if log := stderr.String(); !strings.Contains(log, `reload failed, keeping the current configuration: export "store": image: head `+testImageURL) {
		t.Errorf("reload with the store down:\n%s", log)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if log := stderr.String(); !strings.Contains(log, `export "store": image: head `+testImageURL+": ") || !strings.Contains(log, "skipped, serving the others") {
		t.Errorf("log does not name the skipped export and its object:\n%s", log)
	}

	o.Strict, o.Log = true, io.Discard
	if err := Run(context.Background(), o, nil); err == nil || !strings.Contains(err.Error(), `export "store": image: head `+testImageURL) || !strings.Contains(err.Error(), "--strict") {
		t.Errorf("Run --strict: %v; want a refusal naming the export and its object", err)
	}
}

// The image objects are looked up at once: with a store that does not answer, the start
// waits for one lookup's timeout, not one per export. Here each HEAD waits until every
// export's HEAD has arrived, which lookups one after another never get to.
func TestSkipBrokenLooksUpObjectsAtOnce(t *testing.T) {
	b := memStore(t)
	const n = 4
	var arrived sync.WaitGroup
	arrived.Add(n)
	all := make(chan struct{})
	go func() { arrived.Wait(); close(all) }()
	b.Fail = func(op, key string) error {
		if op != "head" {
			return nil
		}
		arrived.Done()
		select {
		case <-all:
			return nil
		case <-time.After(5 * time.Second):
			return errors.New("the other lookups did not come")
		}
	}
	p := &Plan{}
	for i := range n {
		p.Config.Exports = append(p.Config.Exports, Export{Name: fmt.Sprintf("root%d", i), Path: testImageURL, ReadOnly: true})
	}
	p.Config.Store = StoreConfig{Bucket: func(string) objstore.Bucket { return b }}
	skipped, err := p.skipBroken(false)
	if err != nil || len(skipped) != 0 || len(p.Config.Exports) != n {
		t.Fatalf("skipBroken: %v, skipped %v, kept %d of %d", err, skipped, len(p.Config.Exports), n)
	}
}
