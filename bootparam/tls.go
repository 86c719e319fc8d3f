package bootparam

import "strings"

// The values of nbdroot.tls= (NBD.TLS).
const (
	// TLSOff never upgrades, even when the image carries a CA.
	TLSOff = "off"
	// TLSOn upgrades when the server accepts NBD_OPT_STARTTLS, and goes on in clear text
	// when it refuses.
	TLSOn = "on"
	// TLSRequire refuses a server that does not upgrade.
	TLSRequire = "require"
)

// buildTLS reads the TLS knobs: nbdroot.tls=off|on|require (unset: the init requires TLS
// when the image carries a CA, see NBD.TLS), nbdroot.tlsname=NAME (the name the server's
// certificate must carry) and nbdroot.ktls=0 (the keeper relays the records instead of
// the kernel).
func (b *builder) buildTLS() error {
	n := &b.plan.NBD
	if p, ok := b.get("nbdroot.tls"); ok {
		const form = "nbdroot.tls=require|on|off"
		switch v := strings.ToLower(p.Value); v {
		case TLSOff, TLSOn, TLSRequire:
			n.TLS = v
		case "1", "yes", "true":
			n.TLS = TLSRequire
		case "0", "no", "false":
			n.TLS = TLSOff
		default:
			return perr(p.Name, p.Value, "not a TLS mode", form)
		}
		b.src("nbd.tls", p.String())
	}
	if p, ok := b.get("nbdroot.tlsname"); ok {
		if p.Value == "" || strings.ContainsAny(p.Value, " /,") || len(p.Value) > 253 {
			return perr(p.Name, p.Value, "not a host name or address", "nbdroot.tlsname=NAME (a name the server's certificate carries)")
		}
		n.TLSName = p.Value
		b.src("nbd.tls_name", p.String())
	}
	if p, ok := b.get("nbdroot.ktls"); ok {
		v, err := parseBool(p)
		if err != nil {
			return err
		}
		n.NoKernelTLS = !v
		b.src("nbd.no_ktls", p.String())
	}
	return nil
}

// describeTLS says what the TLS fields decide, for Explain.
func describeTLS(n NBD) string {
	var s string
	switch n.TLS {
	case "":
		s = "required when the image carries a CA (nbdroot initramfs --tls-ca), else off"
	case TLSOff:
		s = "off"
	case TLSOn:
		s = "when the server offers it (a server that refuses gets clear text)"
	case TLSRequire:
		s = "required (NBD_OPT_STARTTLS, the server's certificate checked against the image's CA)"
	}
	if n.TLSName != "" {
		s += "; the server's certificate must name " + n.TLSName
	}
	if n.NoKernelTLS {
		s += "; the keeper relays the records (no kernel TLS)"
	}
	return s
}
