package bootparam

import (
	"errors"
	"net"
	"strings"
	"testing"
)

func TestParseServer(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{"10.0.0.1", "10.0.0.1:10809", ""},
		{"10.0.0.1:2000", "10.0.0.1:2000", ""},
		{"server.lan", "server.lan:10809", ""},
		{"[fd00::1]:2000", "[fd00::1]:2000", ""},
		{"[fd00::1]", "[fd00::1]:10809", ""},
		{"fd00::1", "[fd00::1]:10809", ""},
		{"", "", "host is empty"},
		{":2000", "", "host is empty"},
		{"host:0", "", "port must be 1-65535"},
		{"host:99999", "", "port must be 1-65535"},
		{"host:x", "", `port "x" is not a number`},
		{"host:", "", "':' without a port"},
		{"a:b:c", "", `host "a:b:c" is not an IPv6 address; write an IPv6 address with a port as [ADDR]:PORT`},
		{"[fd00::1", "", "'[' without ']'"},
		{"[fd00::1]x", "", `unexpected "x" after ']'`},
		{"[host]:1", "", "only an IPv6 address goes in brackets"},
		{"[10.0.0.1]", "", "only an IPv6 address goes in brackets"},
		{"0.0.0.0", "", "unspecified address"},
		{"10.0.0.256", "", "not a valid IPv4 address"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseServer(tt.in)
			if tt.wantErr != "" {
				var pe *ParamError
				if !errors.As(err, &pe) || pe.Param != "server" || !strings.Contains(pe.Reason, tt.wantErr) {
					t.Fatalf("ParseServer(%q) = %v, %v; want a server error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Errorf("ParseServer(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestUnbracket checks the whole-value form of nbd_host= and Debian's comma form.
func TestUnbracket(t *testing.T) {
	for in, want := range map[string]string{"fd00::1": "fd00::1", "[fd00::1]": "fd00::1", "srv": "srv"} {
		if got, r := unbracket(in); got != want || r != "" {
			t.Errorf("unbracket(%q) = %q, %q; want %q", in, got, r, want)
		}
	}
	for _, in := range []string{"[fd00::1", "fd00::1]", "[srv]", "[fd00::1]:1"} {
		if got, r := unbracket(in); r == "" {
			t.Errorf("unbracket(%q) = %q without a reason", in, got)
		}
	}
}

func FuzzParseServer(f *testing.F) {
	for _, s := range []string{"10.0.0.1", "h:1", "[::1]:5", "fd00::1", "", ":", "[", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		srv, err := ParseServer(s)
		if err != nil {
			checkParamError(t, err, "server")
			return
		}
		addr := srv.String()
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" {
			t.Fatalf("ParseServer(%q) = %q, which is not host:port", s, addr)
		}
		// Parsing is idempotent.
		if again, err := ParseServer(addr); err != nil || again != srv {
			t.Fatalf("ParseServer(%q) = %v, but ParseServer(%q) = %v, %v", s, srv, addr, again, err)
		}
	})
}
