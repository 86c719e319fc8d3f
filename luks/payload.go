package luks

import (
	"errors"
	"fmt"
	"io"
)

// payloadChunk is how much EncryptPayload encrypts per write: a multiple of every sector
// size, large enough that writes are efficient.
const payloadChunk = 1 << 20

// EncryptPayload encrypts src into the data segment of the volume, writing to dst at the
// segment's offset: what writing src through /dev/mapper/NAME would put on the device,
// without dm-crypt. A final partial sector is padded with zeros. It returns the number of
// plaintext bytes written (src's length rounded up to a whole sector).
//
// It is for building encrypted images on a host with no dm-crypt (test fixtures: format a
// file with cryptsetup luksFormat, Open it, Unlock, EncryptPayload an ext4 image into it).
// dst is usually the same file, opened for writing.
func (v *Volume) EncryptPayload(dst io.WriterAt, src io.Reader, key *VolumeKey) (int64, error) {
	c, err := v.Segment.NewSectorCipher(key.Bytes())
	if err != nil {
		return 0, fmt.Errorf("luks: payload: %w", err)
	}
	ss := int64(c.SectorSize())
	buf := make([]byte, payloadChunk)
	defer wipe(buf) // it held plaintext
	var done int64
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			whole := (int64(n) + ss - 1) / ss * ss
			clear(buf[n:whole])
			if !v.Segment.Dynamic && done+whole > v.Segment.Size {
				return done, fmt.Errorf("luks: payload: more than the segment's %d bytes", v.Segment.Size)
			}
			chunk := buf[:whole]
			if err := c.Encrypt(chunk, chunk, uint64(done/ss)); err != nil {
				return done, fmt.Errorf("luks: payload: %w", err)
			}
			if _, err := dst.WriteAt(chunk, v.Segment.Offset+done); err != nil {
				return done, fmt.Errorf("luks: payload: %w", err)
			}
			done += whole
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return done, nil
		}
		if rerr != nil {
			return done, fmt.Errorf("luks: payload: reading the plaintext: %w", rerr)
		}
	}
}
