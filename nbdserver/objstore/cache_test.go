package objstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func imageBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*13 + i>>10)
	}
	return b
}

func memImage(t *testing.T, n int) (*Mem, []byte) {
	t.Helper()
	m := NewMem("images")
	data := imageBytes(n)
	if _, err := m.Put(context.Background(), "root.img", data, Cond{}); err != nil {
		t.Fatal(err)
	}
	return m, data
}

func TestCacheReads(t *testing.T) {
	m, data := memImage(t, 1<<20+777)
	c := NewCache(256<<10, 64<<10, -1)
	im, err := c.OpenImage(context.Background(), m, "root.img")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		off, n int
	}{
		{"first bytes", 0, 1},
		{"across two blocks", 64<<10 - 10, 20},
		{"whole blocks", 128 << 10, 192 << 10},
		{"last partial block", 1 << 20, 777},
		{"past the end", 1<<20 + 700, 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := make([]byte, tc.n)
			if err := im.ReadAt(context.Background(), p, int64(tc.off)); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, tc.n)
			if tc.off < len(data) {
				copy(want, data[tc.off:])
			}
			if !bytes.Equal(p, want) {
				t.Errorf("read %d+%d differs", tc.off, tc.n)
			}
			q := make([]byte, tc.n)
			if !im.ReadCached(q, int64(tc.off)) && tc.n <= 64<<10 {
				t.Errorf("just read, but not cached")
			} else if tc.n <= 64<<10 && !bytes.Equal(q, want) {
				t.Errorf("cached read differs")
			}
		})
	}
	st := c.Stats()
	if st.Bytes > 256<<10 || st.Blocks > 4 {
		t.Errorf("cache holds %d blocks (%d bytes), bound 256 KiB", st.Blocks, st.Bytes)
	}
	if st.Evictions == 0 {
		t.Errorf("reading 1 MiB through 256 KiB evicted nothing: %+v", st)
	}
}

// A run of missing blocks goes out as one GET; concurrent readers of one block share one.
func TestCacheCoalescing(t *testing.T) {
	m, data := memImage(t, 4<<20)
	c := NewCache(8<<20, 64<<10, -1)
	im, _ := c.OpenImage(context.Background(), m, "root.img")
	gets := m.Count("get")
	p := make([]byte, 512<<10)
	if err := im.ReadAt(context.Background(), p, 0); err != nil || !bytes.Equal(p, data[:512<<10]) {
		t.Fatalf("read: %v", err)
	}
	if n := m.Count("get") - gets; n != 1 {
		t.Errorf("512 KiB in 8 missing blocks took %d GETs, want 1", n)
	}
	// Slow store: 32 readers of one block meanwhile.
	m.Fail = func(op, key string) error { time.Sleep(50 * time.Millisecond); return nil }
	gets = m.Count("get")
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q := make([]byte, 4096)
			if err := im.ReadAt(context.Background(), q, 2<<20); err != nil || !bytes.Equal(q, data[2<<20:2<<20+4096]) {
				t.Errorf("concurrent read: %v", err)
			}
		}()
	}
	wg.Wait()
	if n := m.Count("get") - gets; n != 1 {
		t.Errorf("32 concurrent misses of one block took %d GETs, want 1", n)
	}
	if st := c.Stats(); st.Joins == 0 {
		t.Errorf("no read joined the fetch in flight: %+v", st)
	}
}

