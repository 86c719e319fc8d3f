package nbdserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver/objstore"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// Exports whose image is an object (s3://BUCKET/KEY). The image is read through the
// server's block cache and never written: a read-only export serves it as it is, a cow
// export lays per-client overlays over it, and a read-write export lays one overlay over
// it — the export's writes, kept beside the image in the store (ovstore.Writes) — which
// the writer's server holds by a lease in the store, so that any server of a fleet can
// serve the writer after a failover, and no two at once. Overlays of object exports live
// in the store too unless cowdir=/cowtmp= name a local directory.

// StoreConfig says how the server reaches the object store of its s3:// exports.
type StoreConfig struct {
	// Config is the connection: endpoint, region, profile, credentials file; empty
	// fields come from the environment and ~/.aws as for every AWS tool.
	objstore.Config
	// CacheSize bounds the memory of the image block cache (0: objstore.DefaultCacheSize).
	CacheSize int64
	// LeaseTTL is how long a writer's lease outlives its server's last renewal
	// (0: objstore.DefaultLeaseTTL).
	LeaseTTL time.Duration
	// Bucket, when set, opens buckets instead of a connection made from Config (tests
	// hand in-memory buckets).
	Bucket func(name string) objstore.Bucket
}

// objState is the server's side of the object store, made when the first object export
// is configured: one connection, one block cache and one lease manager for all exports.
type objState struct {
	cfg     StoreConfig
	mu      sync.Mutex
	store   *objstore.Store
	cache   *objstore.Cache
	leases  *objstore.Leases
	buckets map[string]objstore.Bucket
	checked map[string]error // conditional-write checks, by bucket and prefix
}

func newObjState(cfg StoreConfig) *objState {
	return &objState{cfg: cfg, cache: objstore.NewCache(cfg.CacheSize, 0, 0),
		leases: objstore.NewLeases(cfg.LeaseTTL), buckets: map[string]objstore.Bucket{}, checked: map[string]error{}}
}

// bucket returns a bucket, connecting to the store the first time.
func (o *objState) bucket(name string) (objstore.Bucket, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if b := o.buckets[name]; b != nil {
		return b, nil
	}
	var b objstore.Bucket
	if o.cfg.Bucket != nil {
		b = o.cfg.Bucket(name)
	} else {
		if o.store == nil {
			st, err := objstore.Connect(context.Background(), o.cfg.Config)
			if err != nil {
				return nil, err
			}
			o.store = st
		}
		b = o.store.Bucket(name)
	}
	o.buckets[name] = b
	return b, nil
}

// endpoint names the store for logs.
func (o *objState) endpoint() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.store != nil {
		return o.store.Endpoint()
	}
	return "the configured store"
}

// objects returns the server's object store state, made on first use.
func (s *Server) objects() *objState {
	s.objOnce.Do(func() { s.obj.Store(newObjState(s.storeCfg)) })
	return s.obj.Load()
}

// CacheStats returns the counters of the image block cache (zero without object exports).
func (s *Server) CacheStats() objstore.CacheStats {
	if o := s.obj.Load(); o != nil {
		return o.cache.Stats()
	}
	return objstore.CacheStats{}
}

// objImage is the backend of an object image: read-only, through the block cache.
type objImage struct {
	im      *objstore.Image
	timeout time.Duration
}

var (
	_ Backend      = (*objImage)(nil)
	_ nowaitReader = (*objImage)(nil)
	_ cowBase      = (*objImage)(nil)
)

// openObjImage opens an image object through the server's cache.
func (s *Server) openObjImage(u objstore.URL) (*objImage, error) {
	b, err := s.objects().bucket(u.Bucket)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), objstore.DefaultTimeout)
	defer cancel()
	im, err := s.objects().cache.OpenImage(ctx, b, u.Key)
	if err != nil {
		return nil, err
	}
	return &objImage{im: im, timeout: objstore.DefaultTimeout}, nil
}

func (b *objImage) Size() int64 { return b.im.Size() }

func (b *objImage) ReadAt(p []byte, off int64) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.timeout)
	defer cancel()
	if err := b.im.ReadAt(ctx, p, off); err != nil {
		return &BackendError{"read " + b.im.URL().String(), off, int64(len(p)), err}
	}
	return nil
}

func (b *objImage) ReadAtNoWait(p []byte, off int64) (bool, error) {
	return b.im.ReadCached(p, off), nil
}

func (b *objImage) WriteAt(p []byte, off int64, fua bool) error { return ErrReadOnly }
func (b *objImage) Flush() error                                { return nil }
func (b *objImage) Trim(off, length int64, fua bool) error      { return ErrReadOnly }
func (b *objImage) Zero(off, length int64, noHole, fast, fua bool) error {
	return ErrReadOnly
}

// Extents reports everything as data: an object has no holes the store would tell of.
func (b *objImage) Extents(off, length int64, fn func(int64, uint32) bool) error {
	fn(length, 0)
	return nil
}

