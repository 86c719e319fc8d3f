package nbd

import (
	"fmt"
	"syscall"
)

// MagicError reports a header whose magic number is not the one the protocol requires there.
type MagicError struct {
	What      string
	Got, Want uint64
}

func (e *MagicError) Error() string {
	return fmt.Sprintf("bad %s magic %#x (want %#x): not an NBD peer or stream out of sync", e.What, e.Got, e.Want)
}

// OptionError is an error reply (NBD_REP_ERR_*) from a server to an option.
type OptionError struct {
	Option  uint32
	Type    uint32
	Message string // the server's human-readable text, if any
}

func (e *OptionError) Error() string {
	s := fmt.Sprintf("server refused %s: %s", OptName(e.Option), RepName(e.Type))
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Errno is a transmission-phase error value (NBD_E*) from a reply.
type Errno uint32

func (e Errno) Error() string {
	if n, ok := errnoNames[uint32(e)]; ok {
		return n
	}
	return fmt.Sprintf("NBD error %d", uint32(e))
}

// Unwrap maps the wire error to the matching syscall.Errno so errors.Is works with both.
func (e Errno) Unwrap() error { return syscall.Errno(e) }

var errnoNames = map[uint32]string{
	EPERM:     "EPERM (operation not permitted)",
	EIO:       "EIO (input/output error)",
	ENOMEM:    "ENOMEM (out of memory)",
	EINVAL:    "EINVAL (invalid argument)",
	ENOSPC:    "ENOSPC (no space left on device)",
	EOVERFLOW: "EOVERFLOW (value too large)",
	ENOTSUP:   "ENOTSUP (operation not supported)",
	ESHUTDOWN: "ESHUTDOWN (server is shutting down)",
}

var optNames = map[uint32]string{
	OptExportName:      "NBD_OPT_EXPORT_NAME",
	OptAbort:           "NBD_OPT_ABORT",
	OptList:            "NBD_OPT_LIST",
	OptPeekExport:      "NBD_OPT_PEEK_EXPORT",
	OptStartTLS:        "NBD_OPT_STARTTLS",
	OptInfo:            "NBD_OPT_INFO",
	OptGo:              "NBD_OPT_GO",
	OptStructuredReply: "NBD_OPT_STRUCTURED_REPLY",
	OptListMetaContext: "NBD_OPT_LIST_META_CONTEXT",
	OptSetMetaContext:  "NBD_OPT_SET_META_CONTEXT",
	OptExtendedHeaders: "NBD_OPT_EXTENDED_HEADERS",
	OptNbdrootClient:   "NBD_OPT_NBDROOT_CLIENT",
}

// OptName names an option number for logs and errors.
func OptName(o uint32) string {
	if n, ok := optNames[o]; ok {
		return n
	}
	return fmt.Sprintf("option %d", o)
}

var repNames = map[uint32]string{
	RepAck:              "NBD_REP_ACK",
	RepServer:           "NBD_REP_SERVER",
	RepInfo:             "NBD_REP_INFO",
	RepMetaContext:      "NBD_REP_META_CONTEXT",
	RepErrUnsup:         "NBD_REP_ERR_UNSUP (option not supported)",
	RepErrPolicy:        "NBD_REP_ERR_POLICY (forbidden by server policy)",
	RepErrInvalid:       "NBD_REP_ERR_INVALID (invalid option)",
	RepErrPlatform:      "NBD_REP_ERR_PLATFORM (not supported on this platform)",
	RepErrTLSReqd:       "NBD_REP_ERR_TLS_REQD (TLS required)",
	RepErrUnknown:       "NBD_REP_ERR_UNKNOWN (no such export)",
	RepErrShutdown:      "NBD_REP_ERR_SHUTDOWN (server is shutting down)",
	RepErrBlockSizeReqd: "NBD_REP_ERR_BLOCK_SIZE_REQD (block size negotiation required)",
	RepErrTooBig:        "NBD_REP_ERR_TOO_BIG (request too big)",

	RepErrNbdrootOverlayGone: "NBD_REP_ERR_NBDROOT_OVERLAY_GONE (the overlay to resume no longer exists)",
}

// RepName names an option reply type for logs and errors.
func RepName(t uint32) string {
	if n, ok := repNames[t]; ok {
		return n
	}
	if t&RepFlagError != 0 {
		return fmt.Sprintf("error reply %d", t&^RepFlagError)
	}
	return fmt.Sprintf("reply type %d", t)
}

var cmdNames = map[uint16]string{
	CmdRead:        "READ",
	CmdWrite:       "WRITE",
	CmdDisc:        "DISC",
	CmdFlush:       "FLUSH",
	CmdTrim:        "TRIM",
	CmdCache:       "CACHE",
	CmdWriteZeroes: "WRITE_ZEROES",
	CmdBlockStatus: "BLOCK_STATUS",
}

// CmdName names a command for logs and errors.
func CmdName(c uint16) string {
	if n, ok := cmdNames[c]; ok {
		return n
	}
	return fmt.Sprintf("command %d", c)
}

// FlagNames lists the names of the transmission flags set in f, for people and JSON.
func FlagNames(f uint16) []string {
	names := []string{"HAS_FLAGS", "READ_ONLY", "SEND_FLUSH", "SEND_FUA", "ROTATIONAL", "SEND_TRIM",
		"SEND_WRITE_ZEROES", "SEND_DF", "CAN_MULTI_CONN", "SEND_RESIZE", "SEND_CACHE", "SEND_FAST_ZERO"}
	var out []string
	for i, n := range names {
		if f&(1<<i) != 0 {
			out = append(out, n)
		}
	}
	return out
}