// Sequential reads prefetch the blocks ahead, so a file read start to end waits for the
// store about once per window instead of once per block.
func TestCacheReadAhead(t *testing.T) {
	m, data := memImage(t, 8<<20)
	c := NewCache(16<<20, 64<<10, 0)
	im, _ := c.OpenImage(context.Background(), m, "root.img")
	p := make([]byte, 128<<10)
	for off := 0; off < 4<<20; off += len(p) {
		if err := im.ReadAt(context.Background(), p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+len(p)]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		time.Sleep(2 * time.Millisecond) // as a client's next request would come later
	}
	st := c.Stats()
	if st.ReadAhead == 0 || st.ReadAheadUsed == 0 {
		t.Fatalf("no read-ahead: %+v", st)
	}
	if st.Misses > 8 {
		t.Errorf("a sequential 4 MiB read missed %d times (read-ahead should have fetched most): %+v", st.Misses, st)
	}
	// Random reads start no read-ahead.
	c2 := NewCache(16<<20, 64<<10, 0)
	im2, _ := c2.OpenImage(context.Background(), m, "root.img")
	for _, off := range []int64{5 << 20, 1 << 20, 7 << 20, 3 << 20} {
		im2.ReadAt(context.Background(), p[:4096], off)
	}
	if st := c2.Stats(); st.ReadAhead != 0 {
		t.Errorf("random reads read ahead: %+v", st)
	}
}

func TestCacheErrors(t *testing.T) {
	m, _ := memImage(t, 1<<20)
	c := NewCache(1<<20, 64<<10, -1)
	im, _ := c.OpenImage(context.Background(), m, "root.img")
	down := errors.New("store down")
	m.Fail = func(op, key string) error { return down }
	p := make([]byte, 4096)
	if err := im.ReadAt(context.Background(), p, 0); !errors.Is(err, down) {
		t.Errorf("read with the store down: %v", err)
	}
	m.Fail = nil
	if err := im.ReadAt(context.Background(), p, 0); err != nil {
		t.Errorf("a failed fetch was cached: %v", err)
	}
	m.Put(context.Background(), "root.img", []byte("new upload"), Cond{})
	if err := im.ReadAt(context.Background(), p, 512<<10); !errors.Is(err, ErrImageChanged) {
		t.Errorf("read after a new upload: %v, want ErrImageChanged", err)
	}
}

func TestParseURL(t *testing.T) {
	tests := []struct {
		in       string
		emptyKey bool
		want     URL
		bad      bool
	}{
		{in: "s3://images/debian/root.img", want: URL{"images", "debian/root.img"}},
		{in: "s3://my.bucket-1/k", want: URL{"my.bucket-1", "k"}},
		{in: "s3://images/", emptyKey: true, want: URL{"images", ""}},
		{in: "s3://images/", bad: true},
		{in: "s3://images", bad: true},
		{in: "/srv/root.img", bad: true},
		{in: "s3://Images/k", bad: true},
		{in: "s3://ab/k", bad: true},
		{in: "s3://images/a//b", bad: true},
		{in: "s3://images/a/../b", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseURL(tc.in, tc.emptyKey)
			if tc.bad {
				if err == nil {
					t.Errorf("ParseURL(%q) = %+v, want an error", tc.in, got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "512M", want: 512 << 20},
		{in: "2G", want: 2 << 30},
		{in: "2GiB", want: 2 << 30},
		{in: "64k", want: 64 << 10},
		{in: "1T", want: 1 << 40},
		{in: "", bad: true},
		{in: "M", bad: true},
		{in: "-1M", bad: true},
		{in: "1.5G", bad: true},
		{in: "12X", bad: true},
	}
	for _, tc := range tests {
		got, err := ParseSize(tc.in)
		if tc.bad != (err != nil) || !tc.bad && got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"s3://images/debian/root.img", "s3://b/", "s3://images/a/../b", "/srv/x", "s3://my.bucket-1/k/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseURL(s, true)
		if err != nil {
			return
		}
		// What parses round-trips and names no path outside its bucket.
		if v, err := ParseURL(u.String(), true); err != nil || v != u {
			t.Fatalf("%q parses as %+v, which prints as %q, which parses as %+v (%v)", s, u, u.String(), v, err)
		}
		for _, el := range strings.Split(u.Key, "/") {
			if el == ".." {
				t.Fatalf("%q: key %q climbs", s, u.Key)
			}
		}
	})
}
