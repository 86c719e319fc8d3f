// Package tftp is a read-only TFTP server for network boot ROMs: RFC 1350 (octet and
// netascii), the option extension of RFC 2347 with the blksize (RFC 2348), tsize and
// timeout (RFC 2349) options. Each transfer runs on a socket of its own connected to the
// client (its transfer identifier), so packets from anyone else never reach it.
//
// What it must never do: write a file (write requests are refused with "access
// violation"); trust a length or number from the wire without a bound (requests are at most
// 512 bytes, RFC 2347; option values are range-checked); let one client's transfer stall
// the others; retransmit on a duplicate ACK (the "Sorcerer's Apprentice" bug, RFC 1123
// section 4.2.3.1).
package tftp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Opcodes (RFC 1350 section 5, RFC 2347).
const (
	opRRQ   = 1
	opWRQ   = 2
	opDATA  = 3
	opACK   = 4
	opERROR = 5
	opOACK  = 6
)

// Error codes (RFC 1350 appendix, RFC 2347).
const (
	ErrUndefined     = 0
	ErrNotFound      = 1
	ErrAccess        = 2
	ErrDiskFull      = 3
	ErrIllegalOp     = 4
	ErrUnknownTID    = 5
	ErrFileExists    = 6
	ErrNoSuchUser    = 7
	ErrOptionRefused = 8
)

// Protocol limits.
const (
	// MaxRequest is the largest request packet RFC 2347 allows.
	MaxRequest = 512
	// DefaultBlockSize is RFC 1350's block size.
	DefaultBlockSize = 512
	// MinBlockSize and MaxBlockSize bound the blksize option (RFC 2348).
	MinBlockSize = 8
	MaxBlockSize = 65464
	// The timeout option is 1-255 seconds (RFC 2349).
	minTimeout = 1
	maxTimeout = 255
)

// Request is a parsed read or write request.
type Request struct {
	// Write is true for a write request (WRQ), which this server refuses.
	Write bool
	// Filename is as the client sent it.
	Filename string
	// Mode is "octet" or "netascii" (lower case); "mail" and others are refused by Parse.
	Mode string
	// Options are the options in the order sent, names in lower case; a name given twice
	// keeps its first value.
	Options []Option
}

// Option is one option of a request or an OACK.
type Option struct{ Name, Value string }

// Option returns the value of the named option (lower case) and whether it was sent.
func (r *Request) Option(name string) (string, bool) {
	for _, o := range r.Options {
		if o.Name == name {
			return o.Value, true
		}
	}
	return "", false
}

// Error is a TFTP error: the code and message of an ERROR packet.
type Error struct {
	Code    uint16
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("TFTP error %d: %s", e.Code, e.Message) }

