package nbdclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// TLS, in the order of a connection (docs/tls.md): after the server's greeting the client
// sends NBD_OPT_STARTTLS (proto.md "TLS support") and, on NBD_REP_ACK, runs a TLS 1.3
// handshake over the socket with crypto/tls, verifying the server's certificate against
// the configured CA and presenting the client's own. The rest of the negotiation (the
// client identity, NBD_OPT_GO) runs over TLS. Then the record layer changes hands
// (package ktls): to the kernel (kernel TLS), so the socket goes to the nbd driver like a
// plain one, or — where the kernel cannot — to a relay in the keeper, the kernel getting
// one end of a socket pair.
//
// crypto/tls and package ktls's code are used in starttls.go only, which a program built
// with the tag nbdroot_notls leaves out (nbdroot-init; nbdroot-init-tls has it): TLS adds
// ~2.2 MB to /init, ~0.75 MB compressed with zstd.

// TLSMode says whether a connection must use TLS.
type TLSMode string

// The TLS modes (nbdroot.tls=).
const (
	// TLSRequire refuses a server that does not upgrade: never a byte of the export in
	// clear text. The zero value means TLSRequire.
	TLSRequire TLSMode = "require"
	// TLSIfOffered upgrades when the server accepts NBD_OPT_STARTTLS and goes on in clear
	// text when it refuses (an active attacker can make it refuse: require is the safe
	// mode). A server that accepts must still pass verification.
	TLSIfOffered TLSMode = "on"
)

// TLSSettings is how an attach secures its connections, as plain data: the keeper gets its
// target as JSON and has no files once the initramfs is gone, so certificates travel as PEM;
// and the small init (nbdroot_notls) leaves crypto/tls out (~0.75 MB of a zstd image).
type TLSSettings struct {
	// Mode is TLSRequire (also when empty) or TLSIfOffered.
	Mode TLSMode `json:"mode,omitempty"`
	// ServerName is the name the server's certificate must carry; empty means the host
	// of the address dialled (a name, or an IP address matched against IP SANs).
	ServerName string `json:"server_name,omitempty"`
	// Names maps addresses resolved before switch_root (the keeper's Servers) back to the
	// host names they were resolved from, which the certificates carry.
	Names map[string]string `json:"names,omitempty"`
	// CAPEM are the certificates the server's must chain to; CertPEM and KeyPEM the
	// client's own, when the server asks for one.
	CAPEM   string `json:"ca_pem,omitempty"`
	CertPEM string `json:"cert_pem,omitempty"`
	KeyPEM  string `json:"key_pem,omitempty"`
	// NoKernelTLS never hands the records to the kernel: the keeper relays every
	// connection (nbdroot.ktls=0; a kernel whose TLS misbehaves, or a comparison).
	NoKernelTLS bool `json:"no_ktls,omitempty"`
}

// required reports whether a connection without TLS must be refused.
func (s *TLSSettings) required() bool { return s != nil && s.Mode != TLSIfOffered }

