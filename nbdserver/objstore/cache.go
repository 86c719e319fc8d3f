package objstore

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// The image cache. An image object is read in fixed-size blocks with ranged GETs; blocks
// live in one memory-bounded LRU shared by every image of a server, so a room of clients
// booting one image fetches each block once. Concurrent misses of a block share one GET
// (a fetch in flight is joined, never repeated); a run of missing blocks goes out as one
// GET. Read-ahead follows sequential streams, as the kernel's does: a read that continues
// where an earlier one ended prefetches the blocks after it, in a window that doubles with
// each continuation up to MaxReadAhead — a boot reads most files from start to end, in
// 128 KiB requests (the client kernel's own read-ahead), so its first block of a file
// costs one store round trip and the rest are found in memory.

// Cache defaults.
const (
	DefaultBlockSize    = 256 << 10
	DefaultCacheSize    = 512 << 20
	DefaultMaxReadAhead = 16 // blocks (4 MiB)
	maxRunBlocks        = 16 // blocks fetched by one GET
	prefetchParallel    = 8  // read-ahead GETs in flight per cache
	streams             = 16 // sequential streams tracked per image
)

// Cache is a bounded in-memory cache of blocks of image objects.
type Cache struct {
	blockSize    int64
	maxBlocks    int
	maxReadAhead int64

	mu       sync.Mutex
	lru      list.List // of *cacheEntry, most recently used first
	entries  map[blockKey]*list.Element
	inflight map[blockKey]*fetch
	nextID   uint64

	prefetchSem chan struct{}
	stats       cacheCounters
}

type blockKey struct {
	img uint64
	idx int64
}

type cacheEntry struct {
	key  blockKey
	data []byte // immutable once cached: readers copy from it without the lock
	// prefetched marks a block read ahead and not yet used, for the read-ahead counters.
	prefetched bool
}

type fetch struct {
	done chan struct{}
	err  error
}

type cacheCounters struct {
	hits, joins, misses, fetches, fetchedBytes, readAhead, readAheadUsed, evictions atomic.Uint64
}

// CacheStats are a cache's counters since it was made.
type CacheStats struct {
	// Hits, Joins and Misses count block lookups by reads (a read of three blocks is
	// three): found in memory, found on its way (another read's GET, or read-ahead, was
	// fetching it: the read waited, but sent no GET of its own), or fetched.
	Hits, Joins, Misses uint64
	// Fetches counts GETs, FetchedBytes what they brought.
	Fetches, FetchedBytes uint64
	// ReadAhead counts blocks prefetched, ReadAheadUsed those read afterwards.
	ReadAhead, ReadAheadUsed uint64
	Evictions                uint64
	// Blocks and Bytes are what the cache holds now; MaxBytes its bound.
	Blocks          int
	Bytes, MaxBytes int64
}

// HitRate is the share of lookups served from memory, Hits/(Hits+Joins+Misses), or 0
// before any lookup.
func (s CacheStats) HitRate() float64 {
	n := s.Hits + s.Joins + s.Misses
	if n == 0 {
		return 0
	}
	return float64(s.Hits) / float64(n)
}

// NewCache returns a cache holding at most size bytes in blocks of blockSize (0: the
// defaults). maxReadAhead bounds the read-ahead window in blocks (0: default; negative: no
// read-ahead).
func NewCache(size, blockSize int64, maxReadAhead int) *Cache {
	if blockSize <= 0 {
		blockSize = DefaultBlockSize
	}
	if size <= 0 {
		size = DefaultCacheSize
	}
	switch {
	case maxReadAhead == 0:
		maxReadAhead = DefaultMaxReadAhead
	case maxReadAhead < 0:
		maxReadAhead = 0
	}
	c := &Cache{
		blockSize:    blockSize,
		maxBlocks:    max(int(size/blockSize), 1),
		maxReadAhead: int64(maxReadAhead),
		entries:      map[blockKey]*list.Element{},
		inflight:     map[blockKey]*fetch{},
		prefetchSem:  make(chan struct{}, prefetchParallel),
	}
	return c
}

// BlockSize is the unit in which images are fetched and cached.
func (c *Cache) BlockSize() int64 { return c.blockSize }

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	n := c.lru.Len()
	c.mu.Unlock()
	return CacheStats{
		Hits: c.stats.hits.Load(), Joins: c.stats.joins.Load(), Misses: c.stats.misses.Load(),
		Fetches: c.stats.fetches.Load(), FetchedBytes: c.stats.fetchedBytes.Load(),
		ReadAhead: c.stats.readAhead.Load(), ReadAheadUsed: c.stats.readAheadUsed.Load(),
		Evictions: c.stats.evictions.Load(),
		Blocks:    n, Bytes: int64(n) * c.blockSize, MaxBytes: int64(c.maxBlocks) * c.blockSize,
	}
}

