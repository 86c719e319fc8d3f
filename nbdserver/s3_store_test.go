package nbdserver

import (
	"bytes"
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	"github.com/nbdroot/nbdroot/nbdserver/objstore/weedtest"
)

// Object exports against a real store: SeaweedFS started by the test (weedtest), servers
// as separate processes where a test kills one.

const storeImageSize = 16 << 20

// storeImage uploads the test pattern as an image to a new bucket and returns its URL.
func storeImage(t *testing.T, w *weedtest.Weed) (objstore.Bucket, string) {
	t.Helper()
	b := w.NewBucket(t)
	if _, err := b.Put(context.Background(), "images/root.img", pattern(0, storeImageSize), objstore.Cond{}); err != nil {
		t.Fatal(err)
	}
	return b, "s3://" + b.Name() + "/images/root.img"
}

// storeProc starts `nbdroot serve` as a process on the store.
func storeProc(t *testing.T, w *weedtest.Weed, ttl time.Duration, exports ...string) *proc {
	t.Helper()
	return startProc(t, Options{Listen: []string{"127.0.0.1:0"}, Exports: exports,
		S3Endpoint: w.Endpoint, S3Region: "us-east-1", S3CredentialsFile: w.CredentialsFile, S3LeaseTTL: ttl})
}

// retryGo runs GO until it succeeds or limit passes, returning the last refusal.
func retryGo(t *testing.T, limit time.Duration, try func() (*testClient, error)) (*testClient, error) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		c, err := try()
		if err == nil || time.Now().After(deadline) {
			return c, err
		}
		if c != nil {
			// A refused connection still takes one of the client's connection slots
			// (DefaultMaxClientConnections) until it is closed.
			c.nc.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Server A is killed (SIGKILL) after a FLUSH; server B, on the same store, serves the
// client's overlay when the client resumes it there, with every flushed byte.
func TestStoreFailoverSIGKILL(t *testing.T) {
	w := weedtest.Shared(t)
	_, url := storeImage(t, w)
	// Long enough that a loaded machine's scheduling cannot lapse a live holder's lease.
	const ttl = 5 * time.Second
	a := storeProc(t, w, ttl, "root="+url+",cow")
	b := storeProc(t, w, ttl, "root="+url+",cow")

	ca, u := mustGoAs(t, a.addr, "127.0.0.1", "root", "52:54:00:12:34:56", nbd.OverlayID{})
	ca.pwrite(4096, []byte("flushed before the kill"), 0)
	big := bytes.Repeat([]byte("0123456789abcdef"), (1<<20)/16)
	ca.pwrite(5<<20+512, big, 0)
	flush(t, ca)
	ca.pwrite(64<<10, []byte("maybe lost"), 0)
	a.cmd.Process.Kill()
	a.wait(t)
	killed := time.Now()

	var info nbd.ExportInfo
	cb, err := retryGo(t, 5*ttl, func() (*testClient, error) {
		c, i, err := goAs(t, b.addr, "127.0.0.1", "root", "52:54:00:12:34:56", u)
		info = i
		return c, err
	})
	if err != nil {
		t.Fatalf("B never served the overlay: %v", err)
	}
	t.Logf("B took over %v after the kill", time.Since(killed).Round(10*time.Millisecond))
	if info.Overlay != u {
		t.Fatalf("B served overlay %s, want %s", info.Overlay, u)
	}
	if got := cb.pread(4096, 23); string(got) != "flushed before the kill" {
		t.Errorf("B reads %q", got)
	}
	if got := cb.pread(5<<20+512, 1<<20); !bytes.Equal(got, big) {
		t.Errorf("B lost the flushed 1 MiB write")
	}
	if got := cb.pread(0, 4096); !bytes.Equal(got, pattern(0, 4096)) {
		t.Errorf("B reads changed image data")
	}
	if !strings.Contains(b.stderr.String(), "held by server") {
		t.Errorf("B did not log that A held the overlay while its lease ran:\n%s", b.stderr)
	}
	// B writes on; a fresh server C finds B's flushed writes after B shuts down cleanly.
	cb.pwrite(4096, []byte("written through B"), nbd.CmdFlagFUA)
	cb.disconnect()
	b.cmd.Process.Signal(syscall.SIGTERM)
	b.wait(t)
	c := storeProc(t, w, ttl, "root="+url+",cow")
	cc, _ := mustGoAs(t, c.addr, "127.0.0.1", "root", "52:54:00:12:34:56", u)
	if got := cc.pread(4096, 17); string(got) != "written through B" {
		t.Errorf("C reads %q: B's release or its writes were lost", got)
	}
}

// One writer for a read-write export, across servers: the second server refuses while the
// first holds the lease, takes the writer at once when the first released it, and the
// first cannot take it back meanwhile.
func TestStoreLeaseContention(t *testing.T) {
	w := weedtest.Shared(t)
	bucket, url := storeImage(t, w)
	// Long enough that a loaded machine's scheduling cannot lapse a live holder's lease.
	const ttl = 5 * time.Second
	a := storeProc(t, w, ttl, "root="+url)
	b := storeProc(t, w, ttl, "root="+url)
	wa := connectFrom(t, a.addr, "127.0.0.1", "root", false)
	wa.pwrite(0, []byte("writer A"), nbd.CmdFlagFUA)
	_, _, err := goFrom(t, b.addr, "127.0.0.2", "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write through another server")
	// Held for longer than a TTL: a live holder renews, nobody takes over.
	time.Sleep(ttl + time.Second)
	_, _, err = goFrom(t, b.addr, "127.0.0.2", "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "held by server")
	wa.pwrite(4096, []byte("still A"), nbd.CmdFlagFUA)
	wa.disconnect()

	wb, err := retryGo(t, 5*time.Second, func() (*testClient, error) {
		c, _, err := goFrom(t, b.addr, "127.0.0.2", "root")
		return c, err
	})
	if err != nil {
		t.Fatalf("B after A's writer left: %v", err)
	}
	if got := wb.pread(0, 8); string(got) != "writer A" {
		t.Errorf("B reads %q", got)
	}
	if got := wb.pread(4096, 7); string(got) != "still A" {
		t.Errorf("B reads %q", got)
	}
	_, _, err = goFrom(t, a.addr, "127.0.0.1", "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write through another server")
	// The image object itself is never written.
	data, _, err := bucket.Get(context.Background(), "images/root.img")
	if err != nil || !bytes.Equal(data, pattern(0, storeImageSize)) {
		t.Errorf("the image object changed (%v)", err)
	}
}

// The block cache on a real store: bounded, and a working set that fits is served from
// memory the second time.
func TestStoreCache(t *testing.T) {
	w := weedtest.Shared(t)
	_, url := storeImage(t, w)
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: url, ReadOnly: true}},
		Store: StoreConfig{Config: w.Config(), CacheSize: 4 << 20}})
	c := connectTest(t, s.addr, "root", false)
	for off := 0; off < storeImageSize; off += 128 << 10 {
		if got := c.pread(uint64(off), 128<<10); !bytes.Equal(got, pattern(off, 128<<10)) {
			t.Fatalf("read at %d differs from the image", off)
		}
	}
	st := s.CacheStats()
	if st.Bytes > st.MaxBytes || st.MaxBytes != 4<<20 {
		t.Errorf("cache holds %d bytes, bound %d", st.Bytes, st.MaxBytes)
	}
	if st.ReadAhead == 0 || st.ReadAheadUsed == 0 {
		t.Errorf("a sequential read read nothing ahead: %+v", st)
	}
	t.Logf("sequential pass over 16 MiB: %+v", st)
	// A 2 MiB working set, read twice: the second pass is all hits.
	for off := 0; off < 2<<20; off += 64 << 10 {
		c.pread(uint64(off), 64<<10)
	}
	before := s.CacheStats()
	for off := 0; off < 2<<20; off += 64 << 10 {
		c.pread(uint64(off), 64<<10)
	}
	after := s.CacheStats()
	// (Read-ahead may go on fetching past the working set: that is not the working set.)
	if after.Misses != before.Misses || after.Joins != before.Joins || after.Hits-before.Hits != 32 {
		t.Errorf("second pass over a cached working set was not all hits: %+v -> %+v", before, after)
	}
}

