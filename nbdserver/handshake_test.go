package nbdserver

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

const testSize = 4 << 20

func oneExport(t testing.TB, opts ...func(*Export)) Config {
	e := Export{Name: "root", Path: makeImage(t, testSize)}
	for _, o := range opts {
		o(&e)
	}
	return Config{Exports: []Export{e}}
}

func TestGreetingFlags(t *testing.T) {
	s := startServer(t, oneExport(t))
	c := dialTest(t, s.addr)
	if got := c.hello(nbd.ClientFlagFixedNewstyle); got != nbd.FlagFixedNewstyle|nbd.FlagNoZeroes {
		t.Fatalf("handshake flags %#x, want FIXED_NEWSTYLE|NO_ZEROES", got)
	}
}

// expectClosed checks that the server hangs up (proto.md lets it do so on violations).
func expectClosed(t *testing.T, c *testClient) {
	t.Helper()
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.Copy(io.Discard, c.br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("server kept the connection open (read %d bytes)", n)
	}
}

func TestUnknownClientFlagsClose(t *testing.T) {
	s := startServer(t, oneExport(t))
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle | 1<<7)
	expectClosed(t, c)
}

func TestGoInfo(t *testing.T) {
	rw := nbd.TransHasFlags | nbd.TransSendFlush | nbd.TransSendFUA | nbd.TransCanMultiConn | nbd.TransSendCache |
		nbd.TransSendWriteZeroes | nbd.TransSendFastZero | nbd.TransSendTrim
	ro := nbd.TransHasFlags | nbd.TransSendFlush | nbd.TransSendFUA | nbd.TransCanMultiConn | nbd.TransSendCache | nbd.TransReadOnly
	img := makeImage(t, testSize)
	img2 := makeImage(t, 2*testSize)
	tests := []struct {
		name       string
		exports    []Export
		opt        uint32
		ask        string
		structured bool
		infos      []uint16
		want       nbd.ExportInfo
		wantErr    uint32
	}{
		{name: "go by name", exports: []Export{{Name: "root", Path: img}}, opt: nbd.OptGo, ask: "root",
			want: nbd.ExportInfo{Size: testSize, Flags: rw, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
		{name: "single export is default", exports: []Export{{Name: "root", Path: img}}, opt: nbd.OptGo, ask: "",
			want: nbd.ExportInfo{Size: testSize, Flags: rw, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
		{name: "info with name and description", exports: []Export{{Name: "root", Path: img, Description: "thin client root"}},
			opt: nbd.OptInfo, ask: "root", infos: []uint16{nbd.InfoName, nbd.InfoDescription, 0x7777},
			want: nbd.ExportInfo{Name: "root", Description: "thin client root", Size: testSize, Flags: rw, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
		{name: "structured adds DF", exports: []Export{{Name: "root", Path: img}}, opt: nbd.OptInfo, ask: "root", structured: true,
			want: nbd.ExportInfo{Size: testSize, Flags: rw | nbd.TransSendDF, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
		{name: "read-only", exports: []Export{{Name: "root", Path: img, ReadOnly: true}}, opt: nbd.OptGo, ask: "root",
			want: nbd.ExportInfo{Size: testSize, Flags: ro, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
		{name: "notrim rotational", exports: []Export{{Name: "root", Path: img, NoTrim: true, Rotational: true}}, opt: nbd.OptInfo, ask: "root",
			want: nbd.ExportInfo{Size: testSize, Flags: rw&^nbd.TransSendTrim | nbd.TransRotational, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
		{name: "unknown name", exports: []Export{{Name: "root", Path: img}}, opt: nbd.OptGo, ask: "nosuch", wantErr: nbd.RepErrUnknown},
		{name: "no default among two", exports: []Export{{Name: "a", Path: img, ReadOnly: true}, {Name: "b", Path: img2}},
			opt: nbd.OptGo, ask: "", wantErr: nbd.RepErrUnknown},
		{name: "marked default among two", exports: []Export{{Name: "a", Path: img, ReadOnly: true}, {Name: "b", Path: img2, Default: true}},
			opt: nbd.OptGo, ask: "", want: nbd.ExportInfo{Size: 2 * testSize, Flags: rw, MinBlock: 1, PrefBlock: 4096, MaxBlock: nbd.MaxPayload}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, Config{Exports: tt.exports})
			c := dialTest(t, s.addr)
			c.hello(nbd.ClientFlagFixedNewstyle | nbd.ClientFlagNoZeroes)
			if tt.structured {
				c.simpleOption(nbd.OptStructuredReply, nil)
			}
			got, err := c.infoGo(tt.opt, tt.ask, tt.infos...)
			var oe *nbd.OptionError
			if tt.wantErr != 0 {
				if !errors.As(err, &oe) || oe.Type != tt.wantErr {
					t.Fatalf("got %v, want %s", err, nbd.RepName(tt.wantErr))
				}
				// Negotiation goes on after an error reply.
				if typ, _ := c.simpleOption(nbd.OptStructuredReply, nil); typ != nbd.RepAck {
					t.Fatalf("after error: %s", nbd.RepName(typ))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("export info (-want +got):\n%s\nflags want %v got %v", diff, nbd.FlagNames(tt.want.Flags), nbd.FlagNames(got.Flags))
			}
		})
	}
}

func TestExportName(t *testing.T) {
	for _, noZeroes := range []bool{false, true} {
		s := startServer(t, oneExport(t))
		c := dialTest(t, s.addr)
		flags := nbd.ClientFlagFixedNewstyle
		if noZeroes {
			flags |= nbd.ClientFlagNoZeroes
		}
		c.hello(flags)
		c.option(nbd.OptExportName, []byte("root"))
		n := 10
		if !noZeroes {
			n += 124
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(c.br, b); err != nil {
			t.Fatal(err)
		}
		if size := binary.BigEndian.Uint64(b); size != testSize {
			t.Errorf("size %d", size)
		}
		if f := binary.BigEndian.Uint16(b[8:]); f&nbd.TransSendFlush == 0 || f&nbd.TransHasFlags == 0 {
			t.Errorf("flags %v", nbd.FlagNames(f))
		}
		c.pending = map[uint64]nbd.Request{}
		if got := c.pread(0, 512); string(got) != string(pattern(0, 512)) {
			t.Error("read after EXPORT_NAME returned wrong data")
		}
		c.disconnect()
	}
}

func TestExportNameUnknownCloses(t *testing.T) {
	s := startServer(t, oneExport(t))
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	c.option(nbd.OptExportName, []byte("nosuch"))
	expectClosed(t, c)
}

func TestOptions(t *testing.T) {
	tests := []struct {
		name     string
		opt      uint32
		data     []byte
		want     uint32
		wantData string // substring of the reply data
	}{
		{"unknown option", 99, []byte("junk"), nbd.RepErrUnsup, ""},
		{"extended headers unsupported", nbd.OptExtendedHeaders, nil, nbd.RepErrUnsup, ""},
		{"structured reply with data", nbd.OptStructuredReply, []byte{1}, nbd.RepErrInvalid, ""},
		{"list with data", nbd.OptList, []byte{1}, nbd.RepErrInvalid, ""},
		{"starttls without tls", nbd.OptStartTLS, nil, nbd.RepErrPolicy, "TLS"},
		{"malformed go", nbd.OptGo, []byte{0, 0, 0, 9, 'x'}, nbd.RepErrInvalid, ""},
		{"meta context before structured", nbd.OptListMetaContext,
			nbd.AppendMetaContextRequest(nil, nbd.MetaContextRequest{Export: "root"}), nbd.RepErrInvalid, "structured"},
	}
	s := startServer(t, oneExport(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dialTest(t, s.addr)
			c.hello(nbd.ClientFlagFixedNewstyle)
			typ, d := c.simpleOption(tt.opt, tt.data)
			if typ != tt.want || !strings.Contains(string(d), tt.wantData) {
				t.Fatalf("got %s %q, want %s containing %q", nbd.RepName(typ), d, nbd.RepName(tt.want), tt.wantData)
			}
			// The server keeps negotiating after refusing an option.
			if _, err := c.infoGo(nbd.OptGo, "root"); err != nil {
				t.Fatalf("GO after %s: %v", tt.name, err)
			}
		})
	}
}

func TestList(t *testing.T) {
	exports := func() []Export {
		img1, img2 := makeImage(t, testSize), makeImage(t, testSize)
		return []Export{
			{Name: "a", Path: img1, ReadOnly: true, Description: "first"},
			{Name: "b", Path: img2},
			{Name: "hidden", Path: img1, ReadOnly: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		}
	}
	list := func(s *testServer) (uint32, []string) {
		c := dialTest(t, s.addr)
		c.hello(nbd.ClientFlagFixedNewstyle)
		c.option(nbd.OptList, nil)
		var names []string
		for {
			r, d, err := c.optReply()
			if err != nil {
				t.Fatal(err)
			}
			if r.Type != nbd.RepServer {
				sort.Strings(names)
				return r.Type, names
			}
			n := binary.BigEndian.Uint32(d)
			names = append(names, string(d[4:4+n])+":"+string(d[4+n:]))
		}
	}
	typ, names := list(startServer(t, Config{Exports: exports()}))
	if typ != nbd.RepAck {
		t.Fatalf("LIST ended with %s", nbd.RepName(typ))
	}
	if diff := cmp.Diff([]string{"a:first", "b:"}, names); diff != "" {
		t.Errorf("LIST (-want +got):\n%s", diff)
	}
	typ, _ = list(startServer(t, Config{Exports: exports(), DenyList: true}))
	if typ != nbd.RepErrPolicy {
		t.Errorf("LIST with DenyList: %s, want POLICY", nbd.RepName(typ))
	}
}

func TestMetaContexts(t *testing.T) {
	s := startServer(t, oneExport(t))
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	c.simpleOption(nbd.OptStructuredReply, nil)
	listQ := func(queries ...string) []string {
		c.option(nbd.OptListMetaContext, nbd.AppendMetaContextRequest(nil, nbd.MetaContextRequest{Export: "root", Queries: queries}))
		var got []string
		for {
			r, d, err := c.optReply()
			if err != nil {
				t.Fatal(err)
			}
			if r.Type == nbd.RepAck {
				return got
			}
			if r.Type != nbd.RepMetaContext {
				t.Fatalf("LIST_META_CONTEXT: %s", nbd.RepName(r.Type))
			}
			got = append(got, string(d[4:]))
		}
	}
	for _, tt := range []struct {
		queries []string
		want    []string
	}{
		{nil, []string{nbd.MetaBaseAllocation}},
		{[]string{"base:"}, []string{nbd.MetaBaseAllocation}},
		{[]string{"qemu:dirty-bitmap:x"}, nil},
		{[]string{"qemu:x", nbd.MetaBaseAllocation}, []string{nbd.MetaBaseAllocation}},
	} {
		if diff := cmp.Diff(tt.want, listQ(tt.queries...)); diff != "" {
			t.Errorf("LIST_META_CONTEXT %q (-want +got):\n%s", tt.queries, diff)
		}
	}
	if got := c.setMeta("root", "nbd-server:nothing"); len(got) != 0 {
		t.Errorf("SET of an unknown context selected %q", got)
	}
	if diff := cmp.Diff([]string{nbd.MetaBaseAllocation}, c.setMeta("root", nbd.MetaBaseAllocation)); diff != "" {
		t.Errorf("SET_META_CONTEXT (-want +got):\n%s", diff)
	}
	c.option(nbd.OptSetMetaContext, nbd.AppendMetaContextRequest(nil, nbd.MetaContextRequest{Export: "nosuch", Queries: []string{nbd.MetaBaseAllocation}}))
	if r, _, _ := c.optReply(); r.Type != nbd.RepErrUnknown {
		t.Errorf("SET_META_CONTEXT for an unknown export: %s", nbd.RepName(r.Type))
	}
}

func TestAbort(t *testing.T) {
	s := startServer(t, oneExport(t))
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	if typ, _ := c.simpleOption(nbd.OptAbort, nil); typ != nbd.RepAck {
		t.Fatalf("ABORT: %s", nbd.RepName(typ))
	}
	expectClosed(t, c)
}

func TestHostileHandshakes(t *testing.T) {
	tests := []struct {
		name string
		send func(c *testClient)
	}{
		{"huge option length", func(c *testClient) {
			c.write(nbd.AppendOption(nil, nbd.OptGo, nil)[:12])
			c.write([]byte{0xff, 0xff, 0xff, 0xf0})
		}},
		{"bad option magic", func(c *testClient) {
			b := nbd.AppendOption(nil, nbd.OptList, nil)
			b[0] ^= 0xff
			c.write(b)
		}},
		{"oldstyle-looking garbage", func(c *testClient) { c.write([]byte("GET / HTTP/1.0\r\n\r\n")) }},
		{"export name too long", func(c *testClient) {
			c.option(nbd.OptExportName, []byte(strings.Repeat("x", nbd.MaxNameLength+1)))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := startServer(t, oneExport(t))
			c := dialTest(t, s.addr)
			c.hello(nbd.ClientFlagFixedNewstyle)
			tt.send(c)
			expectClosed(t, c)
		})
	}
}

// A client that stops talking mid-handshake (slowloris) is cut off by the handshake timeout
// and its connection slot is freed.
func TestHandshakeTimeout(t *testing.T) {
	cfg := oneExport(t)
	cfg.HandshakeTimeout = 200 * time.Millisecond
	cfg.MaxConnections = 1
	s := startServer(t, cfg)
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	c.write(nbd.AppendOption(nil, nbd.OptGo, nbd.AppendInfoRequest(nil, "root"))[:10]) // and nothing more
	expectClosed(t, c)
	if !strings.Contains(s.logs.String(), "handshake failed") {
		t.Errorf("no log line for the timed-out handshake:\n%s", s.logs)
	}
	// The slot is free again.
	waitFor(t, "connection slot", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0
	})
	c2 := connectTest(t, s.addr, "root", false)
	c2.disconnect()
}

func TestMaxConnections(t *testing.T) {
	cfg := oneExport(t)
	cfg.MaxConnections = 2
	s := startServer(t, cfg)
	a := connectTest(t, s.addr, "root", false)
	b := connectTest(t, s.addr, "root", false)
	c := dialTest(t, s.addr)
	expectClosed(t, c) // refused before the greeting
	if !strings.Contains(s.logs.String(), "refused: 2 connections already") {
		t.Errorf("no log line for the refused connection:\n%s", s.logs)
	}
	a.disconnect()
	b.disconnect()
}

func TestMaxConnectionsPerExport(t *testing.T) {
	s := startServer(t, oneExport(t, func(e *Export) { e.MaxConnections = 1 }))
	a := connectTest(t, s.addr, "root", false)
	c := dialTest(t, s.addr)
	c.hello(nbd.ClientFlagFixedNewstyle)
	_, err := c.infoGo(nbd.OptGo, "root")
	var oe *nbd.OptionError
	if !errors.As(err, &oe) || oe.Type != nbd.RepErrPolicy {
		t.Fatalf("second connection: %v, want POLICY", err)
	}
	a.disconnect()
}
