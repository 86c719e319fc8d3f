package nbd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

var be = binary.BigEndian

// Request is a transmission-phase request header (28 bytes on the wire).
type Request struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Offset uint64
	Length uint32
}

// AppendRequest appends the wire form of r to b.
func AppendRequest(b []byte, r Request) []byte {
	b = be.AppendUint32(b, RequestMagic)
	b = be.AppendUint16(b, r.Flags)
	b = be.AppendUint16(b, r.Type)
	b = be.AppendUint64(b, r.Handle)
	b = be.AppendUint64(b, r.Offset)
	return be.AppendUint32(b, r.Length)
}

// ParseRequest decodes a 28-byte request header.
func ParseRequest(b []byte) (Request, error) {
	if len(b) < RequestSize {
		return Request{}, fmt.Errorf("request header: %w", io.ErrUnexpectedEOF)
	}
	if m := be.Uint32(b); m != RequestMagic {
		return Request{}, &MagicError{What: "request", Got: uint64(m), Want: uint64(RequestMagic)}
	}
	return Request{
		Flags:  be.Uint16(b[4:]),
		Type:   be.Uint16(b[6:]),
		Handle: be.Uint64(b[8:]),
		Offset: be.Uint64(b[16:]),
		Length: be.Uint32(b[24:]),
	}, nil
}

// SimpleReply is a transmission-phase simple reply header (16 bytes on the wire).
type SimpleReply struct {
	Error  uint32
	Handle uint64
}

// AppendSimpleReply appends the wire form of r to b.
func AppendSimpleReply(b []byte, r SimpleReply) []byte {
	b = be.AppendUint32(b, SimpleReplyMagic)
	b = be.AppendUint32(b, r.Error)
	return be.AppendUint64(b, r.Handle)
}

// ParseSimpleReply decodes a 16-byte simple reply header.
func ParseSimpleReply(b []byte) (SimpleReply, error) {
	if len(b) < SimpleReplySize {
		return SimpleReply{}, fmt.Errorf("reply header: %w", io.ErrUnexpectedEOF)
	}
	if m := be.Uint32(b); m != SimpleReplyMagic {
		return SimpleReply{}, &MagicError{What: "simple reply", Got: uint64(m), Want: uint64(SimpleReplyMagic)}
	}
	return SimpleReply{Error: be.Uint32(b[4:]), Handle: be.Uint64(b[8:])}, nil
}

// StructuredReply is a structured reply chunk header (20 bytes on the wire).
type StructuredReply struct {
	Flags  uint16
	Type   uint16
	Handle uint64
	Length uint32
}

// AppendStructuredReply appends the wire form of r to b.
func AppendStructuredReply(b []byte, r StructuredReply) []byte {
	b = be.AppendUint32(b, StructuredReplyMagic)
	b = be.AppendUint16(b, r.Flags)
	b = be.AppendUint16(b, r.Type)
	b = be.AppendUint64(b, r.Handle)
	return be.AppendUint32(b, r.Length)
}

// ParseStructuredReply decodes a 20-byte structured reply chunk header.
func ParseStructuredReply(b []byte) (StructuredReply, error) {
	if len(b) < StructuredReplyHdr {
		return StructuredReply{}, fmt.Errorf("structured reply header: %w", io.ErrUnexpectedEOF)
	}
	if m := be.Uint32(b); m != StructuredReplyMagic {
		return StructuredReply{}, &MagicError{What: "structured reply", Got: uint64(m), Want: uint64(StructuredReplyMagic)}
	}
	return StructuredReply{
		Flags:  be.Uint16(b[4:]),
		Type:   be.Uint16(b[6:]),
		Handle: be.Uint64(b[8:]),
		Length: be.Uint32(b[16:]),
	}, nil
}

// Option is a client option header; Length bytes of data follow it on the wire.
type Option struct {
	Option uint32
	Length uint32
}