// serverName is the name a server's certificate is checked against.
func (s *TLSSettings) serverName(addr string) string {
	if s.ServerName != "" {
		return s.ServerName
	}
	if n := s.Names[addr]; n != "" {
		return n
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return host
}

// TLSState is how a connection is secured.
type TLSState struct {
	// Suite is the TLS 1.3 cipher suite negotiated.
	Suite ktls.Suite
	// Kernel says the kernel protects the connection's records (kernel TLS). Otherwise
	// Relay is the record layer a relay continues, and Why says why the kernel does not.
	Kernel bool
	Relay  *ktls.State
	Why    string
	// Refused is set, with nothing else, when TLS was only wanted (TLSIfOffered) and the
	// server refused NBD_OPT_STARTTLS: the connection is in clear text, for this reason.
	Refused string
}

// Secured reports whether the connection's data is encrypted.
func (s *TLSState) Secured() bool { return s != nil && s.Refused == "" }

// String describes the state for the console and logs.
func (s *TLSState) String() string {
	switch {
	case s == nil:
		return "no TLS"
	case s.Refused != "":
		return "no TLS (the server refused NBD_OPT_STARTTLS: " + s.Refused + "; nbdroot.tls=on allows that)"
	case s.Kernel:
		return "TLS 1.3 " + s.Suite.String() + ", kernel TLS"
	}
	return "TLS 1.3 " + s.Suite.String() + ", relayed by the keeper (" + s.Why + ")"
}

// TLSError is a TLS failure of one connection: STARTTLS refused while TLS is required, a
// server certificate that does not verify, a handshake the server broke off. Its message
// says what to check; Reason says which setting to check, for callers that name it (the
// init names the command line parameter or the image's file behind it).
type TLSError struct {
	Reason TLSReason
	Err    error
}

// TLSReason classifies a TLSError by what the user must check.
type TLSReason int

// The reasons of a TLSError.
const (
	// TLSFailed is any other failure: the handshake, the hand-off, a missing CA.
	TLSFailed TLSReason = iota
	// TLSRefused: the server refused NBD_OPT_STARTTLS (or cannot be asked) while TLS is
	// required.
	TLSRefused
	// TLSUnknownCA: the server's certificate does not chain to the configured CA.
	TLSUnknownCA
	// TLSWrongName: the server's certificate does not carry the name checked.
	TLSWrongName
	// TLSExpired: the server's certificate is not valid at the client's time (expired,
	// not yet valid, or the client's clock is wrong).
	TLSExpired
	// TLSClientRejected: the server broke off the connection after the handshake, which
	// in TLS 1.3 is how it refuses the client's certificate.
	TLSClientRejected
)

// Error implements error.
func (e *TLSError) Error() string { return "TLS: " + e.Err.Error() }

// Unwrap returns the reason.
func (e *TLSError) Unwrap() error { return e.Err }

// ErrTLSRefused reports a server that refused NBD_OPT_STARTTLS, or cannot be asked (not
// fixed newstyle), while TLS is required.
var ErrTLSRefused = errors.New("the server does not do TLS")

// ErrNoTLSSupport reports a program built without TLS (the tag nbdroot_notls).
var ErrNoTLSSupport = errors.New("this program was built without TLS (nbdroot_notls): build the image with nbdroot-init-tls")

// remoteTLSError explains a TLS alert the server sent (crypto/tls reports it as a
// *net.OpError "remote error"). In TLS 1.3 the server checks the client's certificate
// after the client finished its handshake, so a refusal arrives with the first answer
// read over TLS, not from the handshake.
func remoteTLSError(err error) error {
	return &TLSError{Reason: TLSClientRejected, Err: fmt.Errorf("the server broke off the TLS connection (%w): does it accept this client's certificate (--tls-cert: signed by the CA the server trusts, not expired) and TLS 1.3?", err)}
}

// isRemoteTLS reports whether err is a TLS alert from the server.
func isRemoteTLS(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// describeTLS says how a set of connections is secured: the first one's state, with a
// count when they differ.
func describeTLS(conns []*Conn) string {
	if len(conns) == 0 {
		return ""
	}
	first := conns[0].TLS.String()
	var others []string
	for _, c := range conns[1:] {
		if s := c.TLS.String(); s != first {
			others = append(others, s)
		}
	}
	if len(others) == 0 {
		return first
	}
	return fmt.Sprintf("%s (other connections: %s)", first, strings.Join(others, "; "))
}

// tlsSession is a connection upgraded by NBD_OPT_STARTTLS, until its hand-off: conn is the
// crypto/tls connection the rest of the negotiation runs over, on top of counter.
type tlsSession struct {
	conn    net.Conn
	counter *ktls.Counter
	log     *ktls.KeyLog
	suite   ktls.Suite
}

// askStartTLS sends NBD_OPT_STARTTLS and reads the answer: "" when the server agreed
// (NBD_REP_ACK: the TLS handshake comes next), else the refusal, which the caller judges
// by the mode.
func askStartTLS(rw io.ReadWriter) (refusal string, err error) {
	if _, err := rw.Write(nbd.AppendOption(nil, nbd.OptStartTLS, nil)); err != nil {
		return "", fmt.Errorf("send NBD_OPT_STARTTLS: %w", err)
	}
	r, data, err := readOptReply(rw, nbd.OptStartTLS)
	if err != nil {
		return "", err
	}
	switch {
	case r.Type == nbd.RepAck:
		return "", nil
	case r.Type&nbd.RepFlagError != 0:
		msg := nbd.RepName(r.Type)
		if len(data) > 0 {
			msg += ": " + strings.TrimSpace(string(data))
		}
		return msg, nil
	}
	return "", fmt.Errorf("unexpected %s to NBD_OPT_STARTTLS", nbd.RepName(r.Type))
}

// kernelTLS remembers, for one Dialer, that the kernel refused kernel TLS: its later
// connections go to the relay at once.
type kernelTLS struct {
	mu      sync.Mutex
	refused string
}

func (k *kernelTLS) get() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.refused
}

func (k *kernelTLS) set(why string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.refused == "" {
		k.refused = why
	}
}

// list asks for the server's exports on tc, secured as d's connections are (and ended
// with NBD_OPT_ABORT before any hand-off).
func (d *Dialer) list(ctx context.Context, tc *net.TCPConn, addr string) ([]string, error) {
	fixed, _, err := greet(tc)
	if err != nil {
		return nil, err
	}
	if d.TLS == nil {
		return listAfterGreet(tc, fixed)
	}
	sess, _, err := d.secure(ctx, tc, addr, fixed)
	if err != nil {
		return nil, err
	}
	if sess == nil {
		return listAfterGreet(tc, fixed)
	}
	return listAfterGreet(sess.conn, fixed)
}
