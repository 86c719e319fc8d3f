package luks

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/binary"
	"fmt"
	"hash"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/ripemd160" //nolint:staticcheck // LUKS1 allows ripemd160; we only read such headers.
)

// KDF types as the LUKS2 JSON names them (LUKS2 spec §3.2.1). LUKS1 keyslots are always
// PBKDF2.
const (
	KDFPBKDF2   = "pbkdf2"
	KDFArgon2i  = "argon2i"
	KDFArgon2id = "argon2id"
)

// Bounds on Argon2 parameters. Memory follows cryptsetup's limits (lib/utils_pbkdf.c:
// 32 KiB..4 GiB): a header asking for more is not one cryptsetup could have written, so we
// refuse it rather than allocate what it asks. cryptsetup writes at most 4 threads; other
// writers may use more, so the thread bound is looser.
const (
	argon2MaxMemoryKiB = 4 * 1024 * 1024 // 4 GiB
	argon2MinMemoryKiB = 32
	argon2MaxThreads   = 16
)

// newHash returns the constructor of a hash named as in LUKS headers (LUKS1 hash-spec,
// LUKS2 "hash" fields), which use the kernel/gcrypt names.
func newHash(name string) (func() hash.Hash, error) {
	switch strings.ToLower(name) {
	case "sha1":
		return sha1.New, nil
	case "sha224":
		return sha256.New224, nil
	case "sha256":
		return sha256.New, nil
	case "sha384":
		return sha512.New384, nil
	case "sha512":
		return sha512.New, nil
	case "ripemd160":
		return ripemd160.New, nil
	}
	return nil, &UnsupportedError{What: "hash", Name: name}
}

// deriveKey runs the keyslot KDF over the passphrase and returns keyLen bytes. The caller
// owns (and must wipe) the result; the passphrase is only read.
func (k *KDF) deriveKey(passphrase []byte, keyLen int, maxMemoryKiB uint32) ([]byte, error) {
	switch k.Type {
	case KDFPBKDF2:
		h, err := newHash(k.Hash)
		if err != nil {
			return nil, err
		}
		if k.Iterations == 0 {
			return nil, fmt.Errorf("pbkdf2 with 0 iterations")
		}
		return pbkdf2(h, passphrase, k.Salt, k.Iterations, keyLen), nil
	case KDFArgon2i, KDFArgon2id:
		if err := k.checkArgon2(); err != nil {
			return nil, err
		}
		if maxMemoryKiB != 0 && k.Memory > maxMemoryKiB {
			return nil, fmt.Errorf("%s needs %d KiB of memory, over the limit of %d KiB", k.Type, k.Memory, maxMemoryKiB)
		}
		// x/crypto/argon2 runs one goroutine per lane, so the keyslot's "cpus" is both the
		// lane count the hash is defined by and the parallelism we get, as in libargon2.
		if k.Type == KDFArgon2i {
			return argon2.Key(passphrase, k.Salt, k.Time, k.Memory, uint8(k.CPUs), uint32(keyLen)), nil
		}
		return argon2.IDKey(passphrase, k.Salt, k.Time, k.Memory, uint8(k.CPUs), uint32(keyLen)), nil
	}
	return nil, &UnsupportedError{What: "kdf", Name: k.Type}
}

// checkArgon2 validates Argon2 costs against the limits cryptsetup accepts.
func (k *KDF) checkArgon2() error {
	switch {
	case k.Time == 0:
		return fmt.Errorf("%s with time cost 0", k.Type)
	case k.CPUs == 0 || k.CPUs > argon2MaxThreads:
		return fmt.Errorf("%s with %d threads (want 1..%d)", k.Type, k.CPUs, argon2MaxThreads)
	case k.Memory < argon2MinMemoryKiB || k.Memory > argon2MaxMemoryKiB:
		return fmt.Errorf("%s with %d KiB of memory (want %d..%d)", k.Type, k.Memory, argon2MinMemoryKiB, argon2MaxMemoryKiB)
	case k.Memory < 8*k.CPUs:
		// RFC 9106 §3.1: m must be at least 8*p KiB.
		return fmt.Errorf("%s with %d KiB of memory for %d threads (want at least %d)", k.Type, k.Memory, k.CPUs, 8*k.CPUs)
	}
	return nil
}

