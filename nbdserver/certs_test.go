package nbdserver

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/test/pki"
)

// certClient connects with TLS and the client certificate cert.
func certClient(t *testing.T, addr string, p *pki.Set, cert *pki.Cert) *testClient {
	t.Helper()
	c := dialTest(t, addr)
	c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
	if err := c.startTLS(&tls.Config{RootCAs: p.Pool, ServerName: "localhost", Certificates: []tls.Certificate{cert.TLS}}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestCertificateIdentity: a client's certificate is its identity — it keys the writer
// lock, and overrides an identity the client claims.
func TestCertificateIdentity(t *testing.T) {
	p := pki.New(t, "thin01")
	thin02 := p.Issue(t, "thin02", pki.Options{CommonName: "thin02", Client: true})
	odd := p.Issue(t, "odd", pki.Options{CommonName: "Thin Client 3", DNS: []string{"thin03.lab"}, Client: true})
	cfg := oneExport(t)
	cfg.TLSMode = TLSRequire
	var err error
	if cfg.TLS, err = LoadTLS(p.Server.CertFile, p.Server.KeyFile, p.File); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, cfg)

	// thin01 takes the export, claiming to be someone else.
	a := certClient(t, s.addr, p, p.Client)
	if typ, msg := a.identify("52:54:00:aa:bb:cc", nbd.OverlayID{}); typ != nbd.RepAck {
		t.Fatalf("NBD_OPT_NBDROOT_CLIENT: %s %s", nbd.RepName(typ), msg)
	}
	if _, err := a.infoGo(nbd.OptGo, "root"); err != nil {
		t.Fatal(err)
	}
	// Another certificate from the same address is another client: the writer lock holds.
	b := certClient(t, s.addr, p, thin02)
	_, err = b.infoGo(nbd.OptGo, "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write by thin01 (127.0.0.1)")
	// A certificate whose common name is not an identity gives its DNS name.
	c := certClient(t, s.addr, p, odd)
	_, err = c.infoGo(nbd.OptGo, "root")
	wantRefusal(t, err, nbd.RepErrPolicy, "in use read-write by thin01")
	a.disconnect()

	logs := s.logs.String()
	for _, want := range []string{
		"TLS up, client certificate CN=thin01: client identity thin01",
		"client claims identity 52:54:00:aa:bb:cc; its certificate CN=thin01 says thin01: the certificate's is used",
		`NBD_OPT_GO export "root" read-write [TLS, client thin01]`,
		"TLS up, client certificate CN=Thin Client 3 DNS=thin03.lab: client identity thin03.lab",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("server log lacks %q:\n%s", want, logs)
		}
	}
}