func tftpErr(code uint16, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ParseRequest parses an RRQ or WRQ packet. Errors are *Error with the code to answer.
func ParseRequest(b []byte) (*Request, error) {
	if len(b) > MaxRequest {
		return nil, tftpErr(ErrIllegalOp, "request of %d bytes: longer than %d (RFC 2347)", len(b), MaxRequest)
	}
	if len(b) < 2 {
		return nil, tftpErr(ErrIllegalOp, "packet of %d bytes", len(b))
	}
	op := binary.BigEndian.Uint16(b)
	if op != opRRQ && op != opWRQ {
		return nil, tftpErr(ErrIllegalOp, "opcode %d where a request was expected", op)
	}
	body := b[2:]
	if len(body) == 0 || body[len(body)-1] != 0 {
		return nil, tftpErr(ErrIllegalOp, "request not terminated by a NUL byte")
	}
	fields := strings.Split(string(body[:len(body)-1]), "\x00")
	// Some clients pad the request with NUL bytes: empty fields at the end are padding.
	for len(fields) > 2 && fields[len(fields)-1] == "" && fields[len(fields)-2] == "" {
		fields = fields[:len(fields)-2]
	}
	if len(fields) < 2 {
		return nil, tftpErr(ErrIllegalOp, "request without a file name and a mode")
	}
	if len(fields)%2 != 0 {
		if fields[len(fields)-1] == "" {
			fields = fields[:len(fields)-1]
		} else {
			return nil, tftpErr(ErrIllegalOp, "option %q without a value", clip(fields[len(fields)-1]))
		}
	}
	if len(fields) < 2 {
		return nil, tftpErr(ErrIllegalOp, "request without a file name and a mode")
	}
	r := &Request{Write: op == opWRQ, Filename: fields[0], Mode: strings.ToLower(fields[1])}
	if r.Filename == "" {
		return nil, tftpErr(ErrNotFound, "empty file name")
	}
	switch r.Mode {
	case "octet", "netascii":
	default:
		return nil, tftpErr(ErrIllegalOp, "mode %q: only octet and netascii are served", fields[1])
	}
	for i := 2; i < len(fields); i += 2 {
		name := strings.ToLower(fields[i])
		if name == "" {
			return nil, tftpErr(ErrOptionRefused, "empty option name")
		}
		if _, dup := r.Option(name); dup {
			continue
		}
		r.Options = append(r.Options, Option{name, fields[i+1]})
	}
	return r, nil
}

// Settings are what a transfer uses after negotiation.
type Settings struct {
	BlockSize int
	Timeout   time.Duration
	// OACK lists the options acknowledged, in the client's order; empty means no OACK is
	// sent and the transfer starts with DATA 1 (RFC 2347).
	OACK []Option
}

// Negotiate applies a request's options (RFC 2347): blksize is granted up to maxBlock,
// tsize is answered with size when it is known (size >= 0; not for netascii, whose size
// on the wire differs), timeout is granted as asked. Options this server does not know are
// left out of the OACK, as RFC 2347 says. A value out of its range is an *Error (code 8).
func Negotiate(r *Request, size int64, maxBlock int, timeout time.Duration) (Settings, error) {
	s := Settings{BlockSize: DefaultBlockSize, Timeout: timeout}
	if maxBlock <= 0 || maxBlock > MaxBlockSize {
		maxBlock = MaxBlockSize
	}
	for _, o := range r.Options {
		switch o.Name {
		case "blksize":
			n, err := strconv.ParseUint(o.Value, 10, 64)
			if err != nil && !isDigits(o.Value) || n < MinBlockSize && err == nil {
				return s, tftpErr(ErrOptionRefused, "blksize %q: want %d-%d (RFC 2348)", clip(o.Value), MinBlockSize, MaxBlockSize)
			}
			// A value too large (even for uint64) is granted as the largest we send.
			s.BlockSize = maxBlock
			if err == nil && n < uint64(maxBlock) {
				s.BlockSize = int(n)
			}
			s.OACK = append(s.OACK, Option{"blksize", strconv.Itoa(s.BlockSize)})
		case "tsize":
			if !isDigits(o.Value) {
				return s, tftpErr(ErrOptionRefused, "tsize %q: want a number (RFC 2349)", clip(o.Value))
			}
			if size >= 0 && r.Mode == "octet" {
				s.OACK = append(s.OACK, Option{"tsize", strconv.FormatInt(size, 10)})
			}
		case "timeout":
			n, err := strconv.Atoi(o.Value)
			if err != nil || n < minTimeout || n > maxTimeout {
				return s, tftpErr(ErrOptionRefused, "timeout %q: want %d-%d seconds (RFC 2349)", clip(o.Value), minTimeout, maxTimeout)
			}
			s.Timeout = time.Duration(n) * time.Second
			s.OACK = append(s.OACK, Option{"timeout", o.Value})
		}
	}
	return s, nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clip shortens a value for an error message.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "…"
	}
	return s
}

// Packet builders.

func dataPacket(buf []byte, block uint16, n int) []byte {
	binary.BigEndian.PutUint16(buf[0:], opDATA)
	binary.BigEndian.PutUint16(buf[2:], block)
	return buf[:4+n]
}

func oackPacket(opts []Option) []byte {
	b := []byte{0, opOACK}
	for _, o := range opts {
		b = append(b, o.Name...)
		b = append(b, 0)
		b = append(b, o.Value...)
		b = append(b, 0)
	}
	return b
}

func errorPacket(e *Error) []byte {
	msg := e.Message
	if len(msg) > 400 {
		msg = msg[:400]
	}
	b := make([]byte, 4, 5+len(msg))
	binary.BigEndian.PutUint16(b[0:], opERROR)
	binary.BigEndian.PutUint16(b[2:], e.Code)
	b = append(b, msg...)
	return append(b, 0)
}

// parseReply parses what a client sends during a transfer: an ACK (its block number) or
// an ERROR.
func parseReply(b []byte) (ack uint16, clientErr *Error, err error) {
	if len(b) < 4 {
		return 0, nil, errors.New("short packet")
	}
	switch binary.BigEndian.Uint16(b) {
	case opACK:
		return binary.BigEndian.Uint16(b[2:]), nil, nil
	case opERROR:
		msg := string(bytes.TrimRight(b[4:], "\x00"))
		return 0, &Error{Code: binary.BigEndian.Uint16(b[2:]), Message: clip(msg)}, nil
	}
	return 0, nil, fmt.Errorf("opcode %d during a transfer", binary.BigEndian.Uint16(b))
}
