package bootparam

import (
	"errors"
	"strings"
	"testing"
)

func TestParseTLS(t *testing.T) {
	const base = "ip=::::::dhcp nbd_server=10.0.0.1 root=/dev/nbd0 "
	for _, tc := range []struct {
		name, cmdline  string
		tls, tlsName   string
		noKTLS         bool
		explain        string
		param, problem string
	}{
		{name: "unset", cmdline: base, explain: "required when the image carries a CA"},
		{name: "require", cmdline: base + "nbdroot.tls=require", tls: TLSRequire, explain: "required (NBD_OPT_STARTTLS"},
		{name: "yes means require", cmdline: base + "nbdroot.tls=1", tls: TLSRequire},
		{name: "on", cmdline: base + "nbdroot.tls=on", tls: TLSOn, explain: "when the server offers it"},
		{name: "off", cmdline: base + "nbdroot.tls=off", tls: TLSOff},
		{name: "name and relay", cmdline: base + "nbdroot.tls=require nbdroot.tlsname=nbd.lab nbdroot.ktls=0",
			tls: TLSRequire, tlsName: "nbd.lab", noKTLS: true, explain: "must name nbd.lab; the keeper relays the records"},
		{name: "bad mode", cmdline: base + "nbdroot.tls=maybe", param: "nbdroot.tls", problem: "not a TLS mode"},
		{name: "bad name", cmdline: base + "nbdroot.tlsname=a/b", param: "nbdroot.tlsname", problem: "not a host name"},
		{name: "bad ktls", cmdline: base + "nbdroot.ktls=perhaps", param: "nbdroot.ktls", problem: "not a yes/no value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.cmdline)
			if tc.param != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Param != tc.param || !strings.Contains(pe.Reason, tc.problem) {
					t.Fatalf("err = %v; want %s: %s", err, tc.param, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			n := p.NBD
			if n.TLS != tc.tls || n.TLSName != tc.tlsName || n.NoKernelTLS != tc.noKTLS {
				t.Errorf("tls %q name %q no_ktls %v", n.TLS, n.TLSName, n.NoKernelTLS)
			}
			var b strings.Builder
			p.Explain(&b)
			if !strings.Contains(b.String(), tc.explain) {
				t.Errorf("explanation lacks %q:\n%s", tc.explain, b.String())
			}
		})
	}
}
