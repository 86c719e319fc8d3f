package objstore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Errors every Bucket returns (wrapped in an *OpError), so callers decide on values.
var (
	// ErrNotFound says the object does not exist.
	ErrNotFound = errors.New("no such object")
	// ErrPrecondition says a conditional request found the object not as required: it
	// exists (If-None-Match: *) or has another ETag (If-Match) — someone else wrote it.
	ErrPrecondition = errors.New("precondition failed (the object was changed by someone else)")
)

// OpError is a failed store operation: what, on which object, and why.
type OpError struct {
	Op  string // "get", "put", "delete", "head", "list"
	URL URL
	Err error
}

func (e *OpError) Error() string { return fmt.Sprintf("%s %s: %v", e.Op, e.URL, e.Err) }

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Attrs describe a stored object.
type Attrs struct {
	Size     int64
	ETag     string // as the store sends it, quotes included
	Modified time.Time
}

// Object is one entry of a listing.
type Object struct {
	Key string
	Attrs
}

// Cond makes a write conditional (RFC 9110 section 13.1, as S3 implements it for PUT and
// DELETE): IfNoneMatch writes only when the key does not exist yet (If-None-Match: *),
// IfMatch only when the object's current ETag is the one given.
type Cond struct {
	IfNoneMatch bool
	IfMatch     string
}

// Bucket is one bucket of an object store. Implementations are safe for concurrent use.
type Bucket interface {
	// Name is the bucket's name.
	Name() string
	// Get returns a whole object (meant for small ones: manifests, leases) and its
	// attributes.
	Get(ctx context.Context, key string) ([]byte, Attrs, error)
	// ReadRange fills p from offset off of the object with a ranged GET, failing with
	// ErrPrecondition when ifMatch is set and the object's ETag differs. It returns the
	// number of bytes read, less than len(p) only at the end of the object.
	ReadRange(ctx context.Context, key string, p []byte, off int64, ifMatch string) (int, error)
	// Head returns an object's attributes.
	Head(ctx context.Context, key string) (Attrs, error)
	// Put stores data under key, if c allows, and returns the new ETag.
	Put(ctx context.Context, key string, data []byte, c Cond) (string, error)
	// Delete removes an object; ifMatch makes it conditional. Deleting a missing object
	// succeeds (S3 semantics) unless ifMatch is set.
	Delete(ctx context.Context, key, ifMatch string) error
	// List calls fn for every object whose key starts with prefix, in key order.
	List(ctx context.Context, prefix string, fn func(Object) error) error
}