// AppendOption appends an option header and its data to b.
func AppendOption(b []byte, opt uint32, data []byte) []byte {
	b = be.AppendUint64(b, IHaveOpt)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ParseOption decodes a 16-byte option header.
func ParseOption(b []byte) (Option, error) {
	if len(b) < OptionHeaderSize {
		return Option{}, fmt.Errorf("option header: %w", io.ErrUnexpectedEOF)
	}
	if m := be.Uint64(b); m != IHaveOpt {
		return Option{}, &MagicError{What: "option", Got: m, Want: IHaveOpt}
	}
	return Option{Option: be.Uint32(b[8:]), Length: be.Uint32(b[12:])}, nil
}

// OptReply is an option reply header; Length bytes of data follow it on the wire.
type OptReply struct {
	Option uint32
	Type   uint32
	Length uint32
}

// AppendOptReply appends an option reply header and its data to b.
func AppendOptReply(b []byte, opt, typ uint32, data []byte) []byte {
	b = be.AppendUint64(b, OptReplyMagic)
	b = be.AppendUint32(b, opt)
	b = be.AppendUint32(b, typ)
	b = be.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// ParseOptReply decodes a 20-byte option reply header.
func ParseOptReply(b []byte) (OptReply, error) {
	if len(b) < OptReplyHeaderSize {
		return OptReply{}, fmt.Errorf("option reply header: %w", io.ErrUnexpectedEOF)
	}
	if m := be.Uint64(b); m != OptReplyMagic {
		return OptReply{}, &MagicError{What: "option reply", Got: m, Want: OptReplyMagic}
	}
	return OptReply{Option: be.Uint32(b[8:]), Type: be.Uint32(b[12:]), Length: be.Uint32(b[16:])}, nil
}

// AppendInfoRequest appends the data of an NBD_OPT_INFO or NBD_OPT_GO option: the export name
// and the information types requested.
func AppendInfoRequest(b []byte, name string, infos ...uint16) []byte {
	b = be.AppendUint32(b, uint32(len(name)))
	b = append(b, name...)
	b = be.AppendUint16(b, uint16(len(infos)))
	for _, i := range infos {
		b = be.AppendUint16(b, i)
	}
	return b
}

// ErrMalformed reports option or reply data whose lengths do not add up.
var ErrMalformed = errors.New("malformed data")

// ParseInfoRequest decodes the data of an NBD_OPT_INFO or NBD_OPT_GO option.
func ParseInfoRequest(b []byte) (name string, infos []uint16, err error) {
	if len(b) < 4 {
		return "", nil, fmt.Errorf("info request: name length: %w", ErrMalformed)
	}
	n := be.Uint32(b)
	b = b[4:]
	if uint64(n) > uint64(len(b)) || n > MaxNameLength {
		return "", nil, fmt.Errorf("info request: name length %d of %d bytes: %w", n, len(b), ErrMalformed)
	}
	name, b = string(b[:n]), b[n:]
	if len(b) < 2 {
		return "", nil, fmt.Errorf("info request: request count: %w", ErrMalformed)
	}
	count := int(be.Uint16(b))
	b = b[2:]
	if len(b) != 2*count {
		return "", nil, fmt.Errorf("info request: %d requests in %d bytes: %w", count, len(b), ErrMalformed)
	}
	infos = make([]uint16, count)
	for i := range infos {
		infos[i] = be.Uint16(b[2*i:])
	}
	return name, infos, nil
}

// ExportInfo is what NBD_INFO_EXPORT and NBD_INFO_BLOCK_SIZE tell a client.
type ExportInfo struct {
	Name        string
	Description string
	Size        uint64
	Flags       uint16
	// MinBlock, PrefBlock and MaxBlock are zero when the server sent no NBD_INFO_BLOCK_SIZE.
	MinBlock, PrefBlock, MaxBlock uint32
	// HasOverlay says the server sent InfoNbdrootOverlay; Overlay is its ID (zero: the
	// export gives this client no overlay).
	HasOverlay bool
	Overlay    OverlayID
}

// AppendInfoExport appends an NBD_INFO_EXPORT reply payload.
func AppendInfoExport(b []byte, size uint64, flags uint16) []byte {
	b = be.AppendUint16(b, InfoExport)
	b = be.AppendUint64(b, size)
	return be.AppendUint16(b, flags)
}

// AppendInfoBlockSize appends an NBD_INFO_BLOCK_SIZE reply payload.
func AppendInfoBlockSize(b []byte, min, pref, max uint32) []byte {
	b = be.AppendUint16(b, InfoBlockSize)
	b = be.AppendUint32(b, min)
	b = be.AppendUint32(b, pref)
	return be.AppendUint32(b, max)
}

// AppendInfoString appends an NBD_INFO_NAME or NBD_INFO_DESCRIPTION reply payload.
func AppendInfoString(b []byte, typ uint16, s string) []byte {
	b = be.AppendUint16(b, typ)
	return append(b, s...)
}

// ParseInfo folds one NBD_REP_INFO payload into e. Unknown information types are ignored,
// as proto.md requires of clients.
func ParseInfo(b []byte, e *ExportInfo) error {
	if len(b) < 2 {
		return fmt.Errorf("info reply: %w", ErrMalformed)
	}
	typ, b := be.Uint16(b), b[2:]
	switch typ {
	case InfoExport:
		if len(b) != 10 {
			return fmt.Errorf("NBD_INFO_EXPORT of %d bytes: %w", len(b), ErrMalformed)
		}
		e.Size, e.Flags = be.Uint64(b), be.Uint16(b[8:])
	case InfoBlockSize:
		if len(b) != 12 {
			return fmt.Errorf("NBD_INFO_BLOCK_SIZE of %d bytes: %w", len(b), ErrMalformed)
		}
		e.MinBlock, e.PrefBlock, e.MaxBlock = be.Uint32(b), be.Uint32(b[4:]), be.Uint32(b[8:])
	case InfoName:
		e.Name = string(b)
	case InfoDescription:
		e.Description = string(b)
	case InfoNbdrootOverlay:
		if len(b) != OverlayIDSize {
			return fmt.Errorf("NBD_INFO_NBDROOT_OVERLAY of %d bytes: %w", len(b), ErrMalformed)
		}
		e.HasOverlay = true
		copy(e.Overlay[:], b)
	}
	return nil
}

// AppendExportNameReply appends the server's answer to NBD_OPT_EXPORT_NAME: size, flags and,
// unless the client negotiated NO_ZEROES, 124 bytes of zeroes.
func AppendExportNameReply(b []byte, size uint64, flags uint16, noZeroes bool) []byte {
	b = be.AppendUint64(b, size)
	b = be.AppendUint16(b, flags)
	if !noZeroes {
		b = append(b, make([]byte, 124)...)
	}
	return b
}