// The store goes down under a running server: cached reads go on, the rest fail with EIO
// and a log line naming the store; writes are acknowledged while the lease lasts, FLUSH
// waits for the store, and once the lease can no longer be renewed both fail with EIO.
// When the store is back (nobody took over), everything works again. The store goes down
// behind a gate (weedtest.Gate): to the server that is a store whose connections are reset
// and refused, as when its host or process dies, without waiting for a store to restart.
func TestStoreDown(t *testing.T) {
	w := weedtest.Shared(t)
	_, url := storeImage(t, w)
	g := w.Gate(t)
	const ttl = 3 * time.Second
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: url, Cow: true}},
		Store: StoreConfig{Config: g.Config(), LeaseTTL: ttl}})
	c, _ := mustGoAs(t, s.addr, "127.0.0.1", "root", "pc1", nbd.OverlayID{})
	c.pread(0, 64<<10)
	c.pwrite(0, []byte("before the outage"), 0)
	flush(t, c)

	c.nc.SetDeadline(time.Now().Add(3 * time.Minute))
	g.Close()
	if got := c.pread(0, 17); string(got) != "before the outage" {
		t.Errorf("staged overlay block: %q", got)
	}
	if got := c.pread(8192, 4096); !bytes.Equal(got, pattern(8192, 4096)) {
		t.Errorf("cached image block differs")
	}
	if rp := c.do(nbd.CmdRead, 0, 12<<20, 4096, nil); rp.Errno != nbd.EIO {
		t.Errorf("uncached read with the store down: %v, want EIO", nbd.Errno(rp.Errno))
	}
	if !strings.Contains(s.logs.String(), "connection refused") {
		t.Errorf("the failed read logged no cause:\n%s", s.logs)
	}
	if rp := c.do(nbd.CmdWrite, 0, 4096, 6, []byte("during")); rp.Errno != 0 {
		t.Errorf("write while the lease lasts: %v", nbd.Errno(rp.Errno))
	}
	start := time.Now()
	if rp := c.do(nbd.CmdFlush, 0, 0, 0, nil); rp.Errno != nbd.EIO {
		t.Errorf("FLUSH with the store down: %v, want EIO", nbd.Errno(rp.Errno))
	}
	t.Logf("FLUSH failed after %v", time.Since(start).Round(10*time.Millisecond))
	if rp := c.do(nbd.CmdWrite, 0, 4096, 5, []byte("after")); rp.Errno != nbd.EIO {
		t.Errorf("write after the lease lapsed: %v, want EIO", nbd.Errno(rp.Errno))
	}

	g.Open(t)
	waitFor(t, "writes acknowledged again", func() bool {
		return c.do(nbd.CmdWrite, 0, 4096, 5, []byte("again")).Errno == 0
	})
	flush(t, c)
	if got := c.pread(12<<20, 4096); !bytes.Equal(got, pattern(12<<20, 4096)) {
		t.Errorf("read after the store came back differs")
	}
	if got := c.pread(0, 17); string(got) != "before the outage" {
		t.Errorf("overlay after the outage: %q", got)
	}
}
