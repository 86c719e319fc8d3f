package objstore

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"slices"
	"strings"
	"sync"
	"time"
)

// Mem is an in-memory Bucket with the semantics tests rely on: strong consistency,
// conditional writes, ranged reads. Fail, when set, is consulted before every operation
// and may return an error to inject a fault (a store outage, a slow request).
type Mem struct {
	mu   sync.Mutex
	name string
	objs map[string]memObject
	// Fail is called with the operation ("get", "put", "delete", "head", "list") and key.
	Fail func(op, key string) error
	// IgnoreConditions makes it a store that does not honour conditional writes.
	IgnoreConditions bool
	// Counts of operations served, by operation.
	counts map[string]int
}

type memObject struct {
	data []byte
	Attrs
}

// NewMem returns an empty in-memory bucket.
func NewMem(name string) *Mem {
	return &Mem{name: name, objs: map[string]memObject{}, counts: map[string]int{}}
}

var _ Bucket = (*Mem)(nil)

// Name is the bucket's name.
func (m *Mem) Name() string { return m.name }

// Count returns how many operations of a kind were served.
func (m *Mem) Count(op string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.counts[op]
}

// Keys lists the stored keys with the given prefix, sorted.
func (m *Mem) Keys(prefix string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for k := range m.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (m *Mem) enter(op, key string) error {
	m.mu.Lock()
	f := m.Fail
	m.counts[op]++
	m.mu.Unlock()
	if f != nil {
		if err := f(op, key); err != nil {
			return &OpError{Op: op, URL: URL{m.name, key}, Err: err}
		}
	}
	return nil
}

func (m *Mem) notFound(op, key string) error {
	return &OpError{Op: op, URL: URL{m.name, key}, Err: ErrNotFound}
}

func (m *Mem) Get(ctx context.Context, key string) ([]byte, Attrs, error) {
	if err := m.enter("get", key); err != nil {
		return nil, Attrs{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if !ok {
		return nil, Attrs{}, m.notFound("get", key)
	}
	return slices.Clone(o.data), o.Attrs, nil
}

func (m *Mem) ReadRange(ctx context.Context, key string, p []byte, off int64, ifMatch string) (int, error) {
	if err := m.enter("get", key); err != nil {
		return 0, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if !ok {
		return 0, m.notFound("get", key)
	}
	if ifMatch != "" && ifMatch != o.ETag {
		return 0, &OpError{Op: "get", URL: URL{m.name, key}, Err: ErrPrecondition}
	}
	if off >= int64(len(o.data)) {
		return 0, nil
	}
	return copy(p, o.data[off:]), nil
}

func (m *Mem) Head(ctx context.Context, key string) (Attrs, error) {
	if err := m.enter("head", key); err != nil {
		return Attrs{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if !ok {
		return Attrs{}, m.notFound("head", key)
	}
	return o.Attrs, nil
}

func (m *Mem) Put(ctx context.Context, key string, data []byte, c Cond) (string, error) {
	if err := m.enter("put", key); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if m.IgnoreConditions {
		c = Cond{}
	}
	if c.IfNoneMatch && ok || c.IfMatch != "" && (!ok || o.ETag != c.IfMatch) {
		if c.IfMatch != "" && !ok {
			return "", m.notFound("put", key)
		}
		return "", &OpError{Op: "put", URL: URL{m.name, key}, Err: ErrPrecondition}
	}
	sum := md5.Sum(data)
	etag := `"` + hex.EncodeToString(sum[:]) + `"`
	m.objs[key] = memObject{data: slices.Clone(data), Attrs: Attrs{Size: int64(len(data)), ETag: etag, Modified: time.Now()}}
	return etag, nil
}

func (m *Mem) Delete(ctx context.Context, key, ifMatch string) error {
	if err := m.enter("delete", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.objs[key]
	if ifMatch != "" {
		if !ok {
			return m.notFound("delete", key)
		}
		if o.ETag != ifMatch {
			return &OpError{Op: "delete", URL: URL{m.name, key}, Err: ErrPrecondition}
		}
	}
	delete(m.objs, key)
	return nil
}

func (m *Mem) List(ctx context.Context, prefix string, fn func(Object) error) error {
	if err := m.enter("list", prefix); err != nil {
		return err
	}
	m.mu.Lock()
	var out []Object
	for k, o := range m.objs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, Object{Key: k, Attrs: o.Attrs})
		}
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Object) int { return strings.Compare(a.Key, b.Key) })
	for _, o := range out {
		if err := fn(o); err != nil {
			return err
		}
	}
	return nil
}
