package storm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Bulk is one client copying a large file: sequential reads of Request bytes with Depth of
// them in flight, over [0, Size) of the export and around again, until its context ends.
// It is the background load of the fairness measurement.
type Bulk struct {
	Dial    Dialer
	Client  int // the client number Dial gets
	Export  string
	Size    uint64 // bytes of the export to read (rounded down to whole requests)
	Request uint32 // bytes per read (0: 256 KiB, what Linux's readahead sends for a big copy)
	Depth   int    // reads in flight (0: 8)
}

// Run reads until ctx ends and returns the bytes read. Its end by ctx is not an error.
func (b Bulk) Run(ctx context.Context) (int64, error) {
	req, depth := b.Request, b.Depth
	if req == 0 {
		req = 256 << 10
	}
	if depth <= 0 {
		depth = 8
	}
	blocks := b.Size / uint64(req)
	if blocks == 0 {
		return 0, errors.New("bulk: export smaller than one request")
	}
	c, err := connect(ctx, b.Dial, b.Client, b.Export, true)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var total int64
	next := uint64(0)
	send := func() error {
		off := (next % blocks) * uint64(req)
		next++
		_, err := c.Write(nbd.AppendRequest(nil, nbd.Request{Type: nbd.CmdRead, Handle: next, Offset: off, Length: req}))
		return err
	}
	for i := 0; i < depth; i++ {
		if err := send(); err != nil {
			return total, bulkErr(ctx, err)
		}
	}
	br := bufio.NewReaderSize(c, 256<<10)
	var hdr [nbd.SimpleReplySize]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return total, bulkErr(ctx, err)
		}
		r, err := nbd.ParseSimpleReply(hdr[:])
		if err != nil {
			return total, err
		}
		if r.Error != 0 {
			return total, fmt.Errorf("bulk READ: %w", nbd.Errno(r.Error))
		}
		n, err := br.Discard(int(req))
		total += int64(n)
		if err != nil {
			return total, bulkErr(ctx, err)
		}
		if err := send(); err != nil {
			return total, bulkErr(ctx, err)
		}
	}
}

// bulkErr turns the deadline that ended a cancelled run into success.
func bulkErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
