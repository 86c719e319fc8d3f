package main

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/nbdroot/nbdroot/nbdclient"
)

// attachTLSFlags are the TLS flags of `nbdroot attach`.
type attachTLSFlags struct {
	mode, ca, cert, key, name string
	noKTLS                    bool
}

func (f *attachTLSFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.mode, "tls", "", "")
	fs.StringVar(&f.ca, "tls-ca", "", "")
	fs.StringVar(&f.cert, "tls-cert", "", "")
	fs.StringVar(&f.key, "tls-key", "", "")
	fs.StringVar(&f.name, "tls-name", "", "")
	fs.BoolVar(&f.noKTLS, "no-ktls", false, "")
}

// settings turns the flags into the attach's TLS: none without --tls-ca (or with --tls
// off), required unless --tls on.
func (f *attachTLSFlags) settings() (*nbdclient.TLSSettings, error) {
	mode := nbdclient.TLSRequire
	switch f.mode {
	case "", "require":
	case "on":
		mode = nbdclient.TLSIfOffered
	case "off":
		if f.ca != "" || f.cert != "" || f.key != "" {
			return nil, errors.New("--tls off with certificates: drop one or the other")
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("--tls %q: want require, on or off", f.mode)
	}
	if f.ca == "" {
		if f.mode != "" || f.cert != "" || f.key != "" || f.name != "" || f.noKTLS {
			return nil, errors.New("TLS needs --tls-ca FILE: the CA the server's certificate must chain to")
		}
		return nil, nil
	}
	if (f.cert == "") != (f.key == "") {
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	s := &nbdclient.TLSSettings{Mode: mode, ServerName: f.name, NoKernelTLS: f.noKTLS}
	for _, r := range []struct {
		flag, path string
		dst        *string
	}{{"--tls-ca", f.ca, &s.CAPEM}, {"--tls-cert", f.cert, &s.CertPEM}, {"--tls-key", f.key, &s.KeyPEM}} {
		if r.path == "" {
			continue
		}
		b, err := os.ReadFile(r.path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.flag, err)
		}
		*r.dst = string(b)
	}
	return s, nil
}
