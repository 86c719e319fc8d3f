//go:build nbdroot_notls

package nbdclient

import (
	"context"
	"net"

	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// handshakeTLS is left out of programs built with nbdroot_notls (the small nbdroot-init):
// they refuse TLS rather than link crypto/tls.
func handshakeTLS(ctx context.Context, raw net.Conn, s *TLSSettings, addr string) (*tlsSession, error) {
	return nil, ErrNoTLSSupport
}

func (d *Dialer) handOff(tc *net.TCPConn, sess *tlsSession) (*TLSState, error) {
	return nil, ErrNoTLSSupport
}

func newRelay(plain, wire net.Conn, st ktls.State) (interface{ Run() error }, error) {
	return nil, ErrNoTLSSupport
}

// TLSSupported reports whether this program was built with TLS: not this one.
func TLSSupported() bool { return false }
