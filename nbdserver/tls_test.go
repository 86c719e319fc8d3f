package nbdserver

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/test/pki"
)

// testPKI is a throwaway CA with a server certificate for localhost and a client
// certificate with common name "client", in the layout libnbd's tls-certificates
// directories use (package test/pki).
type testPKI struct {
	*pki.Set
	dir string
}

func newTestPKI(t testing.TB) *testPKI {
	t.Helper()
	p := pki.New(t, "client")
	return &testPKI{Set: p, dir: p.Dir}
}

func (p *testPKI) serverConfig(t testing.TB, clientCA bool) *tls.Config {
	t.Helper()
	ca := ""
	if clientCA {
		ca = p.File
	}
	cfg, err := LoadTLS(p.Server.CertFile, p.Server.KeyFile, ca)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func (p *testPKI) clientConfig(withCert bool) *tls.Config {
	cfg := &tls.Config{RootCAs: p.Pool, ServerName: "localhost"}
	if withCert {
		cfg.Certificates = []tls.Certificate{p.Client.TLS}
	}
	return cfg
}

func TestTLSRequire(t *testing.T) {
	pki := newTestPKI(t)
	cfg := oneExport(t)
	cfg.TLSMode, cfg.TLS = TLSRequire, pki.serverConfig(t, false)
	s := startServer(t, cfg)

	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
	_, err := c.infoGo(nbd.OptGo, "root")
	wantRefusal(t, err, nbd.RepErrTLSReqd, "TLS")
	if typ, _ := c.simpleOption(nbd.OptList, nil); typ != nbd.RepErrTLSReqd {
		t.Errorf("LIST before TLS: %s", nbd.RepName(typ))
	}
	if err := c.startTLS(pki.clientConfig(false)); err != nil {
		t.Fatal(err)
	}
	if typ, _ := c.simpleOption(nbd.OptStartTLS, nil); typ != nbd.RepErrInvalid {
		t.Errorf("second STARTTLS: %s, want INVALID", nbd.RepName(typ))
	}
	if _, err := c.infoGo(nbd.OptGo, "root"); err != nil {
		t.Fatal(err)
	}
	c.pwrite(0, bytes.Repeat([]byte("tls"), 100000), 0)
	if got := c.pread(0, 300000); !bytes.Equal(got, bytes.Repeat([]byte("tls"), 100000)) {
		t.Error("data over TLS differs")
	}
	c.disconnect()

	// EXPORT_NAME cannot be refused politely: the connection is closed.
	c = dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	c.option(nbd.OptExportName, []byte("root"))
	expectClosed(t, c)
}

func TestTLSSelective(t *testing.T) {
	pki := newTestPKI(t)
	img1, img2 := makeImage(t, testSize), makeImage(t, testSize)
	s := startServer(t, Config{
		Exports: []Export{{Name: "open", Path: img1}, {Name: "secret", Path: img2, TLSOnly: true}},
		TLSMode: TLSAllow, TLS: pki.serverConfig(t, false),
	})
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	_, err := c.infoGo(nbd.OptInfo, "secret")
	wantRefusal(t, err, nbd.RepErrTLSReqd, "requires TLS")
	if _, err := c.infoGo(nbd.OptGo, "open"); err != nil {
		t.Fatalf("plain export without TLS: %v", err)
	}
	c.disconnect()

	c = dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	if err := c.startTLS(pki.clientConfig(false)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.infoGo(nbd.OptGo, "secret"); err != nil {
		t.Fatalf("TLS-only export over TLS: %v", err)
	}
	c.disconnect()
}

func TestTLSClientCertificates(t *testing.T) {
	pki := newTestPKI(t)
	cfg := oneExport(t)
	cfg.TLSMode, cfg.TLS = TLSRequire, pki.serverConfig(t, true)
	s := startServer(t, cfg)

	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	if err := c.startTLS(pki.clientConfig(false)); err == nil {
		// TLS 1.3 reports a missing client certificate on the first read.
		if _, err := c.infoGo(nbd.OptGo, "root"); err == nil {
			t.Fatal("a client without a certificate was served")
		}
	}
	waitFor(t, "the refusal in the log", func() bool { return strings.Contains(s.logs.String(), "TLS handshake") })

	c = dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	if err := c.startTLS(pki.clientConfig(true)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.infoGo(nbd.OptGo, "root"); err != nil {
		t.Fatal(err)
	}
	c.disconnect()
	if !strings.Contains(s.logs.String(), `TLS up, client certificate CN=client: client identity client`) {
		t.Errorf("client certificate not logged:\n%s", s.logs)
	}
}

func TestLoadTLSErrors(t *testing.T) {
	pki := newTestPKI(t)
	if _, err := LoadTLS(filepath.Join(pki.dir, "missing.pem"), filepath.Join(pki.dir, "server-key.pem"), ""); err == nil {
		t.Error("missing certificate accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("no certificates here"), 0o600)
	_, err := LoadTLS(filepath.Join(pki.dir, "server-cert.pem"), filepath.Join(pki.dir, "server-key.pem"), empty)
	if err == nil || !strings.Contains(err.Error(), "no certificates") {
		t.Errorf("empty CA bundle: %v", err)
	}
	o := Options{Exports: []string{"r=" + makeImage(t, 4096)}, TLSMode: "require"}
	if _, err := o.Load(); err == nil {
		t.Error("--tls=require without a certificate accepted")
	}
	var ce *ConfigError
	if err := (&Config{Exports: []Export{{Name: "a", Path: "/a"}}, TLSMode: TLSAllow}).Validate(); !errors.As(err, &ce) {
		t.Errorf("TLS without certificate: %v", err)
	}
}
