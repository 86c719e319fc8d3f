package hooks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/initramfs/layout"
	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// imageWithTLS writes the image's TLS files under a temporary root: "ca", "cert", "key".
func imageWithTLS(t *testing.T, files ...string) string {
	root := t.TempDir()
	paths := map[string]string{"ca": layout.TLSCA, "cert": layout.TLSCert, "key": layout.TLSKey}
	for _, f := range files {
		p := filepath.Join(root, paths[f])
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f+" PEM"), 0o400); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// securedDial makes the fake server's connections look like kernel TLS connections.
func securedDial(dial nbdclient.DialFunc) nbdclient.DialFunc {
	return func(ctx context.Context, addr string, o nbdclient.DialOptions) (*nbdclient.Conn, error) {
		c, err := dial(ctx, addr, o)
		if err == nil {
			c.TLS = &nbdclient.TLSState{Suite: ktls.CHACHA20POLY1305SHA256, Kernel: true}
		}
		return c, err
	}
}

func TestNBDHookTLS(t *testing.T) {
	info := nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags | nbd.TransSendFlush}
	const base = "nbd_server=10.0.0.1 root=/dev/nbd0 "
	for _, tc := range []struct {
		name    string
		cmdline string
		files   []string
		want    *nbdclient.TLSSettings
		log     string
		param   string // of the failure
		problem string
	}{
		{name: "the image carries a CA: TLS required", cmdline: base, files: []string{"ca", "cert", "key"},
			want: &nbdclient.TLSSettings{Mode: nbdclient.TLSRequire, CAPEM: "ca PEM", CertPEM: "cert PEM", KeyPEM: "key PEM"},
			log:  "nbd: TLS 1.3 TLS_CHACHA20_POLY1305_SHA256, kernel TLS"},
		{name: "no CA, nothing asked: no TLS", cmdline: base},
		{name: "off despite a CA", cmdline: base + "nbdroot.tls=off", files: []string{"ca"},
			log: "nbd: WARNING: nbdroot.tls=off: the image carries a TLS CA, but the root is read in clear text"},
		{name: "on, a name, no kernel TLS", cmdline: base + "nbdroot.tls=on nbdroot.tlsname=nbd.lab nbdroot.ktls=0", files: []string{"ca"},
			want: &nbdclient.TLSSettings{Mode: nbdclient.TLSIfOffered, ServerName: "nbd.lab", CAPEM: "ca PEM", NoKernelTLS: true}},
		{name: "required without a CA", cmdline: base + "nbdroot.tls=require",
			param: "nbdroot.tls=require", problem: "the image carries no CA"},
		{name: "a certificate without its key", cmdline: base, files: []string{"ca", "cert"},
			param: "nbdroot.tls (unset: required, the image carries a CA)", problem: "client certificate and key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := newFakes()
			sys.nbd.dial = nbdDialer(t, info)
			if tc.want != nil {
				sys.nbd.dial = securedDial(sys.nbd.dial)
			}
			s, buf, err := newTestState(tc.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			err = NBD{Budget: 10 * time.Second, ImageRoot: imageWithTLS(t, tc.files...)}.Run(context.Background(), s)
			if tc.param != "" {
				var f *Failure
				if !errors.As(err, &f) || f.Param != tc.param || !strings.Contains(err.Error(), tc.problem) {
					t.Fatalf("err = %v; want a failure of %s: %s", err, tc.param, tc.problem)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, buf)
			}
			got := sys.nbd.requests[0].TLS
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("TLS settings (-want +got):\n%s", diff)
			}
			if !strings.Contains(buf.String(), tc.log) {
				t.Errorf("console lacks %q:\n%s", tc.log, buf)
			}
		})
	}
}

// TestNBDHookTLSFailure: a TLS failure names what to check — the TLS parameter, the
// name parameter or the image's file behind the reason — not the server's parameter.
func TestNBDHookTLSFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cmdline string
		reason  nbdclient.TLSReason
		param   string
	}{
		{"STARTTLS refused", "nbdroot.tls=require", nbdclient.TLSRefused, "nbdroot.tls=require"},
		{"STARTTLS refused, TLS from the image", "", nbdclient.TLSRefused, "nbdroot.tls (unset: required, the image carries a CA)"},
		{"expired", "", nbdclient.TLSExpired, "nbdroot.tls (unset: required, the image carries a CA)"},
		{"wrong CA", "nbdroot.tls=require", nbdclient.TLSUnknownCA, "the image's CA " + layout.TLSCA + " (nbdroot initramfs --tls-ca)"},
		{"wrong name", "", nbdclient.TLSWrongName, "nbdroot.tlsname (unset: the server's address is checked)"},
		{"wrong name given", "nbdroot.tlsname=nbd.lab", nbdclient.TLSWrongName, "nbdroot.tlsname=nbd.lab"},
		{"client certificate refused", "", nbdclient.TLSClientRejected, "the image's client certificate " + layout.TLSCert + " (nbdroot initramfs --tls-cert)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sys := newFakes()
			sys.nbd.dial = func(ctx context.Context, addr string, o nbdclient.DialOptions) (*nbdclient.Conn, error) {
				return nil, &nbdclient.DialError{Server: addr, Export: o.Export, Err: &nbdclient.TLSError{Reason: tc.reason, Err: errors.New("the reason")}}
			}
			s, _, err := newTestState("nbd_server=10.0.0.1 root=/dev/nbd0 "+tc.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			err = NBD{Budget: 100 * time.Millisecond, ImageRoot: imageWithTLS(t, "ca")}.Run(context.Background(), s)
			var f *Failure
			if !errors.As(err, &f) || !strings.Contains(err.Error(), "NBD server 10.0.0.1:10809, the default export: TLS: the reason") {
				t.Fatalf("err = %v, want a failure naming the server and the reason", err)
			}
			if f.Param != tc.param {
				t.Errorf("parameter %q, want %q", f.Param, tc.param)
			}
		})
	}
}
