// Package overlay owns where copy-on-write overlays live on disk and how their lives are
// coordinated: layout, metadata, IDs, locking, creation, lookup, listing, removal and the
// reaping of temporary overlays. nbdserver's block engine reads and writes an overlay's data
// and bitmap; `nbdroot overlays` lists and removes overlays through this package.
//
// Layout under a root directory (the server's state directory's overlays/, or an export's
// cowdir= or cowtmp= directory):
//
//	ROOT/EXPORT/CLIENT/ID/meta.json  what the overlay is: export, client, kind, base image
//	ROOT/EXPORT/CLIENT/ID/data       the written blocks (sparse, the size of the image)
//	ROOT/EXPORT/CLIENT/ID/bitmap     which blocks are in data (nbdserver's format)
//
// EXPORT is the export name escaped into one safe file name; CLIENT is "id-IDENTITY", or
// "addr-ADDRESS" for a client that sent no identity; ID is the overlay's random ID in hex.
//
// Coordination between processes uses flock(2) on the ID directory: whoever has an overlay
// open (a server while a client is attached; an admin command while it removes it) holds
// an exclusive lock, and nobody else opens, removes or reaps it meanwhile. Creation builds
// ".new-ID" and renames it into place once complete and synced; removal renames the
// directory to ".gone-ID" first. So an opener finds a whole overlay or nothing.
//
// What it must never do: remove an overlay someone holds, show an opener a half-built or
// half-removed overlay, or reap a persistent overlay.
package overlay

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// File names inside an overlay's directory.
const (
	MetaFile   = "meta.json"
	DataFile   = "data"
	BitmapFile = "bitmap"

	newPrefix  = ".new-"
	gonePrefix = ".gone-"
)

// MetaVersion is the version of meta.json this package writes and reads.
const MetaVersion = 1

// Kind says how long an overlay lives.
type Kind string

const (
	// Temporary overlays (plain "cow" exports) belong to one boot of a client: a fresh boot
	// gets a new one, and the old one is reaped once unused for the grace period.
	Temporary Kind = "temporary"
	// Persistent overlays ("cowdir=") last until an administrator removes them.
	Persistent Kind = "persistent"
	// Writes is the one overlay of a read-write export whose image is an object: the
	// writes of its (one) writer, stored beside the image object, which is never changed.
	// It has no client (Meta.Client is zero) and lasts until an administrator removes it.
	Writes Kind = "writes"
)

// Client is whom an overlay belongs to: a client identity, or for clients that sent none,
// their source address (or "unix:uid=N" on a Unix socket).
type Client struct {
	ID        string `json:"id"`
	ByAddress bool   `json:"by_address,omitempty"`
}

// String is how people see a client: the identity, or "@ADDRESS" for one keyed by address
// ("@" cannot occur in an identity, so the two never look alike).
func (c Client) String() string {
	if c.ByAddress {
		return "@" + c.ID
	}
	return c.ID
}

// ParseClient is the inverse of String for command-line input.
func ParseClient(s string) (Client, error) {
	if a, ok := strings.CutPrefix(s, "@"); ok {
		if a == "" {
			return Client{}, errors.New("empty address after @")
		}
		return Client{ID: a, ByAddress: true}, nil
	}
	if err := nbd.ValidateIdentity(s); err != nil {
		return Client{}, err
	}
	return Client{ID: s}, nil
}

func (c Client) dirName() string {
	if c.ByAddress {
		return "addr-" + escape(c.ID)
	}
	return "id-" + escape(c.ID)
}

// Meta is an overlay's meta.json. It is written once, when the overlay is created.
type Meta struct {
	Version int           `json:"version"`
	ID      nbd.OverlayID `json:"id"`
	Export  string        `json:"export"`
	Client  Client        `json:"client"`
	Kind    Kind          `json:"kind"`
	Created time.Time     `json:"created"`
	// Image is the base image's path; ImageSize and ImageMtime describe it when the overlay
	// was made, so an overlay is never laid over a different or changed image.
	Image      string    `json:"image"`
	ImageSize  int64     `json:"image_size"`
	ImageMtime time.Time `json:"image_mtime,omitzero"`
	// ImageETag is the ETag of an image object in an object store.
	ImageETag string `json:"image_etag,omitempty"`
}

// Errors of Open, Remove and their callers.
var (
	// ErrGone says the overlay does not exist (never did, was removed, or was reaped).
	ErrGone = errors.New("overlay does not exist")
	// ErrBusy says another opener holds the overlay: a server it is attached to, or an
	// administrator's command removing it.
	ErrBusy = errors.New("overlay is in use")
)