// TestAllowCertificates: allow= names certificates besides networks; a client passes when
// one entry admits it, and sees in NBD_OPT_LIST only the exports it may use.
func TestAllowCertificates(t *testing.T) {
	p := pki.New(t, "thin-01")
	lab := p.Issue(t, "lab", pki.Options{CommonName: "printer", DNS: []string{"printer.lab.example"}, Client: true})
	tlsCfg, err := LoadTLS(p.Server.CertFile, p.Server.KeyFile, p.File)
	if err != nil {
		t.Fatal(err)
	}
	var exports []Export
	for _, spec := range []string{
		"thin=" + makeImage(t, testSize) + ",allow=cn:thin-*",
		"lab=" + makeImage(t, testSize) + ",allow=dns:*.lab.example",
		"both=" + makeImage(t, testSize) + ",allow=10.9.0.0/16,allow=cn:thin-01",
		"net=" + makeImage(t, testSize) + ",allow=10.9.0.0/16",
	} {
		e, err := ParseExport(spec)
		if err != nil {
			t.Fatal(err)
		}
		exports = append(exports, e)
	}
	s := startServer(t, Config{Exports: exports, TLSMode: TLSRequire, TLS: tlsCfg})
	for _, tc := range []struct {
		cert    *pki.Cert
		cn      string
		allowed []string
		refused []string
	}{
		{p.Client, "thin-01", []string{"thin", "both"}, []string{"lab", "net"}},
		{lab, "printer", []string{"lab"}, []string{"thin", "both", "net"}},
	} {
		for _, name := range tc.allowed {
			c := certClient(t, s.addr, p, tc.cert)
			if _, err := c.infoGo(nbd.OptInfo, name); err != nil {
				t.Errorf("%s: export %s refused: %v", tc.cert.CertFile, name, err)
			}
		}
		for _, name := range tc.refused {
			c := certClient(t, s.addr, p, tc.cert)
			_, err := c.infoGo(nbd.OptInfo, name)
			// Hidden from this client: answered as an export that does not exist (issue
			// 13); the log names the certificate the allow-list refused.
			wantRefusal(t, err, nbd.RepErrUnknown, fmt.Sprintf("no export named %q", name))
			if want := fmt.Sprintf("(certificate CN=%s", tc.cn); !strings.Contains(s.logs.String(), want) {
				t.Errorf("server log does not name the refused certificate %q:\n%s", want, s.logs)
			}
		}
	}

	// Certificate rules need client certificates to match.
	noCA, err := LoadTLS(p.Server.CertFile, p.Server.KeyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	var ce *ConfigError
	if err := (&Config{Exports: exports[:1], TLSMode: TLSRequire, TLS: noCA}).Validate(); !errors.As(err, &ce) || !errors.Is(err, errCertRulesNeedCA) {
		t.Errorf("certificate rules without a client CA: %v", err)
	}
}

func TestParseAllow(t *testing.T) {
	for _, tc := range []struct {
		spec  string
		certs []CertRule
		nets  int
		err   string
	}{
		{spec: "r=/i,allow=cn:thin-*,allow=dns:*.lab,allow=10.0.0.0/8", certs: []CertRule{{"cn", "thin-*"}, {"dns", "*.lab"}}, nets: 1},
		{spec: "r=/i,allow=cn:", err: "empty pattern"},
		{spec: "r=/i,allow=cn:[", err: "syntax error in pattern"},
		{spec: "r=/i,allow=uri:x", err: "network"},
	} {
		e, err := ParseExport(tc.spec)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.spec, err, tc.err)
			}
			continue
		}
		if err != nil || len(e.Allow) != tc.nets || len(e.AllowCerts) != len(tc.certs) {
			t.Errorf("%s: %+v %+v, %v", tc.spec, e.Allow, e.AllowCerts, err)
			continue
		}
		for i, r := range tc.certs {
			if e.AllowCerts[i] != r {
				t.Errorf("%s: rule %d is %v, want %v", tc.spec, i, e.AllowCerts[i], r)
			}
		}
	}
	// nbd-server INI: the same entries, comma-separated.
	sf, err := ParseServerFile(strings.NewReader("[generic]\n[root]\nexportname = /srv/root.img\nallow = 10.0.0.0/8, cn:thin-*\n"), "test.conf", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e := sf.Exports[0]; len(e.Allow) != 1 || len(e.AllowCerts) != 1 || e.AllowCerts[0].String() != "cn:thin-*" {
		t.Errorf("INI allow: %+v %+v", e.Allow, e.AllowCerts)
	}
}

// FuzzCertificateIdentity: whatever names a verified certificate carries, the identity it
// gives is empty or a valid client identity taken from its common name or a DNS name.
func FuzzCertificateIdentity(f *testing.F) {
	f.Add("52:54:00:12:34:56", "")
	f.Add("thin client 7", "thin-7.lab.example,x")
	f.Add("", "../etc")
	f.Add(strings.Repeat("a", 65), "b")
	f.Fuzz(func(t *testing.T, cn, dns string) {
		leaf := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
		if dns != "" {
			leaf.DNSNames = strings.Split(dns, ",")
		}
		c := newCertificate(leaf)
		if c.id == "" {
			return
		}
		if err := nbd.ValidateIdentity(c.id); err != nil {
			t.Fatalf("identity %q: %v", c.id, err)
		}
		if c.id != cn && !slices.Contains(leaf.DNSNames, c.id) {
			t.Fatalf("identity %q is not among the certificate's names", c.id)
		}
	})
}
