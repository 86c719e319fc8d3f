package initramfs

import (
	"crypto/tls"
	"crypto/x509"
	"debug/buildinfo"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/initramfs/layout"
)

// TLSFiles are the client's TLS material for an image (nbdroot initramfs --tls-ca,
// --tls-cert, --tls-key): the CA the NBD server's certificate must chain to, and the
// client's own certificate and key for servers that ask for one. The init speaks TLS
// when the image carries a CA (docs/tls.md).
type TLSFiles struct {
	CA, Cert, Key string
}

// NoTLSTag is the build tag of an init without TLS (nbdroot-init; nbdroot-init-tls has it).
const NoTLSTag = "nbdroot_notls"

// TLSInitName is the file name of the init built with TLS, beside nbdroot-init.
const TLSInitName = "nbdroot-init-tls"

// tlsHook is the catalog's hook for the kernel's side of TLS (its modules).
const tlsHook = "tls"

// prepareTLS checks the TLS files, and returns the hooks with "tls" added
// (right before nbd) when TLS is asked for and the list does not have it. Warnings are
// what the user should know: a certificate near or past its end, the key inside the image.
func prepareTLS(opts Options, hooks []string) ([]string, []string, error) {
	t := opts.TLS
	if t == nil {
		return hooks, nil, nil
	}
	if t.CA == "" {
		return nil, nil, errors.New("--tls-cert and --tls-key need --tls-ca: the init verifies the server with it")
	}
	if (t.Cert == "") != (t.Key == "") {
		return nil, nil, errors.New("--tls-cert and --tls-key go together")
	}
	ca, err := os.ReadFile(t.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-ca: %w", err)
	}
	var warns []string
	cas, err := parseCerts(ca)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-ca %s: %w", t.CA, err)
	}
	for _, c := range cas {
		warns = append(warns, validity("--tls-ca", c)...)
	}
	if t.Key != "" {
		st, err := os.Stat(t.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-key: %w", err)
		}
		// As ssh does with its keys: a private key every user of this machine can read is
		// no longer private.
		if st.Mode().Perm()&0o004 != 0 {
			return nil, nil, fmt.Errorf("--tls-key %s is readable by every user of this machine (mode %04o): chmod o-r it first", t.Key, st.Mode().Perm())
		}
		certPEM, err := os.ReadFile(t.Cert)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert: %w", err)
		}
		keyPEM, err := os.ReadFile(t.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-key: %w", err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert %s and --tls-key %s: %w", t.Cert, t.Key, err)
		}
		warns = append(warns, validity("--tls-cert", pair.Leaf)...)
		warns = append(warns, fmt.Sprintf("the image carries the client's private key (--tls-key): whoever can fetch the image (over TFTP or HTTP) can be this client; see docs/tls.md"))
	}
	if slices.Contains(hooks, tlsHook) {
		return hooks, warns, nil
	}
	out := make([]string, 0, len(hooks)+1)
	for _, h := range hooks {
		if h == "nbd" {
			out = append(out, tlsHook)
		}
		out = append(out, h)
	}
	if len(out) == len(hooks) {
		out = append(out, tlsHook)
	}
	return out, warns, nil
}

// initHasTLS refuses an init built without TLS: its build information records the tag.
func initHasTLS(init string) error {
	bi, err := buildinfo.ReadFile(init)
	if err != nil {
		return fmt.Errorf("--init %s: cannot tell whether it speaks TLS: %w", init, err)
	}
	for _, s := range bi.Settings {
		if s.Key == "-tags" && slices.Contains(strings.Split(s.Value, ","), NoTLSTag) {
			return fmt.Errorf("--init %s was built without TLS (-tags %s): use %s (make build puts it beside nbdroot-init)", init, NoTLSTag, TLSInitName)
		}
	}
	return nil
}

// parseCerts reads the PEM certificates of a CA bundle.
func parseCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate in it")
	}
	return out, nil
}

// validity warns about a certificate that is expired, not yet valid, or ends within 30 days.
func validity(flag string, c *x509.Certificate) []string {
	now := time.Now()
	name := c.Subject.CommonName
	switch {
	case now.After(c.NotAfter):
		return []string{fmt.Sprintf("%s: certificate %q expired on %s", flag, name, c.NotAfter.Format(time.DateOnly))}
	case now.Before(c.NotBefore):
		return []string{fmt.Sprintf("%s: certificate %q is valid only from %s", flag, name, c.NotBefore.Format(time.DateOnly))}
	case c.NotAfter.Sub(now) < 30*24*time.Hour:
		return []string{fmt.Sprintf("%s: certificate %q expires on %s", flag, name, c.NotAfter.Format(time.DateOnly))}
	}
	return nil
}

// addTLS puts the TLS files into the image at the paths the init reads (layout): the key
// readable by root only.
func (img *image) addTLS() error {
	t := img.opts.TLS
	if t == nil {
		return nil
	}
	for _, f := range []struct {
		src, dst string
		mode     uint32
		what     string
	}{{t.CA, layout.TLSCA, 0o644, "TLS CA"}, {t.Cert, layout.TLSCert, 0o644, "TLS client certificate"}, {t.Key, layout.TLSKey, 0o400, "TLS client key"}} {
		if f.src == "" {
			continue
		}
		b, err := os.ReadFile(f.src)
		if err != nil {
			return err
		}
		if err := img.tree.file(f.dst, b, f.mode, f.what+" "+f.src); err != nil {
			return err
		}
	}
	return nil
}