// NewID returns a random overlay ID.
func NewID() (nbd.OverlayID, error) {
	var id nbd.OverlayID
	if _, err := rand.Read(id[:]); err != nil {
		return id, fmt.Errorf("overlay ID: %w", err)
	}
	return id, nil
}

// Store is a place where overlays live: a directory on this machine (Local) or a prefix
// in an object store that every server of a fleet reaches (Objects). The rules of which
// overlay a client gets live in nbdserver and are the same for both.
type Store interface {
	// Location names the place for people: a directory, or s3://BUCKET/PREFIX.
	Location() string
	// Create makes a new overlay for m (m.ID is chosen when zero) and returns it open and
	// held. populate fills a local overlay's directory before it appears under its ID;
	// object stores do not call it (their overlays start empty).
	Create(m Meta, populate func(dir string) error) (*Overlay, error)
	// Open opens and holds overlay id of client c on export: ErrGone when it does not
	// exist, ErrBusy while someone else holds it.
	Open(export string, c Client, id nbd.OverlayID) (*Overlay, error)
	// Find returns the overlays of client c on export, newest first.
	Find(export string, c Client) ([]Meta, error)
	// Exists reports whether overlay id of client c on export exists.
	Exists(export string, c Client, id nbd.OverlayID) bool
	// List returns every overlay in the store.
	List() ([]Info, error)
	// Remove deletes the overlay at where (an Info's Dir): ErrBusy while someone holds it,
	// ErrGone when it is not there.
	Remove(where string) error
	// Reap removes the temporary overlays unused for grace (see Local.Reap).
	Reap(now, notBefore time.Time, grace time.Duration) ([]Meta, error)
}

var _ Store = Local{}

// Local is the overlays under one root directory on this machine.
type Local struct {
	Root string
}

// Location is the root directory.
func (s Local) Location() string { return s.Root }

// Exists reports whether the overlay's directory exists.
func (s Local) Exists(export string, c Client, id nbd.OverlayID) bool {
	_, err := os.Stat(s.Dir(export, c, id))
	return err == nil
}

// ClientDir is the directory holding a client's overlays of an export.
func (s Local) ClientDir(export string, c Client) string {
	return filepath.Join(s.Root, escape(export), c.dirName())
}

// Dir is the directory of one overlay.
func (s Local) Dir(export string, c Client, id nbd.OverlayID) string {
	return filepath.Join(s.ClientDir(export, c), id.String())
}

// Overlay is an overlay opened (and held) by this process: locked in its directory, or
// leased in an object store.
type Overlay struct {
	Meta
	// Dir is the overlay's directory, or its location in an object store
	// (s3://BUCKET/PREFIX/overlays/EXPORT/CLIENT/ID).
	Dir  string
	lock *os.File
	// Remote is the overlay's state in an object store; nil for a local overlay.
	Remote *Remote
}

// Path names a file of the overlay (DataFile, BitmapFile).
func (o *Overlay) Path(name string) string { return filepath.Join(o.Dir, name) }

// Close releases the overlay for other openers, recording the time as its last use (the
// reaper counts the grace period of a temporary overlay from it).
func (o *Overlay) Close() error {
	if o.Remote != nil {
		return o.Remote.close()
	}
	if o.lock == nil {
		return nil
	}
	now := time.Now()
	os.Chtimes(o.Dir, now, now)
	err := o.lock.Close()
	o.lock = nil
	return err
}

// complete fills what a new overlay's Meta leaves zero: a fresh ID, the creation time; and
// sets the current format version.
func (m *Meta) complete() error {
	if m.ID.IsZero() {
		id, err := NewID()
		if err != nil {
			return err
		}
		m.ID = id
	}
	m.Version = MetaVersion
	if m.Created.IsZero() {
		m.Created = time.Now().UTC().Round(time.Millisecond)
	}
	return nil
}

