package nbd

import (
	"fmt"
	"strings"
)

// Metadata contexts (proto.md "Metadata querying").
const (
	// MetaBaseAllocation is the one context the protocol itself defines: whether extents are
	// allocated (NBD_STATE_HOLE) and whether they read as zeroes (NBD_STATE_ZERO).
	MetaBaseAllocation = "base:allocation"

	// StateHole marks an extent not allocated in the backing store (base:allocation bit 0).
	StateHole uint32 = 1 << 0
	// StateZero marks an extent that reads as all zeroes (base:allocation bit 1).
	StateZero uint32 = 1 << 1
)

// Sizes of structured reply payload pieces.
const (
	// OffsetDataHeaderSize is a structured chunk header plus the 8-byte offset that starts an
	// NBD_REPLY_TYPE_OFFSET_DATA payload; the data itself follows.
	OffsetDataHeaderSize = StructuredReplyHdr + 8
	// OffsetHoleSize is a whole NBD_REPLY_TYPE_OFFSET_HOLE chunk.
	OffsetHoleSize = StructuredReplyHdr + 12
	// ExtentSize is one block status descriptor (length u32, flags u32).
	ExtentSize = 8
)

// AppendOffsetDataHeader appends the chunk header and offset of an NBD_REPLY_TYPE_OFFSET_DATA
// chunk carrying n bytes of data; the caller appends (or writes) the n data bytes after it.
func AppendOffsetDataHeader(b []byte, handle uint64, flags uint16, offset uint64, n uint32) []byte {
	b = AppendStructuredReply(b, StructuredReply{Flags: flags, Type: ReplyTypeOffsetData, Handle: handle, Length: 8 + n})
	return be.AppendUint64(b, offset)
}

// AppendOffsetHole appends a whole NBD_REPLY_TYPE_OFFSET_HOLE chunk: size bytes at offset
// read as zeroes.
func AppendOffsetHole(b []byte, handle uint64, flags uint16, offset uint64, size uint32) []byte {
	b = AppendStructuredReply(b, StructuredReply{Flags: flags, Type: ReplyTypeOffsetHole, Handle: handle, Length: 12})
	b = be.AppendUint64(b, offset)
	return be.AppendUint32(b, size)
}

// Extent is one block status descriptor.
type Extent struct {
	Length uint32
	Flags  uint32
}

// AppendBlockStatus appends an NBD_REPLY_TYPE_BLOCK_STATUS chunk for one metadata context.
func AppendBlockStatus(b []byte, handle uint64, flags uint16, contextID uint32, extents []Extent) []byte {
	b = AppendStructuredReply(b, StructuredReply{Flags: flags, Type: ReplyTypeBlockStatus, Handle: handle,
		Length: uint32(4 + ExtentSize*len(extents))})
	b = be.AppendUint32(b, contextID)
	for _, e := range extents {
		b = be.AppendUint32(b, e.Length)
		b = be.AppendUint32(b, e.Flags)
	}
	return b
}

// ParseBlockStatus decodes the payload of an NBD_REPLY_TYPE_BLOCK_STATUS chunk.
func ParseBlockStatus(b []byte) (contextID uint32, extents []Extent, err error) {
	if len(b) < 4+ExtentSize || (len(b)-4)%ExtentSize != 0 {
		return 0, nil, fmt.Errorf("block status payload of %d bytes: %w", len(b), ErrMalformed)
	}
	contextID, b = be.Uint32(b), b[4:]
	extents = make([]Extent, len(b)/ExtentSize)
	for i := range extents {
		extents[i] = Extent{Length: be.Uint32(b[8*i:]), Flags: be.Uint32(b[8*i+4:])}
	}
	return contextID, extents, nil
}

// MaxErrorMessage bounds the human-readable text of an error chunk (a 16-bit length on the
// wire; proto.md strings SHOULD stay under 4096 bytes).
const MaxErrorMessage = 4096

