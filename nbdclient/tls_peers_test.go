//go:build !nbdroot_notls

package nbdclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdclient/ktls"
	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/test/pki"
)

// TLS against the servers people run: nbd-server (GnuTLS; certfile, keyfile, cacertfile,
// force_tls), nbdkit (GnuTLS; --tls=require --tls-certificates DIR --tls-verify-peer) and
// nbdroot serve (crypto/tls), each requiring TLS and a client certificate. The host kernel
// has no "tls" module, so the hand-off goes to a relay here, which runs the same record
// layer continuation the kernel would (the QEMU tests hand it to the kernel): reading the
// image through it proves keys and sequence numbers against each server's TLS stack,
// session tickets included.

// tlsPeer is a TLS server and how to reach it.
type tlsPeer struct {
	name string
	addr string
}

func startNBDServerTLS(t *testing.T, p *pki.Set, root string, extra string) tlsPeer {
	bin := needTool(t, "nbd-server")
	dir := t.TempDir()
	port := withPort(t, func(port int) bool {
		cfg := filepath.Join(dir, "config")
		pidfile := filepath.Join(dir, "pid")
		os.Remove(pidfile)
		conf := fmt.Sprintf("[generic]\nport = %d\nlistenaddr = 127.0.0.1\nforce_tls = true\n"+
			"certfile = %s\nkeyfile = %s\ncacertfile = %s\n%s"+
			"[root]\nexportname = %s\ntlsonly = true\n", port, p.Server.CertFile, p.Server.KeyFile, p.File, extra, root)
		if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		return startNBDServerDaemon(t, bin, cfg, pidfile, port)
	})
	return tlsPeer{name: "nbd-server", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

func startNbdkitTLS(t *testing.T, p *pki.Set, root string) tlsPeer {
	bin := needTool(t, "nbdkit")
	port := withPort(t, func(port int) bool {
		return startProc(t, port, bin, "-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port),
			"--tls=require", "--tls-certificates", p.Dir, "--tls-verify-peer", "file", root)
	})
	return tlsPeer{name: "nbdkit", addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
}

func startNbdrootServeTLS(t *testing.T, p *pki.Set, root string, mode nbdserver.TLSMode) tlsPeer {
	cfg := nbdserver.Config{Exports: []nbdserver.Export{{Name: "root", Path: root, Default: true}},
		Logger: log.New(io.Discard, "", 0), TLSMode: mode}
	if mode != nbdserver.TLSOff {
		var err error
		if cfg.TLS, err = nbdserver.LoadTLS(p.Server.CertFile, p.Server.KeyFile, p.File); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := nbdserver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tlsPeer{name: "nbdroot serve", addr: serveInProcess(t, srv)}
}

// clientTLS is the client's side of a PKI: its CA, certificate and key.
func clientTLS(p *pki.Set) *TLSSettings {
	return &TLSSettings{CAPEM: string(p.PEM), CertPEM: string(p.Client.CertPEM), KeyPEM: string(p.Client.KeyPEM)}
}

// dataPath is where the kernel would read and write a negotiated connection: the socket
// itself under kernel TLS, else the kernel's end of a relay.
func dataPath(t *testing.T, c *Conn) net.Conn {
	t.Helper()
	if !c.TLS.Secured() {
		t.Fatalf("the connection is not secured: %v", c.TLS)
	}
	if c.TLS.Kernel {
		return c
	}
	kernel, plain := net.Pipe()
	r, err := ktls.NewRelay(plain, c.TCPConn, *c.TLS.Relay)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.Run() }()
	t.Cleanup(func() {
		kernel.Close()
		<-done
	})
	return kernel
}

func TestTLSPeers(t *testing.T) {
	p := pki.New(t, "client")
	root, _, data := peerImages(t)
	peers := []tlsPeer{
		startNBDServerTLS(t, p, root, ""),
		startNbdkitTLS(t, p, root),
		startNbdrootServeTLS(t, p, root, nbdserver.TLSRequire),
	}
	for _, srv := range peers {
		t.Run(srv.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conns, err := DialConns(ctx, NewDialer(clientTLS(p)).Dial, srv.addr, DialOptions{Export: "root"}, 2, func(s string) { t.Log(s) })
			if err != nil {
				t.Fatal(err)
			}
			defer CloseAll(conns)
			t.Logf("%s: %d connection(s), %s", srv.name, len(conns), describeTLS(conns))
			for i, c := range conns {
				if c.Info.Size != peerImageSize {
					t.Errorf("size %d", c.Info.Size)
				}
				rw := dataPath(t, c)
				for _, off := range []uint64{uint64(i) << 20, 3<<20 + 512} {
					if got := readBlock(t, rw, off, 64<<10); !bytes.Equal(got, data[off:off+64<<10]) {
						t.Errorf("connection %d: the data read through TLS differs at %d", i, off)
					}
				}
			}
		})
	}
}

func TestTLSBadInput(t *testing.T) {
	p := pki.New(t, "client")
	root, _, _ := peerImages(t)
	root2, root3, _ := peerImages(t)
	serve := startNbdrootServeTLS(t, p, root, nbdserver.TLSRequire)
	plain := startNbdrootServeTLS(t, p, root2, nbdserver.TLSOff)

	other := pki.New(t, "client")
	expired := p.Issue(t, "expired", pki.Options{CommonName: "localhost", DNS: []string{"localhost"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	expiredSrv := startServeWithCert(t, p, root3, expired)

	for _, tc := range []struct {
		name   string
		addr   string
		tls    func() *TLSSettings
		want   string
		reason TLSReason
	}{
		{"wrong CA", serve.addr, func() *TLSSettings { s := clientTLS(p); s.CAPEM = string(other.PEM); return s },
			"not signed by the configured CA", TLSUnknownCA},
		{"wrong name", serve.addr, func() *TLSSettings { s := clientTLS(p); s.ServerName = "nbd.lab"; return s },
			`the server's certificate is not for "nbd.lab" (it names localhost, 127.0.0.1, ::1)`, TLSWrongName},
		{"expired", expiredSrv.addr, func() *TLSSettings { return clientTLS(p) }, "this client's clock says", TLSExpired},
		{"server without TLS", plain.addr, func() *TLSSettings { return clientTLS(p) },
			"the server does not do TLS: NBD_REP_ERR_POLICY", TLSRefused},
		{"no client certificate", serve.addr, func() *TLSSettings { s := clientTLS(p); s.CertPEM, s.KeyPEM = "", ""; return s },
			"does it accept this client's certificate", TLSClientRejected},
		{"client certificate of another CA", serve.addr, func() *TLSSettings {
			s := clientTLS(p)
			s.CertPEM, s.KeyPEM = string(other.Client.CertPEM), string(other.Client.KeyPEM)
			return s
		}, "does it accept this client's certificate", TLSClientRejected},
		{"no CA", serve.addr, func() *TLSSettings { s := clientTLS(p); s.CAPEM = ""; return s }, "no CA certificate", TLSFailed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := NewDialer(tc.tls()).Dial(ctx, tc.addr, DialOptions{Export: "root"})
			if err == nil {
				c.Close()
				t.Fatal("connected")
			}
			var te *TLSError
			if !errors.As(err, &te) || !strings.Contains(err.Error(), "NBD server "+tc.addr+`, export "root": TLS: `) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q: want a *TLSError naming the server and saying %q", err, tc.want)
			}
			if te.Reason != tc.reason {
				t.Errorf("reason %d, want %d", te.Reason, tc.reason)
			}
			t.Log(err)
		})
	}

	// TLS when offered: a server that refuses goes on in clear text, and says so.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := clientTLS(p)
	s.Mode = TLSIfOffered
	c, err := NewDialer(s).Dial(ctx, plain.addr, DialOptions{Export: "root"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.TLS == nil || c.TLS.Secured() || !strings.Contains(c.TLS.String(), "refused NBD_OPT_STARTTLS: NBD_REP_ERR_POLICY") {
		t.Errorf("nbdroot.tls=on against a server without TLS: %v", c.TLS)
	}
}

// TestTLS12Server: nbdroot speaks TLS 1.3 only (docs/tls.md); a server limited to TLS 1.2
// (here nbd-server with a GnuTLS priority string saying so) fails with a message that
// says so.
func TestTLS12Server(t *testing.T) {
	p := pki.New(t, "client")
	root, _, _ := peerImages(t)
	srv := startNBDServerTLS(t, p, root, "tlsprio = NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2\n")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := NewDialer(clientTLS(p)).Dial(ctx, srv.addr, DialOptions{Export: "root"})
	if err == nil || !strings.Contains(err.Error(), "TLS 1.3") {
		t.Fatalf("err = %v; want a failure that names TLS 1.3", err)
	}
	t.Log(err)
}

func startServeWithCert(t *testing.T, p *pki.Set, root string, cert *pki.Cert) tlsPeer {
	cfg, err := nbdserver.LoadTLS(cert.CertFile, cert.KeyFile, p.File)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nbdserver.New(nbdserver.Config{Exports: []nbdserver.Export{{Name: "root", Path: root}},
		Logger: log.New(io.Discard, "", 0), TLSMode: nbdserver.TLSRequire, TLS: cfg})
	if err != nil {
		t.Fatal(err)
	}
	return tlsPeer{name: "nbdroot serve", addr: serveInProcess(t, srv)}
}