func (b *objImage) Cache(off, length int64) error {
	b.im.Prefetch(off, length)
	return nil
}

func (b *objImage) Close() error { return nil }

// overlayStore is where an export keeps its overlays: a directory (cowdir=, cowtmp=, the
// state directory) or a prefix in the object store (cowdir=s3://…, or beside the image
// object of an object export).
func (s *Server) overlayStore(cfg *Export) (ovstore.Store, error) {
	root := s.overlayRoot(cfg)
	if !objstore.IsURL(root) {
		return ovstore.Local{Root: root}, nil
	}
	u, err := objstore.ParseURL(root, true)
	if err != nil {
		return nil, err
	}
	b, err := s.objects().bucket(u.Bucket)
	if err != nil {
		return nil, err
	}
	if err := s.objects().checkConditional(b, u.Key); err != nil {
		return nil, err
	}
	return &ovstore.Objects{B: b, Prefix: u.Key, Leases: s.objects().leases, Logf: s.log.Printf}, nil
}

// checkConditional verifies once per bucket and prefix that the store honours the
// conditional writes overlays in it rely on.
func (o *objState) checkConditional(b objstore.Bucket, prefix string) error {
	k := b.Name() + "/" + prefix
	o.mu.Lock()
	err, done := o.checked[k]
	o.mu.Unlock()
	if done {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), objstore.DefaultTimeout)
	defer cancel()
	err = objstore.CheckConditionalWrites(ctx, b, strings.TrimSuffix(prefix, "/"))
	if err != nil && !errors.Is(err, objstore.ErrNoConditionalWrites) {
		return err // not an answer: check again next time
	}
	o.mu.Lock()
	o.checked[k] = err
	o.mu.Unlock()
	return err
}

// objectKeyLocked looks an image object up: its key (URL and current ETag) and, unless an
// image with that key is open already, the image opened.
func (s *Server) objectKeyLocked(path string) (fileKey, *objImage, error) {
	u, a, err := s.objects().headImage(path)
	if err != nil {
		return fileKey{}, nil, err
	}
	key := fileKey{obj: u.String() + " " + a.ETag}
	if s.images[key] != nil {
		return key, nil, nil
	}
	ob, err := s.openObjImage(u)
	if err != nil {
		return fileKey{}, nil, err
	}
	return fileKey{obj: u.String() + " " + ob.im.ETag()}, ob, nil
}

// headImage looks an image object up (HEAD): its URL and attributes. An error from the
// store about the object — missing, or the store unreachable or refusing — is an
// *objstore.OpError; others are the store's configuration (Connect).
func (o *objState) headImage(path string) (objstore.URL, objstore.Attrs, error) {
	u, err := objstore.ParseURL(path, false)
	if err != nil {
		return u, objstore.Attrs{}, err
	}
	b, err := o.bucket(u.Bucket)
	if err != nil {
		return u, objstore.Attrs{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), objstore.DefaultTimeout)
	defer cancel()
	a, err := b.Head(ctx, u.Key)
	return u, a, err
}

// objectOverlayRoot is the default overlay location of an object export: beside the image.
func objectOverlayRoot(path string) string { return path + ".nbdroot" }

// stagingDir is where store overlays stage their chunks locally.
func (s *Server) stagingDir() (string, error) {
	dir := filepath.Join(s.stateDir, "staging")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("staging directory for store overlays: %w", err)
	}
	return dir, nil
}

// attachHeld turns an overlay held in its store into the engine over base: its files, or
// its staged chunks.
func (s *Server) attachHeld(base cowBase, h *ovstore.Overlay) (*overlay, error) {
	if h.Remote == nil {
		return attachOverlay(base, h, s.log.Printf)
	}
	dir, err := s.stagingDir()
	if err != nil {
		return nil, err
	}
	return attachStoreOverlay(base, h, dir, s.log.Printf)
}

// validateObjectExport checks what an object export (or an s3:// overlay directory)
// cannot do.
func validateObjectExport(e *Export) error {
	if objstore.IsURL(e.CowDir) {
		if _, err := objstore.ParseURL(e.CowDir, true); err != nil {
			return fmt.Errorf("cowdir: %w", err)
		}
	}
	if !objstore.IsURL(e.Path) {
		return nil
	}
	if _, err := objstore.ParseURL(e.Path, false); err != nil {
		return err
	}
	switch {
	case e.Shared && !e.ReadOnly && !e.Cow:
		return errors.New("shared: several writers are not possible on an s3:// image (its writes are one overlay, held by one server)")
	case e.ReadOnlyFallback && !e.ReadOnly && !e.Cow:
		return errors.New("rofallback is not possible on an s3:// image (readers would see the image without the writer's writes)")
	case e.CreateSize > 0:
		return errors.New("filesize: an s3:// image is not created by the server; upload it")
	}
	return nil
}
