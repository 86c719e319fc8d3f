//go:build !nbdroot_notls

package nbdclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// handshakeTLS runs the TLS handshake on raw after the server acknowledged
// NBD_OPT_STARTTLS: TLS 1.3 only (the versions whose record layer package ktls hands
// over), the server's certificate verified against s.CAPEM for the name
// s.serverName(addr), the client's certificate presented when configured. Records are
// counted from the end of the handshake (ktls.Counter) and the traffic secrets kept in
// memory (ktls.KeyLog) for the hand-off.
func handshakeTLS(ctx context.Context, raw net.Conn, s *TLSSettings, addr string) (*tlsSession, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.CAPEM)) {
		return nil, errors.New("no CA certificate to verify the server with (nbdroot initramfs --tls-ca, nbdroot attach --tls-ca)")
	}
	name := s.serverName(addr)
	sess := &tlsSession{counter: ktls.NewCounter(raw), log: &ktls.KeyLog{}}
	cfg := &tls.Config{
		RootCAs: pool, ServerName: name,
		MinVersion: tls.VersionTLS13, MaxVersion: tls.VersionTLS13,
		KeyLogWriter: sess.log,
	}
	if s.CertPEM != "" || s.KeyPEM != "" {
		cert, err := tls.X509KeyPair([]byte(s.CertPEM), []byte(s.KeyPEM))
		if err != nil {
			return nil, fmt.Errorf("the client certificate and key do not load: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	c := tls.Client(sess.counter, cfg)
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, explainTLS(err, name, s)
	}
	if err := sess.counter.Start(); err != nil {
		return nil, err
	}
	cs := c.ConnectionState()
	sess.conn, sess.suite = c, ktls.Suite(cs.CipherSuite)
	return sess, nil
}

// explainTLS turns a failed handshake into what to check.
func explainTLS(err error, name string, s *TLSSettings) error {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	if te := (*TLSError)(nil); errors.As(err, &te) {
		return err
	}
	switch {
	case errors.As(err, &unknown):
		return &TLSError{Reason: TLSUnknownCA, Err: fmt.Errorf("the server's certificate is not signed by the configured CA (--tls-ca): a wrong CA, or not the server you meant: %w", err)}
	case errors.As(err, &hostname):
		c := hostname.Certificate
		names := append([]string(nil), c.DNSNames...)
		for _, ip := range c.IPAddresses {
			names = append(names, ip.String())
		}
		if len(names) == 0 && c.Subject.CommonName != "" {
			names = append(names, "only the common name "+c.Subject.CommonName+", which TLS no longer matches")
		}
		hint := "set nbdroot.tlsname= (attach: --tls-name) to a name it carries"
		if s.ServerName != "" {
			hint = "check nbdroot.tlsname= (attach: --tls-name)"
		}
		return &TLSError{Reason: TLSWrongName, Err: fmt.Errorf("the server's certificate is not for %q (it names %s): %s, or reissue it: %w", name, strings.Join(names, ", "), hint, err)}
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		c := invalid.Cert
		return &TLSError{Reason: TLSExpired, Err: fmt.Errorf("the server's certificate is valid from %s to %s, and this client's clock says %s (an expired certificate, or a wrong clock: thin clients without a battery start in 1970): %w",
			c.NotBefore.UTC().Format(time.DateTime), c.NotAfter.UTC().Format(time.DateTime), time.Now().UTC().Format(time.DateTime), err)}
	case isRemoteTLS(err):
		return remoteTLSError(err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("the server closed the connection during the TLS handshake: does it offer TLS 1.3, which nbdroot needs (docs/tls.md)? %w", err)
	}
	return fmt.Errorf("TLS handshake: %w", err)
}

// handOff gives the record layer of a negotiated connection to the kernel, or prepares it
// for a relay when the kernel cannot take it (or must not: NoKernelTLS).
func (d *Dialer) handOff(tc *net.TCPConn, sess *tlsSession) (*TLSState, error) {
	st, err := ktls.Handoff(sess.suite, sess.log, sess.counter)
	if err != nil {
		return nil, &TLSError{Err: fmt.Errorf("hand the connection over: %w", err)}
	}
	state := &TLSState{Suite: st.Suite}
	relay := func(why string) (*TLSState, error) {
		state.Relay, state.Why = &st, why
		return state, nil
	}
	if d.TLS.NoKernelTLS {
		return relay("nbdroot.ktls=0")
	}
	if why := d.kernel.get(); why != "" {
		return relay(why)
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	err = ktls.Enable(rc, st)
	var ke *ktls.KernelError
	switch {
	case err == nil:
		state.Kernel = true
		return state, nil
	case errors.As(err, &ke) && ke.Half:
		// This socket is lost; the next one goes to the relay.
		d.kernel.set(err.Error())
		return nil, &TLSError{Err: err}
	case errors.Is(err, ktls.ErrNoKernelTLS):
		d.kernel.set(err.Error())
		return relay(err.Error())
	}
	return nil, &TLSError{Err: err}
}

// newRelay prepares a relay of st between plain (the kernel's socket pair) and wire.
func newRelay(plain, wire net.Conn, st ktls.State) (interface{ Run() error }, error) {
	return ktls.NewRelay(plain, wire, st)
}

// TLSSupported reports whether this program was built with TLS (not nbdroot_notls).
func TLSSupported() bool { return true }
