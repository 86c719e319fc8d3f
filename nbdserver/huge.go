package nbdserver

import (
	"github.com/nbdroot/nbdroot/nbd"
)

// Requests longer than nbd.MaxPayload.
//
// We advertise a 32 MiB maximum block size (NBD_INFO_BLOCK_SIZE), but a client that never
// asked for block size information — every NBD_OPT_EXPORT_NAME client, and nbd-tester-client's
// integrityhuge test, which sends reads and writes of up to 47.6 MiB — is not bound by it
// (proto.md "Block size constraints": a server SHOULD accept such requests or reply EINVAL,
// and for a WRITE it cannot reply without reading the payload). nbd-server serves them, so a
// drop-in does too: streamed through one hugeChunk buffer, so the memory such a request
// pins is bounded whatever its length. The reader serves them itself: they are rare, and a
// reader busy with one only delays the requests behind it.

// hugeChunk is the most memory one huge request holds at a time.
const hugeChunk = 4 << 20

// writeHuge stores a WRITE longer than nbd.MaxPayload, reading its payload chunk by chunk.
// Once a chunk fails, the rest of the payload is read and dropped and the error is replied.
func (t *tx) writeHuge(r nbd.Request) error {
	if errno, msg := t.checkWrite(r); errno != 0 {
		if err := t.skip(int(r.Length)); err != nil {
			return err
		}
		return t.replyError(r, errno, msg)
	}
	t.stats.bytesWritten += uint64(r.Length)
	buf := getBuffer(hugeChunk)
	defer buf.release()
	var werr error
	off, rest := int64(r.Offset), int64(r.Length)
	for rest > 0 {
		p := buf.b[:min(rest, hugeChunk)]
		if err := t.in.readFull(p); err != nil {
			return err
		}
		if werr == nil {
			werr = t.be.WriteAt(p, off, false)
		}
		off, rest = off+int64(len(p)), rest-int64(len(p))
	}
	if werr == nil && (r.Flags&nbd.CmdFlagFUA != 0 || t.fuaAlways) {
		// FUA covers the whole request: one flush after its last chunk.
		werr = t.be.Flush()
	}
	if werr != nil {
		return t.replyError(r, errnoOf(werr), "write failed")
	}
	return t.replyOK(r)
}

// readHuge answers a READ longer than nbd.MaxPayload with one reply whose data is read and
// sent chunk by chunk while the reply writer is held: a simple reply's data cannot be
// interleaved with other replies, and one OFFSET_DATA chunk also honours DF. The first
// chunk is read before the header goes out, so a failing image gets an error reply; a
// failure after that leaves a reply that cannot be completed, and (proto.md "Simple reply
// message") the connection is closed.
func (t *tx) readHuge(r nbd.Request) error {
	buf := getBuffer(hugeChunk)
	defer buf.release()
	off, rest := int64(r.Offset), int64(r.Length)
	first := buf.b[:min(rest, hugeChunk)]
	if err := t.be.ReadAt(first, off); err != nil {
		return t.replyError(r, errnoOf(err), "read failed")
	}
	t.stats.bytesRead += uint64(r.Length)
	// What the reader has queued goes first, so the stream below is the only writer.
	if err := t.flush(); err != nil {
		return err
	}
	var hdr [nbd.OffsetDataHeaderSize]byte
	h := hdr[:nbd.SimpleReplySize]
	if t.structured {
		h = hdr[:]
	}
	t.readHeader(h[:0], r)
	return t.w.stream(func(send func(bufs ...[]byte) error) error {
		if err := send(h); err != nil {
			return err
		}
		p := first
		for {
			if err := send(p); err != nil {
				return err
			}
			off, rest = off+int64(len(p)), rest-int64(len(p))
			if rest == 0 {
				return nil
			}
			p = buf.b[:min(rest, hugeChunk)]
			if err := t.be.ReadAt(p, off); err != nil {
				return &BackendError{"read", off, int64(len(p)), err}
			}
		}
	}, nil)
}