// pbkdf2 is PBKDF2 (RFC 8018 §5.2) with HMAC over h. It is ours rather than crypto/pbkdf2
// because that one takes the password as a string (a copy we could not wipe) and keeps its
// HMAC pads out of reach; this one pre-keys the HMAC once (the inner and outer states after
// absorbing ipad/opad are saved and restored per message, as OpenSSL does), which is as fast
// as the standard library, and wipes every intermediate before it returns.
//
// The output blocks T_1, T_2, … are independent, so when the key is longer than one digest
// (a 512-bit XTS key from SHA-256 is two blocks, LUKS2's default) they are computed on
// separate cores: the unlock takes the time of one block, where cryptsetup (OpenSSL)
// computes them one after the other.
func pbkdf2(h func() hash.Hash, password, salt []byte, iter uint32, keyLen int) []byte {
	size := h().Size()
	blocks := (keyLen + size - 1) / size
	out := make([]byte, blocks*size)
	workers := min(blocks, runtime.GOMAXPROCS(0))
	if workers <= 1 || iter < 1000 {
		// Not worth a goroutine: one core, one block, or a trivial count (digests of
		// test images, AF checks).
		prf := newHMAC(h, password)
		for b := range blocks {
			pbkdf2Block(prf, salt, iter, uint32(b+1), out[b*size:(b+1)*size])
		}
		prf.wipe()
	} else {
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				prf := newHMAC(h, password)
				defer prf.wipe()
				for b := w; b < blocks; b += workers {
					pbkdf2Block(prf, salt, iter, uint32(b+1), out[b*size:(b+1)*size])
				}
			}()
		}
		wg.Wait()
	}
	wipe(out[keyLen:])
	return out[:keyLen]
}

// pbkdf2Block computes T_block = U_1 xor … xor U_iter into t.
func pbkdf2Block(prf *hmacState, salt []byte, iter, block uint32, t []byte) {
	u := make([]byte, prf.size)
	defer wipe(u)
	var ctr [4]byte
	binary.BigEndian.PutUint32(ctr[:], block)
	prf.sum(u, salt, ctr[:])
	copy(t, u)
	for i := uint32(1); i < iter; i++ {
		prf.sum(u, u)
		for j := range t {
			t[j] ^= u[j]
		}
	}
}

// hmacState is HMAC (RFC 2104) keyed once: inner and outer hold the hash state after the
// key pads, saved so each message costs two compressions and no re-keying.
type hmacState struct {
	inner, outer   hash.Hash
	istate, ostate []byte // marshaled states after ipad/opad; nil when h cannot marshal
	ipad, opad     []byte // kept only for hashes that cannot marshal their state
	size           int
}

func newHMAC(h func() hash.Hash, key []byte) *hmacState {
	s := &hmacState{inner: h(), outer: h()}
	bs := s.inner.BlockSize()
	s.size = s.inner.Size()
	k := make([]byte, bs)
	defer wipe(k)
	if len(key) > bs {
		s.inner.Write(key)
		s.inner.Sum(k[:0])
		s.inner.Reset()
	} else {
		copy(k, key)
	}
	s.ipad = make([]byte, bs)
	s.opad = make([]byte, bs)
	for i := range k {
		s.ipad[i] = k[i] ^ 0x36
		s.opad[i] = k[i] ^ 0x5c
	}
	s.inner.Write(s.ipad)
	s.outer.Write(s.opad)
	im, ok1 := s.inner.(encoding.BinaryMarshaler)
	om, ok2 := s.outer.(encoding.BinaryMarshaler)
	_, ok3 := s.inner.(encoding.BinaryUnmarshaler)
	if ok1 && ok2 && ok3 {
		var err1, err2 error
		s.istate, err1 = im.MarshalBinary()
		s.ostate, err2 = om.MarshalBinary()
		if err1 == nil && err2 == nil {
			wipe(s.ipad)
			wipe(s.opad)
			s.ipad, s.opad = nil, nil
		} else {
			s.istate, s.ostate = nil, nil
		}
	}
	return s
}

// sum writes HMAC(key, concat(msgs)) into out, which must hold size bytes and may alias a
// message.
func (s *hmacState) sum(out []byte, msgs ...[]byte) {
	s.reset(s.inner, s.istate, s.ipad)
	for _, m := range msgs {
		s.inner.Write(m)
	}
	in := s.inner.Sum(out[:0])
	s.reset(s.outer, s.ostate, s.opad)
	s.outer.Write(in)
	s.outer.Sum(out[:0])
}

func (s *hmacState) reset(h hash.Hash, state, pad []byte) {
	if state != nil {
		// Cannot fail: the state was produced by the same hash type.
		_ = h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state)
		return
	}
	h.Reset()
	h.Write(pad)
}

// wipe clears what this HMAC holds that derives from the key. The hash objects' own
// internal buffers are reset too, which is the best Go lets us do for them.
func (s *hmacState) wipe() {
	wipe(s.istate)
	wipe(s.ostate)
	wipe(s.ipad)
	wipe(s.opad)
	s.inner.Reset()
	s.outer.Reset()
}

// wipe overwrites b with zeros. Key material goes through here when it is no longer needed.
func wipe(b []byte) {
	clear(b)
}