// Create makes a new overlay for m (m.ID is chosen when zero) and returns it open. populate
// creates the data and bitmap files in the directory it is given; the overlay appears under
// its ID only once populate succeeded and everything (meta.json, populate's files, the
// directories) is on stable storage, so a crash never leaves a half-made overlay behind
// under a name a client could resume.
func (s Local) Create(m Meta, populate func(dir string) error) (*Overlay, error) {
	if err := m.complete(); err != nil {
		return nil, err
	}
	parent := s.ClientDir(m.Export, m.Client)
	tmp := filepath.Join(parent, newPrefix+m.ID.String())
	for try := 0; ; try++ {
		if err := MkdirAllSynced(s.Root, parent); err != nil {
			return nil, err
		}
		err := os.Mkdir(tmp, 0o700)
		if errors.Is(err, fs.ErrNotExist) && try < 3 {
			continue // the reaper removed the (empty) client directory meanwhile
		}
		if err != nil {
			return nil, err
		}
		break
	}
	// Locked while it is built, so a reaper leaves it alone.
	lock, err := lockDir(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	fail := func(err error) (*Overlay, error) {
		os.RemoveAll(tmp)
		lock.Close()
		return nil, err
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fail(err)
	}
	if err := writeFileSynced(filepath.Join(tmp, MetaFile), append(js, '\n')); err != nil {
		return fail(err)
	}
	if populate != nil {
		if err := populate(tmp); err != nil {
			return fail(err)
		}
	}
	if err := SyncDir(tmp); err != nil {
		return fail(err)
	}
	final := filepath.Join(parent, m.ID.String())
	if err := os.Rename(tmp, final); err != nil {
		return fail(err)
	}
	if err := SyncDir(parent); err != nil {
		// The overlay exists but its name may not survive a crash: do not hand it out.
		os.RemoveAll(final)
		lock.Close()
		return nil, err
	}
	return &Overlay{Meta: m, Dir: final, lock: lock}, nil
}

// Open opens and locks overlay id of client c on export. It returns ErrGone when there is
// no such overlay and ErrBusy when someone else holds it.
func (s Local) Open(export string, c Client, id nbd.OverlayID) (*Overlay, error) {
	dir := s.Dir(export, c, id)
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	// Removal renames the directory before deleting it: if that happened between our open
	// and our lock, we hold a directory that is no longer this overlay.
	if !stillAt(lock, dir) {
		lock.Close()
		return nil, ErrGone
	}
	m, err := readMeta(dir)
	if err != nil {
		lock.Close()
		return nil, err
	}
	if m.ID != id || m.Export != export || m.Client != c {
		lock.Close()
		return nil, fmt.Errorf("%s: %s describes overlay %s of client %s on export %q, not the one its path names (moved by hand?)",
			dir, MetaFile, m.ID, m.Client, m.Export)
	}
	now := time.Now()
	os.Chtimes(dir, now, now)
	return &Overlay{Meta: m, Dir: dir, lock: lock}, nil
}

// Find returns the overlays of client c on export, newest first. An overlay whose
// meta.json cannot be read is an error, not skipped: skipping it could hand the client an
// older overlay in its place.
func (s Local) Find(export string, c Client) ([]Meta, error) {
	dir := s.ClientDir(export, c)
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Meta
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") || !e.IsDir() {
			continue
		}
		m, err := readMeta(filepath.Join(dir, e.Name()))
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Meta) int { return b.Created.Compare(a.Created) })
	return out, nil
}

// Info is one overlay as List sees it.
type Info struct {
	Meta
	Dir string `json:"dir"`
	// Attached says someone holds the overlay (a server serving it to its client).
	Attached bool `json:"attached"`
	// LastUsed is when the overlay was last attached or released.
	LastUsed time.Time `json:"last_used"`
	// Allocated is what the overlay's data takes on disk, in bytes.
	Allocated int64 `json:"allocated_bytes"`
	// Err says why the overlay could not be read (it is listed so it can be removed).
	Err string `json:"error,omitempty"`
}

// List returns every overlay under the root.
func (s Local) List() ([]Info, error) {
	var out []Info
	err := s.walk(func(dir string) {
		out = append(out, s.info(dir))
	}, nil)
	return out, err
}

func (s Local) info(dir string) Info {
	in := Info{Dir: dir}
	m, err := readMeta(dir)
	in.Meta = m
	if err != nil {
		in.Err = err.Error()
		if id, perr := nbd.ParseOverlayID(filepath.Base(dir)); perr == nil {
			in.ID = id
		}
	}
	if st, err := os.Stat(dir); err == nil {
		in.LastUsed = st.ModTime()
	}
	in.Allocated = allocated(filepath.Join(dir, DataFile))
	if l, err := lockDir(dir); errors.Is(err, ErrBusy) {
		in.Attached = true
	} else if err == nil {
		l.Close()
	}
	return in
}

