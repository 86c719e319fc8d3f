package nbdclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/test/pki"
)

// scriptedConn is a net.Conn whose peer is a fixed byte stream; writes are discarded.
type scriptedConn struct{ scripted }

func (scriptedConn) Close() error                     { return nil }
func (scriptedConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (scriptedConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (scriptedConn) SetDeadline(time.Time) error      { return nil }
func (scriptedConn) SetReadDeadline(time.Time) error  { return nil }
func (scriptedConn) SetWriteDeadline(time.Time) error { return nil }

// serverHandshakeBytes is what a real TLS 1.3 server (crypto/tls, a certificate of
// another CA) sends a client up to the point where the client gives up: a plausible
// start for the fuzzer, though never one that verifies (the client's random differs).
func serverHandshakeBytes(f *testing.F, p *pki.Set) []byte {
	f.Helper()
	client, server := net.Pipe()
	rec := &recorder{Conn: server}
	go func() {
		s := tls.Server(rec, &tls.Config{Certificates: []tls.Certificate{p.Server.TLS}, MinVersion: tls.VersionTLS13})
		s.Handshake()
		server.Close()
	}()
	c := tls.Client(client, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	c.Handshake()
	client.Close()
	return rec.sent.Bytes()
}

type recorder struct {
	net.Conn
	sent bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.sent.Write(p)
	return r.Conn.Write(p)
}

// FuzzStartTLS feeds arbitrary server answers to NBD_OPT_STARTTLS and, after an
// acknowledgement, to the TLS handshake (package ktls's record counter beneath
// crypto/tls): the client returns (no panic, no endless loop), and never reports a secured
// connection — no scripted stream carries a certificate of the client's CA.
func FuzzStartTLS(f *testing.F) {
	p := pki.New(f, "client")
	ack := nbd.AppendOptReply(nil, nbd.OptStartTLS, nbd.RepAck, nil)
	f.Add(append(bytes.Clone(ack), serverHandshakeBytes(f, pki.New(f, "client"))...))
	f.Add(append(bytes.Clone(ack), 0x16, 3, 3, 0, 4, 2, 0, 0, 0))
	f.Add(append(bytes.Clone(ack), 0x15, 3, 3, 0, 2, 2, 40))
	f.Add(nbd.AppendOptReply(nil, nbd.OptStartTLS, nbd.RepErrPolicy, []byte("TLS is not configured")))
	f.Add(nbd.AppendOptReply(nil, nbd.OptStartTLS, nbd.RepErrUnsup, nil))
	f.Add(nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepAck, nil))
	f.Add(nbd.AppendOptReply(nil, nbd.OptStartTLS, nbd.RepServer, []byte{0, 0, 0, 1, 'x'}))
	s := &TLSSettings{CAPEM: string(p.PEM), CertPEM: string(p.Client.CertPEM), KeyPEM: string(p.Client.KeyPEM)}
	f.Fuzz(func(t *testing.T, stream []byte) {
		conn := scriptedConn{scripted{bytes.NewReader(stream)}}
		refusal, err := askStartTLS(conn)
		if err != nil || refusal != "" {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if sess, err := handshakeTLS(ctx, conn, s, "127.0.0.1:10809"); err == nil {
			t.Fatalf("a scripted server passed verification (suite %v)", sess.suite)
		}
	})
}
