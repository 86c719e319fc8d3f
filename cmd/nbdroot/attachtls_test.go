package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nbdroot/nbdroot/nbdclient"
)

func TestAttachTLSFlags(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, []byte("CA"), 0o644)
	for _, tc := range []struct {
		name string
		f    attachTLSFlags
		want *nbdclient.TLSSettings
		err  string
	}{
		{name: "no TLS", f: attachTLSFlags{}},
		{name: "a CA requires TLS", f: attachTLSFlags{ca: ca, name: "nbd.lab"},
			want: &nbdclient.TLSSettings{Mode: nbdclient.TLSRequire, CAPEM: "CA", ServerName: "nbd.lab"}},
		{name: "on", f: attachTLSFlags{mode: "on", ca: ca, noKTLS: true},
			want: &nbdclient.TLSSettings{Mode: nbdclient.TLSIfOffered, CAPEM: "CA", NoKernelTLS: true}},
		{name: "require without a CA", f: attachTLSFlags{mode: "require"}, err: "needs --tls-ca"},
		{name: "off with a CA", f: attachTLSFlags{mode: "off", ca: ca}, err: "--tls off with certificates"},
		{name: "certificate without key", f: attachTLSFlags{ca: ca, cert: ca}, err: "go together"},
		{name: "bad mode", f: attachTLSFlags{mode: "maybe", ca: ca}, err: `--tls "maybe"`},
		{name: "missing CA", f: attachTLSFlags{ca: filepath.Join(dir, "nope.pem")}, err: "--tls-ca: open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.f.settings()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got == nil) != (tc.want == nil) || got != nil && (got.Mode != tc.want.Mode || got.CAPEM != tc.want.CAPEM ||
				got.ServerName != tc.want.ServerName || got.NoKernelTLS != tc.want.NoKernelTLS) {
				t.Errorf("settings %+v, want %+v", got, tc.want)
			}
		})
	}
}
