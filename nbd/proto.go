// Package nbd owns the NBD wire protocol (NetworkBlockDevice/nbd doc/proto.md): constants,
// handshake messages and request/reply headers, shared by nbdclient and nbdserver.
//
// It encodes and decodes; it never opens sockets, never decides policy and never allocates
// buffers sized by a peer without a bound (callers check lengths against MaxOptionLength and
// MaxPayload before reading a body).
package nbd

// Handshake magics (proto.md "Newstyle negotiation").
const (
	// NBDMagic opens every handshake ("NBDMAGIC").
	NBDMagic uint64 = 0x4e42444d41474943
	// IHaveOpt follows NBDMagic in newstyle and prefixes every option ("IHAVEOPT").
	IHaveOpt uint64 = 0x49484156454F5054
	// OldstyleMagic follows NBDMagic in the oldstyle handshake, which we never speak.
	OldstyleMagic uint64 = 0x00420281861253
	// OptReplyMagic prefixes every option reply.
	OptReplyMagic uint64 = 0x3e889045565a9
)

// Handshake flags sent by the server (16 bits).
const (
	FlagFixedNewstyle uint16 = 1 << 0
	FlagNoZeroes      uint16 = 1 << 1
)

// Client flags sent after the server's handshake flags (32 bits).
const (
	ClientFlagFixedNewstyle uint32 = 1 << 0
	ClientFlagNoZeroes      uint32 = 1 << 1
)

// Option numbers (NBD_OPT_*).
const (
	OptExportName      uint32 = 1
	OptAbort           uint32 = 2
	OptList            uint32 = 3
	OptPeekExport      uint32 = 4
	OptStartTLS        uint32 = 5
	OptInfo            uint32 = 6
	OptGo              uint32 = 7
	OptStructuredReply uint32 = 8
	OptListMetaContext uint32 = 9
	OptSetMetaContext  uint32 = 10
	OptExtendedHeaders uint32 = 11
)

// Option reply types (NBD_REP_*). Error replies have bit 31 set.
const (
	RepAck         uint32 = 1
	RepServer      uint32 = 2
	RepInfo        uint32 = 3
	RepMetaContext uint32 = 4

	RepFlagError        uint32 = 1 << 31
	RepErrUnsup         uint32 = RepFlagError | 1
	RepErrPolicy        uint32 = RepFlagError | 2
	RepErrInvalid       uint32 = RepFlagError | 3
	RepErrPlatform      uint32 = RepFlagError | 4
	RepErrTLSReqd       uint32 = RepFlagError | 5
	RepErrUnknown       uint32 = RepFlagError | 6
	RepErrShutdown      uint32 = RepFlagError | 7
	RepErrBlockSizeReqd uint32 = RepFlagError | 8
	RepErrTooBig        uint32 = RepFlagError | 9
)

// Information types carried in NBD_REP_INFO replies and requested in OPT_INFO/OPT_GO.
const (
	InfoExport      uint16 = 0
	InfoName        uint16 = 1
	InfoDescription uint16 = 2
	InfoBlockSize   uint16 = 3
)

// Transmission flags (16 bits), sent with the export size.
const (
	TransHasFlags        uint16 = 1 << 0
	TransReadOnly        uint16 = 1 << 1
	TransSendFlush       uint16 = 1 << 2
	TransSendFUA         uint16 = 1 << 3
	TransRotational      uint16 = 1 << 4
	TransSendTrim        uint16 = 1 << 5
	TransSendWriteZeroes uint16 = 1 << 6
	TransSendDF          uint16 = 1 << 7
	TransCanMultiConn    uint16 = 1 << 8
	TransSendResize      uint16 = 1 << 9
	TransSendCache       uint16 = 1 << 10
	TransSendFastZero    uint16 = 1 << 11
)

// Transmission magics.
const (
	RequestMagic         uint32 = 0x25609513
	SimpleReplyMagic     uint32 = 0x67446698
	StructuredReplyMagic uint32 = 0x668e33ef
)

// Commands (NBD_CMD_*).
const (
	CmdRead        uint16 = 0
	CmdWrite       uint16 = 1
	CmdDisc        uint16 = 2
	CmdFlush       uint16 = 3
	CmdTrim        uint16 = 4
	CmdCache       uint16 = 5
	CmdWriteZeroes uint16 = 6
	CmdBlockStatus uint16 = 7
)

// Command flags (NBD_CMD_FLAG_*).
const (
	CmdFlagFUA      uint16 = 1 << 0
	CmdFlagNoHole   uint16 = 1 << 1
	CmdFlagDF       uint16 = 1 << 2
	CmdFlagReqOne   uint16 = 1 << 3
	CmdFlagFastZero uint16 = 1 << 4
)

// Structured reply chunk types and flags.
const (
	ReplyFlagDone uint16 = 1 << 0

	ReplyTypeNone        uint16 = 0
	ReplyTypeOffsetData  uint16 = 1
	ReplyTypeOffsetHole  uint16 = 2
	ReplyTypeBlockStatus uint16 = 5
	ReplyTypeError       uint16 = 1<<15 | 1
	ReplyTypeErrorOffset uint16 = 1<<15 | 2
)

// Error values carried in replies (proto.md "Error values"); they match Linux errno numbers.
const (
	EPERM     uint32 = 1
	EIO       uint32 = 5
	ENOMEM    uint32 = 12
	EINVAL    uint32 = 22
	ENOSPC    uint32 = 28
	EOVERFLOW uint32 = 75
	ENOTSUP   uint32 = 95
	ESHUTDOWN uint32 = 108
)

// Limits every peer of ours enforces before trusting a length from the wire.
const (
	// DefaultPort is the IANA port for NBD.
	DefaultPort = 10809
	// MaxOptionLength bounds an option's data; proto.md recommends rejecting
	// anything larger than needed, and no option we accept needs more than a name.
	MaxOptionLength = 64 << 10
	// MaxNameLength bounds export names and descriptions (proto.md: at most 4096 bytes).
	MaxNameLength = 4096
	// MaxPayload bounds READ and WRITE lengths (proto.md: 32 MiB is the de-facto ceiling).
	MaxPayload = 32 << 20
)

// Sizes of fixed headers on the wire.
const (
	RequestSize        = 28
	SimpleReplySize    = 16
	StructuredReplyHdr = 20
	OptionHeaderSize   = 16
	OptReplyHeaderSize = 20
)