// walk calls fn for each overlay directory under the root and leftover for each directory
// left by an interrupted creation or removal.
func (s Local) walk(fn func(dir string), leftover func(dir string)) error {
	exports, err := os.ReadDir(s.Root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range exports {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		clients, err := os.ReadDir(filepath.Join(s.Root, e.Name()))
		if err != nil {
			continue
		}
		for _, c := range clients {
			if !c.IsDir() {
				continue
			}
			cdir := filepath.Join(s.Root, e.Name(), c.Name())
			ovs, err := os.ReadDir(cdir)
			if err != nil {
				continue
			}
			for _, o := range ovs {
				if !o.IsDir() {
					continue
				}
				dir := filepath.Join(cdir, o.Name())
				if strings.HasPrefix(o.Name(), newPrefix) || strings.HasPrefix(o.Name(), gonePrefix) {
					if leftover != nil {
						leftover(dir)
					}
					continue
				}
				if _, err := nbd.ParseOverlayID(o.Name()); err == nil {
					fn(dir)
				}
			}
		}
	}
	return nil
}

// Lookup finds an overlay by its ID, or by a unique prefix of it (at least 8 hex digits).
func (s Local) Lookup(prefix string) (Info, error) {
	if len(prefix) < 8 {
		return Info{}, fmt.Errorf("overlay ID %q: give at least 8 hex digits", prefix)
	}
	var found []string
	s.walk(func(dir string) {
		if strings.HasPrefix(filepath.Base(dir), prefix) {
			found = append(found, dir)
		}
	}, nil)
	switch len(found) {
	case 0:
		return Info{}, fmt.Errorf("overlay %s: %w", prefix, ErrGone)
	case 1:
		return s.info(found[0]), nil
	}
	return Info{}, fmt.Errorf("overlay ID %q is ambiguous: %d overlays start with it", prefix, len(found))
}

// Remove deletes the overlay in dir. It returns ErrBusy, removing nothing, while someone
// holds the overlay, and ErrGone when it is not there.
func (s Local) Remove(dir string) error {
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if !stillAt(lock, dir) {
		return ErrGone
	}
	parent := filepath.Dir(dir)
	gone := filepath.Join(parent, gonePrefix+filepath.Base(dir))
	if err := os.Rename(dir, gone); err != nil {
		return err
	}
	// Once the rename is durable no crash can bring the overlay back.
	if err := SyncDir(parent); err != nil {
		return err
	}
	if err := os.RemoveAll(gone); err != nil {
		return err
	}
	os.Remove(parent) // the client directory, if that was its last overlay
	return nil
}

// Reap removes the temporary overlays nobody holds whose last use lies more than grace
// before now; a last use before notBefore (when the server started) counts as notBefore,
// so overlays found at a start get their whole grace period after it. It also removes the
// leftovers of creations and removals a crash interrupted. It returns what it removed.
func (s Local) Reap(now, notBefore time.Time, grace time.Duration) ([]Meta, error) {
	var removed []Meta
	var errs []error
	err := s.walk(func(dir string) {
		m, err := readMeta(dir)
		if err != nil || m.Kind != Temporary {
			return // persistent or unreadable: only an administrator removes those
		}
		st, err := os.Stat(dir)
		if err != nil {
			return
		}
		last := st.ModTime()
		if last.Before(notBefore) {
			last = notBefore
		}
		if now.Sub(last) < grace {
			return
		}
		switch err := s.Remove(dir); {
		case err == nil:
			removed = append(removed, m)
		case errors.Is(err, ErrBusy), errors.Is(err, ErrGone):
		default:
			errs = append(errs, fmt.Errorf("reaping %s: %w", dir, err))
		}
	}, func(dir string) {
		if l, err := lockDir(dir); err == nil {
			os.RemoveAll(dir)
			l.Close()
		}
	})
	if err != nil {
		errs = append(errs, err)
	}
	return removed, errors.Join(errs...)
}

func readMeta(dir string) (Meta, error) {
	b, err := os.ReadFile(filepath.Join(dir, MetaFile))
	if err != nil {
		return Meta{}, err
	}
	m, err := parseMeta(b)
	if err != nil {
		return m, fmt.Errorf("%s: %w", filepath.Join(dir, MetaFile), err)
	}
	return m, nil
}

// parseMeta decodes a meta.json, from a directory or an object store.
func parseMeta(data []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(data, &m); err != nil {
		return m, err
	}
	if m.Version != MetaVersion {
		return m, fmt.Errorf("version %d, this nbdroot reads version %d", m.Version, MetaVersion)
	}
	return m, nil
}

// escape turns a name into one safe file name: identity characters stay, anything else
// (and a leading dot) becomes %XX; long names are shortened and made unique with a hash.
func escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if safeChar(c) && !(i == 0 && c == '.') {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	out := b.String()
	if len(out) > 120 {
		h := sha256.Sum256([]byte(s))
		out = out[:80] + "~" + hex.EncodeToString(h[:8])
	}
	return out
}

func safeChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '.' || c == '_' || c == ':' || c == '-'
}

// MkdirAllSynced creates dir and its missing parents (up to root, when root is not "")
// and makes their names durable: each new directory's parent is fsynced. It is the one
// place the server makes directories that must survive a crash (overlays, tree exports).
func MkdirAllSynced(root, dir string) error {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		missing = append(missing, d)
		if d == root || d == filepath.Dir(d) {
			break
		}
	}
	if len(missing) == 0 {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for _, d := range missing {
		if err := SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
	}
	return nil
}

func writeFileSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// SyncDir fsyncs a directory, making the names in it durable.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