// AppendErrorChunk appends an NBD_REPLY_TYPE_ERROR chunk with an optional message, which is
// cut to MaxErrorMessage bytes.
func AppendErrorChunk(b []byte, handle uint64, flags uint16, errno uint32, msg string) []byte {
	if len(msg) > MaxErrorMessage {
		msg = msg[:MaxErrorMessage]
	}
	b = AppendStructuredReply(b, StructuredReply{Flags: flags, Type: ReplyTypeError, Handle: handle, Length: uint32(6 + len(msg))})
	b = be.AppendUint32(b, errno)
	b = be.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// ParseErrorChunk decodes the payload of an NBD_REPLY_TYPE_ERROR or ERROR_OFFSET chunk.
func ParseErrorChunk(b []byte) (errno uint32, msg string, err error) {
	if len(b) < 6 {
		return 0, "", fmt.Errorf("error chunk of %d bytes: %w", len(b), ErrMalformed)
	}
	errno, n := be.Uint32(b), int(be.Uint16(b[4:]))
	if n > len(b)-6 {
		return 0, "", fmt.Errorf("error chunk message of %d bytes in %d: %w", n, len(b)-6, ErrMalformed)
	}
	return errno, string(b[6 : 6+n]), nil
}

// MetaContextRequest is the data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT:
// the export the client means and its queries (proto.md "NBD_OPT_LIST_META_CONTEXT").
type MetaContextRequest struct {
	Export  string
	Queries []string
}

// MaxMetaQueries bounds the number of queries a server accepts in one meta context option; the
// option length already bounds the bytes, this bounds the slice a peer makes us allocate.
const MaxMetaQueries = 256

// AppendMetaContextRequest appends the wire form of r.
func AppendMetaContextRequest(b []byte, r MetaContextRequest) []byte {
	b = be.AppendUint32(b, uint32(len(r.Export)))
	b = append(b, r.Export...)
	b = be.AppendUint32(b, uint32(len(r.Queries)))
	for _, q := range r.Queries {
		b = be.AppendUint32(b, uint32(len(q)))
		b = append(b, q...)
	}
	return b
}

// ParseMetaContextRequest decodes meta context option data, checking every length against the
// bytes actually present.
func ParseMetaContextRequest(b []byte) (MetaContextRequest, error) {
	var r MetaContextRequest
	name, b, err := takeString(b, "export name")
	if err != nil {
		return r, err
	}
	r.Export = name
	if len(b) < 4 {
		return r, fmt.Errorf("meta context: query count: %w", ErrMalformed)
	}
	n := be.Uint32(b)
	b = b[4:]
	// Each query needs at least its 4-byte length, so a count beyond len/4 is a lie.
	if uint64(n) > uint64(len(b)/4) || n > MaxMetaQueries {
		return r, fmt.Errorf("meta context: %d queries in %d bytes: %w", n, len(b), ErrMalformed)
	}
	r.Queries = make([]string, 0, n)
	for i := uint32(0); i < n; i++ {
		var q string
		if q, b, err = takeString(b, "query"); err != nil {
			return r, err
		}
		r.Queries = append(r.Queries, q)
	}
	if len(b) != 0 {
		return r, fmt.Errorf("meta context: %d trailing bytes: %w", len(b), ErrMalformed)
	}
	return r, nil
}

func takeString(b []byte, what string) (string, []byte, error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("meta context: %s length: %w", what, ErrMalformed)
	}
	n := be.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) || n > MaxNameLength {
		return "", nil, fmt.Errorf("meta context: %s of %d bytes in %d: %w", what, n, len(b), ErrMalformed)
	}
	return string(b[:n]), b[n:], nil
}

// AppendMetaContextReply appends the data of an NBD_REP_META_CONTEXT reply.
func AppendMetaContextReply(b []byte, id uint32, name string) []byte {
	b = be.AppendUint32(b, id)
	return append(b, name...)
}

// MetaNamespace splits a metadata context query into its namespace ("base") and the rest
// ("allocation"); ok is false when the query has no namespace.
func MetaNamespace(q string) (ns, rest string, ok bool) {
	return strings.Cut(q, ":")
}

// AppendServerReply appends the data of an NBD_REP_SERVER reply to NBD_OPT_LIST: the export
// name and an optional human-readable description.
func AppendServerReply(b []byte, name, description string) []byte {
	b = be.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	return append(b, description...)
}
