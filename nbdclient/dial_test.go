package nbdclient

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

// serveTCP runs handle for every connection to a loopback listener and returns its address.
func serveTCP(t *testing.T, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// closedPort returns a loopback address nobody listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDialErrors(t *testing.T) {
	exports := map[string]uint64{"root": 1 << 30, "swap": 1 << 20}
	policy := func(w io.Writer, opt uint32, data []byte) bool {
		w.Write(nbd.AppendOptReply(nil, opt, nbd.RepErrPolicy, []byte("not from your address")))
		return true
	}
	tests := []struct {
		name   string
		addr   func(t *testing.T) string
		export string
		want   []string // regexps the error must match
		is     error
	}{
		{
			name: "refused",
			addr: closedPort,
			want: []string{`^NBD server 127\.0\.0\.1:\d+, the default export: connection refused: is the server running`},
			is:   syscall.ECONNREFUSED,
		},
		{
			name: "unknown export lists the others",
			addr: func(t *testing.T) string {
				return serveTCP(t, fakeServer{flags: 3, onOpt: goServer(t, exports)}.handler(t))
			},
			export: "nope",
			want: []string{`^NBD server 127\.0\.0\.1:\d+, export "nope": server refused NBD_OPT_GO: NBD_REP_ERR_UNKNOWN`,
				`the server offers: ("root", "swap"|"swap", "root")\)$`},
		},
		{
			name:   "policy",
			addr:   func(t *testing.T) string { return serveTCP(t, fakeServer{flags: 3, onOpt: policy}.handler(t)) },
			export: "root",
			want:   []string{`NBD_REP_ERR_POLICY .*: not from your address \(the server's access policy refuses this client`},
		},
		{
			name: "closed before the greeting",
			addr: func(t *testing.T) string { return serveTCP(t, func(c net.Conn) {}) },
			want: []string{`the server closed the connection during the handshake`},
			is:   io.EOF,
		},
		{
			name: "short read",
			addr: func(t *testing.T) string {
				return serveTCP(t, func(c net.Conn) { c.Write(binary.BigEndian.AppendUint64(nil, nbd.NBDMagic)[:5]) })
			},
			want: []string{`short read: the server closed the connection mid-message`},
			is:   io.ErrUnexpectedEOF,
		},
		{
			name: "bad magic",
			addr: func(t *testing.T) string {
				return serveTCP(t, func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian\r\n")) })
			},
			want: []string{`bad greeting magic 0x5353482d322e302d .*\(is this port an NBD server\?\)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			addr := tt.addr(t)
			c, err := Dial(ctx, addr, DialOptions{Export: tt.export})
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			var de *DialError
			if !errors.As(err, &de) || de.Server != addr || de.Export != tt.export {
				t.Errorf("error %v is not a DialError for %s %q", err, addr, tt.export)
			}
			for _, w := range tt.want {
				if !regexp.MustCompile(w).MatchString(err.Error()) {
					t.Errorf("error %q does not match %q", err, w)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

func (s fakeServer) handler(t *testing.T) func(net.Conn) {
	return func(c net.Conn) { s.run(t, c) }
}

func TestDialSocketOptions(t *testing.T) {
	addr := serveTCP(t, fakeServer{flags: 3, onOpt: goServer(t, map[string]uint64{"root": 4096})}.handler(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, DialOptions{Export: "root"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	f, err := c.File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	checkSocketOptions(t, int(f.Fd()))
}

func TestDialConns(t *testing.T) {
	multi := nbd.ExportInfo{Size: 100, Flags: nbd.TransHasFlags | nbd.TransCanMultiConn}
	single := nbd.ExportInfo{Size: 100, Flags: nbd.TransHasFlags}
	tests := []struct {
		name      string
		ask       int
		infos     []nbd.ExportInfo // per dial, in order; a zero Size means the dial fails
		want      int
		wantNotes []string
		wantErr   bool
	}{
		{"one asked", 1, []nbd.ExportInfo{multi}, 1, nil, false},
		{"multi-conn", 4, []nbd.ExportInfo{multi, multi, multi, multi}, 4, nil, false},
		{"no multi-conn", 2, []nbd.ExportInfo{single}, 1, []string{"does not allow multi-conn"}, false},
		{"extra fails", 4, []nbd.ExportInfo{multi, multi, {}}, 2, []string{"extra connection 3 to a:1: refused; continuing with 2"}, false},
		{"extra differs", 4, []nbd.ExportInfo{multi, {Size: 50, Flags: multi.Flags}}, 1, []string{"describes the export differently"}, false},
		{"first fails", 4, []nbd.ExportInfo{{}}, 0, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
			n := 0
			dial := func(ctx context.Context, _ string, _ DialOptions) (*Conn, error) {
				info := tt.infos[n]
				n++
				if info.Size == 0 {
					return nil, errors.New("refused")
				}
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", addr)
				if err != nil {
					return nil, err
				}
				return &Conn{TCPConn: c.(*net.TCPConn), Info: info}, nil
			}
			var notes []string
			want := tt.ask
			conns, err := DialConns(context.Background(), dial, "a:1", DialOptions{Export: "root"}, want, func(s string) { notes = append(notes, s) })
			defer CloseAll(conns)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if len(conns) != tt.want {
				t.Errorf("%d connections, want %d", len(conns), tt.want)
			}
			if len(notes) != len(tt.wantNotes) {
				t.Fatalf("notes %q, want %q", notes, tt.wantNotes)
			}
			for i, w := range tt.wantNotes {
				if !strings.Contains(notes[i], w) {
					t.Errorf("note %q does not say %q", notes[i], w)
				}
			}
		})
	}
}

// TestNeverStructuredReplies records every option a client sends: a socket for the kernel
// must never negotiate structured replies or extended headers (the kernel reads only simple
// replies).
func TestNeverStructuredReplies(t *testing.T) {
	var opts []uint32
	srv := fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: func(w io.Writer, opt uint32, data []byte) bool {
		opts = append(opts, opt)
		return goServer(t, map[string]uint64{"root": 1 << 20})(w, opt, data)
	}}
	if _, err := handshakeWith(t, srv, "root"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{nbd.OptGo}, opts); diff != "" {
		t.Errorf("options sent (-want +got):\n%s", diff)
	}
}