// Image is an object read through a Cache. Its size and ETag are those seen when it was
// opened; every GET insists on that ETag.
type Image struct {
	c    *Cache
	b    Bucket
	key  string
	id   uint64
	size int64
	etag string

	raMu    sync.Mutex
	streams [streams]stream
	tick    uint64
}

type stream struct {
	next   int64 // the block a continuing read starts in
	window int64 // read-ahead window in blocks; 0 until the stream continued once
	ahead  int64 // first block not yet read ahead
	used   uint64
}

// OpenImage looks up the object key in b and returns it for reading through c.
func (c *Cache) OpenImage(ctx context.Context, b Bucket, key string) (*Image, error) {
	a, err := b.Head(ctx, key)
	if err != nil {
		return nil, err
	}
	if a.ETag == "" {
		return nil, &OpError{Op: "head", URL: URL{b.Name(), key}, Err: errors.New("the store sent no ETag; without one a replaced object could not be told apart")}
	}
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	c.mu.Unlock()
	return &Image{c: c, b: b, key: key, id: id, size: a.Size, etag: a.ETag}, nil
}

// Size is the object's size in bytes.
func (im *Image) Size() int64 { return im.size }

// ETag is the object's ETag when it was opened.
func (im *Image) ETag() string { return im.etag }

// URL names the object.
func (im *Image) URL() URL { return URL{im.b.Name(), im.key} }

// ErrImageChanged says an image object was replaced while it was being served.
var ErrImageChanged = errors.New("the image object changed since the export opened it (a new upload under the same key?): reload the server to serve the new one")

// ReadCached fills p from off if every block it needs is in the cache, reporting whether
// it did. It never waits for the store.
func (im *Image) ReadCached(p []byte, off int64) bool {
	c := im.c
	bs := c.blockSize
	first, last := off/bs, (off+int64(len(p))-1)/bs
	if len(p) == 0 {
		return true
	}
	var datas [4][]byte
	if last-first >= int64(len(datas)) {
		return false
	}
	c.mu.Lock()
	for i := first; i <= last; i++ {
		el := c.entries[blockKey{im.id, i}]
		if el == nil {
			c.mu.Unlock()
			return false
		}
		e := el.Value.(*cacheEntry)
		datas[i-first] = e.data
	}
	for i := first; i <= last; i++ {
		el := c.entries[blockKey{im.id, i}]
		c.lru.MoveToFront(el)
		if e := el.Value.(*cacheEntry); e.prefetched {
			e.prefetched = false
			c.stats.readAheadUsed.Add(1)
		}
	}
	c.mu.Unlock()
	c.stats.hits.Add(uint64(last - first + 1))
	for i := first; i <= last; i++ {
		im.copyOut(p, off, i, datas[i-first])
	}
	im.readAhead(off, int64(len(p)))
	return true
}

// copyOut copies the part of block i that p (at off) covers; bytes past the object's end
// read as zeroes.
func (im *Image) copyOut(p []byte, off, i int64, data []byte) {
	bs := im.c.blockSize
	bstart := i * bs
	lo := max(off, bstart)
	hi := min(off+int64(len(p)), bstart+bs)
	dst := p[lo-off : hi-off]
	n := 0
	if lo-bstart < int64(len(data)) {
		n = copy(dst, data[lo-bstart:])
	}
	clear(dst[n:])
}

// ReadAt fills p from off, fetching missing blocks. Bytes past the end read as zeroes.
func (im *Image) ReadAt(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	c := im.c
	bs := c.blockSize
	first, last := off/bs, (off+int64(len(p))-1)/bs
	for i := first; i <= last; {
		data, err := im.block(ctx, i, last)
		if err != nil {
			return err
		}
		im.copyOut(p, off, i, data)
		i++
	}
	im.readAhead(off, int64(len(p)))
	return nil
}

