package nbdserver

import (
	"math/bits"
	"sync"
)

// buffer is a pooled byte slice. Buffers come in power-of-two classes from 4 KiB to 32 MiB so
// a 4 KiB read never pins a 32 MiB slab, and steady-state I/O allocates nothing.
type buffer struct {
	b     []byte
	class int
	// acct, if set, was charged for this buffer (replyAcct.charge); release credits it.
	acct    *replyAcct
	charged int64
}

const (
	minBufShift = 12 // 4 KiB
	maxBufShift = 25 // 32 MiB = nbd.MaxPayload
)

var bufPools [maxBufShift - minBufShift + 1]sync.Pool

// bufClass is the pool class of an n-byte buffer.
func bufClass(n int) int {
	if n > 1<<minBufShift {
		return bits.Len(uint(n-1)) - minBufShift
	}
	return 0
}

// bufSize is the capacity, and so the memory, of a buffer for n bytes.
func bufSize(n int) int { return 1 << (bufClass(n) + minBufShift) }

// getBuffer returns a buffer with len(b) == n (n ≤ 32 MiB).
func getBuffer(n int) *buffer {
	class := bufClass(n)
	if v := bufPools[class].Get(); v != nil {
		buf := v.(*buffer)
		buf.b = buf.b[:n]
		return buf
	}
	return &buffer{b: make([]byte, n, 1<<(class+minBufShift)), class: class}
}

// release returns the buffer to its pool; the caller must not touch it afterwards.
func (b *buffer) release() {
	if b.acct != nil {
		b.acct.credit(b.charged)
		b.acct, b.charged = nil, 0
	}
	bufPools[b.class].Put(b)
}

// releaser is something a reply writer gives back once the bytes it lent are on the wire.
type releaser interface{ release() }
