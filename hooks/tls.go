package hooks

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/initramfs/layout"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// tlsSettings decides the root's TLS from the command line and the image: nbdroot.tls=
// when given, else TLS required when the image carries a CA (it was built for TLS: a
// forgotten parameter must not mean clear text). The certificates are read here, before
// switch_root deletes the image, and travel to the keeper as PEM.
func (h NBD) tlsSettings(s *State, n bootparam.NBD) (*nbdclient.TLSSettings, error) {
	ca, caErr := os.ReadFile(h.imagePath(layout.TLSCA))
	if caErr != nil && !errors.Is(caErr, fs.ErrNotExist) {
		return nil, fail("nbd", layout.TLSCA, "read the image's TLS CA", caErr)
	}
	mode := n.TLS
	switch {
	case mode == "" && caErr != nil:
		return nil, nil // an image without TLS, and nobody asked for it
	case mode == "":
		mode = bootparam.TLSRequire
	case mode == bootparam.TLSOff:
		if caErr == nil {
			s.Log.Printf("nbd: WARNING: nbdroot.tls=off: the image carries a TLS CA, but the root is read in clear text")
		}
		return nil, nil
	}
	param := tlsParam(s)
	if caErr != nil {
		return nil, fail("nbd", param, "set up TLS",
			fmt.Errorf("the image carries no CA to verify the server with (%s): build it with nbdroot initramfs --tls-ca FILE", layout.TLSCA))
	}
	if !nbdclient.TLSSupported() {
		return nil, fail("nbd", param, "set up TLS", nbdclient.ErrNoTLSSupport)
	}
	t := &nbdclient.TLSSettings{Mode: nbdclient.TLSRequire, ServerName: n.TLSName, CAPEM: string(ca), NoKernelTLS: n.NoKernelTLS}
	if mode == bootparam.TLSOn {
		t.Mode = nbdclient.TLSIfOffered
	}
	cert, certErr := os.ReadFile(h.imagePath(layout.TLSCert))
	key, keyErr := os.ReadFile(h.imagePath(layout.TLSKey))
	switch {
	case certErr == nil && keyErr == nil:
		t.CertPEM, t.KeyPEM = string(cert), string(key)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		// No client certificate: servers that ask for one refuse this client, and say so.
	default:
		return nil, fail("nbd", param, "read the image's client certificate and key", errors.Join(certErr, keyErr))
	}
	return t, nil
}

// imagePath is a path of the image's layout, under ImageRoot when set (tests).
func (h NBD) imagePath(p string) string {
	if h.ImageRoot == "" {
		return p
	}
	return filepath.Join(h.ImageRoot, p)
}

// tlsParam names what decided the root's TLS, for failures.
func tlsParam(s *State) string {
	if src := s.Plan.Sources["nbd.tls"]; src != "" {
		return src
	}
	return "nbdroot.tls (unset: required, the image carries a CA)"
}

// tlsFailureParam names what a TLS failure asks the user to check: the image's CA for a
// server certificate of another CA, nbdroot.tlsname for a certificate without the name
// checked, the image's client certificate for a server that refused it, else what
// decided the TLS mode (a server refusing STARTTLS, a certificate outside its validity).
func tlsFailureParam(s *State, te *nbdclient.TLSError) string {
	switch te.Reason {
	case nbdclient.TLSUnknownCA:
		return "the image's CA " + layout.TLSCA + " (nbdroot initramfs --tls-ca)"
	case nbdclient.TLSWrongName:
		if src := s.Plan.Sources["nbd.tls_name"]; src != "" {
			return src
		}
		return "nbdroot.tlsname (unset: the server's address is checked)"
	case nbdclient.TLSClientRejected:
		return "the image's client certificate " + layout.TLSCert + " (nbdroot initramfs --tls-cert)"
	}
	return tlsParam(s)
}
