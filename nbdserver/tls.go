package nbdserver

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// Client certificates (docs/tls.md): a client that presents a certificate the server's CA
// (--tls-ca) verified is known by it. Its certificate gives it a client identity — the
// subject's common name when that is a valid identity, else its first DNS name that is —
// which keys its overlays and its writer lock like NBD_OPT_NBDROOT_CLIENT does, except
// that nobody can claim it without the key: an identity the client claims in that option
// is overridden by its certificate's (and logged when they differ). And an export's
// allow= list can name certificates (CertRule) besides networks.

// certificate is what the server knows of a verified client certificate.
type certificate struct {
	cn  string
	dns []string
	// id is the client identity the certificate gives, "" when neither its common name
	// nor a DNS name is a valid identity.
	id string
}

// String names the certificate in logs and refusals.
func (c *certificate) String() string {
	s := "certificate CN=" + c.cn
	if len(c.dns) > 0 {
		s += " DNS=" + strings.Join(c.dns, ",")
	}
	return s
}

// newCertificate reads the client's verified leaf certificate.
func newCertificate(leaf *x509.Certificate) *certificate {
	c := &certificate{cn: leaf.Subject.CommonName, dns: leaf.DNSNames}
	for _, cand := range append([]string{c.cn}, c.dns...) {
		if nbd.ValidateIdentity(cand) == nil {
			c.id = cand
			break
		}
	}
	return c
}

// authenticate takes the identity of a client that presented a certificate after the TLS
// handshake: from then on the connection is keyed by it.
func (c *conn) authenticate(cs tls.ConnectionState) {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return // no certificate, or one nobody asked for (no --tls-ca): it proves nothing
	}
	cert := newCertificate(cs.PeerCertificates[0])
	c.client.cert = cert
	if cert.id == "" {
		c.logf("TLS up, client %s: it names no valid client identity (1-64 of A-Za-z0-9._:-); keyed as without a certificate", cert)
		return
	}
	c.client.key = ovstore.Client{ID: cert.id}
	c.logf("TLS up, client %s: client identity %s", cert, cert.id)
}

// claim decides between an identity the client claims (NBD_OPT_NBDROOT_CLIENT) and its
// certificate's: the certificate's wins, and a disagreement is logged.
func (c *conn) claim(id string) string {
	if c.client.cert == nil || c.client.cert.id == "" {
		return id
	}
	if id != c.client.cert.id {
		c.logf("client claims identity %s; its %s says %s: the certificate's is used", id, c.client.cert, c.client.cert.id)
	}
	return c.client.cert.id
}

// CertRule is an allow= entry that admits clients by their verified TLS certificate:
// "cn:PATTERN" matches the subject's common name, "dns:PATTERN" any DNS subject
// alternative name. PATTERN is a shell pattern (path.Match: * and ? do not cross '/'),
// so "cn:thin-*" or "dns:*.lab.example".
type CertRule struct {
	Field   string // "cn" or "dns"
	Pattern string
}

// String returns the rule as written.
func (r CertRule) String() string { return r.Field + ":" + r.Pattern }

// ParseCertRule parses "cn:PATTERN" or "dns:PATTERN"; ok is false for anything else (a
// network).
func ParseCertRule(s string) (r CertRule, ok bool, err error) {
	field, pat, found := strings.Cut(strings.TrimSpace(s), ":")
	if !found || (field != "cn" && field != "dns") {
		return CertRule{}, false, nil
	}
	if pat == "" {
		return CertRule{}, true, fmt.Errorf("allow=%s: empty pattern", s)
	}
	if _, err := path.Match(pat, ""); err != nil {
		return CertRule{}, true, fmt.Errorf("allow=%s: %w", s, err)
	}
	return CertRule{Field: field, Pattern: pat}, true, nil
}

// matches reports whether a verified certificate satisfies the rule.
func (r CertRule) matches(c *certificate) bool {
	if c == nil {
		return false
	}
	names := []string{c.cn}
	if r.Field == "dns" {
		names = c.dns
	}
	for _, n := range names {
		if ok, _ := path.Match(r.Pattern, n); ok && n != "" {
			return true
		}
	}
	return false
}

// errCertRulesNeedCA refuses certificate rules a server cannot apply: without a client CA
// no certificate is verified, and nobody would match.
var errCertRulesNeedCA = errors.New("allow=cn:/dns: needs TLS with client certificates (--tls-ca)")

// validateCertRules checks that exports with certificate rules can be matched.
func (c *Config) validateCertRules() error {
	for _, e := range c.Exports {
		if len(e.AllowCerts) > 0 && (c.TLSMode == TLSOff || c.TLS == nil || c.TLS.ClientCAs == nil) {
			return &ConfigError{fmt.Sprintf("export %q", e.Name), errCertRulesNeedCA}
		}
	}
	return nil
}

// addAllow adds one allow= entry: a certificate rule, or a network.
func (e *Export) addAllow(s string) error {
	r, ok, err := ParseCertRule(s)
	switch {
	case err != nil:
		return err
	case ok:
		e.AllowCerts = append(e.AllowCerts, r)
		return nil
	}
	p, err := ParsePrefix(s)
	if err != nil {
		return err
	}
	e.Allow = append(e.Allow, p)
	return nil
}

// admits reports whether an allow= entry of the export admits the TCP client c.
func (e *Export) admits(c client) bool {
	for _, p := range e.Allow {
		if p.Contains(c.addr) {
			return true
		}
	}
	for _, r := range e.AllowCerts {
		if r.matches(c.cert) {
			return true
		}
	}
	return false
}