// block returns block i, fetching it (together with the missing blocks after it, up to
// last) when it is not cached.
func (im *Image) block(ctx context.Context, i, last int64) ([]byte, error) {
	c := im.c
	k := blockKey{im.id, i}
	waited := false
	for {
		c.mu.Lock()
		if el := c.entries[k]; el != nil {
			c.lru.MoveToFront(el)
			e := el.Value.(*cacheEntry)
			if e.prefetched {
				e.prefetched = false
				c.stats.readAheadUsed.Add(1)
			}
			c.mu.Unlock()
			if !waited {
				c.stats.hits.Add(1)
			}
			return e.data, nil
		}
		if f := c.inflight[k]; f != nil {
			c.mu.Unlock()
			// Join the fetch in flight (another read's miss, or read-ahead).
			if !waited {
				c.stats.joins.Add(1)
				waited = true
			}
			select {
			case <-f.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if f.err != nil {
				return nil, f.err
			}
			continue // now cached, unless evicted already: look again
		}
		n := im.claimRunLocked(i, last)
		c.mu.Unlock()
		if !waited {
			c.stats.misses.Add(1)
			waited = true
		}
		if err := im.fetchRun(ctx, i, n, false); err != nil {
			return nil, err
		}
	}
}

// claimRunLocked registers fetches for block i and the blocks after it up to last that
// are neither cached nor in flight (at most maxRunBlocks), returning how many.
func (im *Image) claimRunLocked(i, last int64) int64 {
	c := im.c
	nblocks := (im.size + c.blockSize - 1) / c.blockSize
	n := int64(0)
	for j := i; j <= last && j < nblocks && n < maxRunBlocks; j++ {
		k := blockKey{im.id, j}
		if c.entries[k] != nil || c.inflight[k] != nil {
			break
		}
		c.inflight[k] = &fetch{done: make(chan struct{})}
		n++
	}
	return n
}

// fetchRun reads blocks [i, i+n) with one GET and caches them, completing their fetches.
func (im *Image) fetchRun(ctx context.Context, i, n int64, prefetched bool) error {
	c := im.c
	bs := c.blockSize
	var err error
	buf := make([]byte, n*bs)
	var got int
	if n > 0 {
		got, err = im.b.ReadRange(ctx, im.key, buf, i*bs, im.etag)
		c.stats.fetches.Add(1)
		c.stats.fetchedBytes.Add(uint64(got))
		if errors.Is(err, ErrPrecondition) {
			err = fmt.Errorf("%s: %w", im.URL(), ErrImageChanged)
		}
	}
	c.mu.Lock()
	for j := int64(0); j < n; j++ {
		k := blockKey{im.id, i + j}
		f := c.inflight[k]
		delete(c.inflight, k)
		if err == nil {
			lo := j * bs
			hi := min(lo+bs, int64(got))
			var data []byte
			if lo < hi {
				data = buf[lo:hi:hi]
			}
			c.insertLocked(&cacheEntry{key: k, data: data, prefetched: prefetched})
		}
		if f != nil {
			f.err = err
			close(f.done)
		}
	}
	c.mu.Unlock()
	return err
}

func (c *Cache) insertLocked(e *cacheEntry) {
	if el := c.entries[e.key]; el != nil {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[e.key] = c.lru.PushFront(e)
	for c.lru.Len() > c.maxBlocks {
		el := c.lru.Back()
		c.lru.Remove(el)
		delete(c.entries, el.Value.(*cacheEntry).key)
		c.stats.evictions.Add(1)
	}
}

// readAhead notes a read of [off, off+n) and, when it continues a stream, prefetches
// the blocks ahead of it in the background.
func (im *Image) readAhead(off, n int64) {
	c := im.c
	if c.maxReadAhead == 0 {
		return
	}
	bs := c.blockSize
	first, last := off/bs, (off+n-1)/bs
	im.raMu.Lock()
	im.tick++
	var s *stream
	for k := range im.streams {
		st := &im.streams[k]
		if st.used != 0 && (first == st.next || first == st.next-1) {
			s = st
			break
		}
	}
	if s == nil {
		// A new stream, in the place of the least recently used one.
		lru := &im.streams[0]
		for k := range im.streams {
			if im.streams[k].used < lru.used {
				lru = &im.streams[k]
			}
		}
		*lru = stream{next: last + 1, ahead: last + 1, used: im.tick}
		im.raMu.Unlock()
		return
	}
	s.used = im.tick
	if last+1 > s.next {
		s.next = last + 1
	}
	if s.window == 0 {
		s.window = 2
	} else if s.next+s.window/2 >= s.ahead {
		// Half the window consumed: widen it for the next batch.
		s.window = min(s.window*2, c.maxReadAhead)
	}
	from := max(s.ahead, s.next)
	to := min(s.next+s.window, (im.size+bs-1)/bs)
	if to > from {
		s.ahead = to
	}
	im.raMu.Unlock()
	if to > from {
		im.Prefetch(from*bs, (to-from)*bs)
	}
}

// Prefetch reads the blocks of [off, off+n) that are missing into the cache, in the
// background, with a bounded number of GETs in flight (NBD_CMD_CACHE and read-ahead).
func (im *Image) Prefetch(off, n int64) {
	c := im.c
	bs := c.blockSize
	if n <= 0 || off >= im.size {
		return
	}
	first, last := off/bs, (min(off+n, im.size)-1)/bs
	for i := first; i <= last; {
		select {
		case c.prefetchSem <- struct{}{}:
		default:
			return // enough in flight: read-ahead is a hint
		}
		c.mu.Lock()
		// Skip what is there or coming.
		for i <= last && (c.entries[blockKey{im.id, i}] != nil || c.inflight[blockKey{im.id, i}] != nil) {
			i++
		}
		var cnt int64
		if i <= last {
			cnt = im.claimRunLocked(i, last)
		}
		c.mu.Unlock()
		if cnt == 0 {
			<-c.prefetchSem
			return
		}
		c.stats.readAhead.Add(uint64(cnt))
		go func(i, cnt int64) {
			defer func() { <-c.prefetchSem }()
			im.fetchRun(context.Background(), i, cnt, true)
		}(i, cnt)
		i += cnt
	}
}
