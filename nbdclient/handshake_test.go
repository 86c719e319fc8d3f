package nbdclient

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

// fakeServer plays the server side of a handshake on a pipe, scripted by the test.
type fakeServer struct {
	flags   uint16 // handshake flags
	oldMode bool   // send an oldstyle greeting
	// onOpt answers one option; returning false ends the session (the server hangs up).
	onOpt func(w io.Writer, opt uint32, data []byte) bool
}

func (s fakeServer) run(t *testing.T, c net.Conn) {
	defer c.Close()
	b := binary.BigEndian.AppendUint64(nil, nbd.NBDMagic)
	if s.oldMode {
		b = binary.BigEndian.AppendUint64(b, nbd.OldstyleMagic)
		c.Write(append(b, make([]byte, 136)...))
		return
	}
	b = binary.BigEndian.AppendUint64(b, nbd.IHaveOpt)
	b = binary.BigEndian.AppendUint16(b, s.flags)
	if _, err := c.Write(b); err != nil {
		return
	}
	var cf [4]byte
	if _, err := io.ReadFull(c, cf[:]); err != nil {
		return
	}
	if got := binary.BigEndian.Uint32(cf[:]); got&^uint32(s.flags) != 0 {
		t.Errorf("client flags %#x set bits the server did not offer (%#x)", got, s.flags)
		return
	}
	for {
		var h [nbd.OptionHeaderSize]byte
		if _, err := io.ReadFull(c, h[:]); err != nil {
			return
		}
		o, err := nbd.ParseOption(h[:])
		if err != nil {
			t.Errorf("server: %v", err)
			return
		}
		data := make([]byte, o.Length)
		if _, err := io.ReadFull(c, data); err != nil {
			return
		}
		if !s.onOpt(c, o.Option, data) {
			return
		}
	}
}

// goServer answers NBD_OPT_GO like a modern server and EXPORT_NAME like an old one.
func goServer(t *testing.T, exports map[string]uint64) func(io.Writer, uint32, []byte) bool {
	return func(w io.Writer, opt uint32, data []byte) bool {
		switch opt {
		case nbd.OptGo:
			name, infos, err := nbd.ParseInfoRequest(data)
			if err != nil {
				t.Errorf("server: %v", err)
				return false
			}
			if name == "" {
				name = "root"
			}
			size, ok := exports[name]
			if !ok {
				w.Write(nbd.AppendOptReply(nil, opt, nbd.RepErrUnknown, []byte("no export "+name)))
				return true
			}
			if !cmp.Equal(infos, []uint16{nbd.InfoBlockSize, nbd.InfoName, nbd.InfoDescription}) {
				t.Errorf("client asked for infos %v", infos)
			}
			w.Write(nbd.AppendOptReply(nil, opt, nbd.RepInfo, nbd.AppendInfoBlockSize(nil, 512, 4096, 32<<20)))
			w.Write(nbd.AppendOptReply(nil, opt, nbd.RepInfo, nbd.AppendInfoExport(nil, size, nbd.TransHasFlags|nbd.TransSendFlush)))
			w.Write(nbd.AppendOptReply(nil, opt, nbd.RepAck, nil))
			return true
		case nbd.OptExportName:
			size, ok := exports[string(data)]
			if !ok {
				return false
			}
			w.Write(nbd.AppendExportNameReply(nil, size, nbd.TransHasFlags, true))
			return true
		case nbd.OptList:
			for name := range exports {
				d := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
				w.Write(nbd.AppendOptReply(nil, opt, nbd.RepServer, append(d, name...)))
			}
			w.Write(nbd.AppendOptReply(nil, opt, nbd.RepAck, nil))
			return true
		case nbd.OptAbort:
			return false
		}
		w.Write(nbd.AppendOptReply(nil, opt, nbd.RepErrUnsup, nil))
		return true
	}
}

func handshakeWith(t *testing.T, s fakeServer, export string) (*nbd.ExportInfo, error) {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() { defer close(done); s.run(t, srv) }()
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	info, err := Handshake(cli, DialOptions{Export: export})
	cli.Close()
	<-done
	return info, err
}

func TestHandshake(t *testing.T) {
	exports := map[string]uint64{"root": 1 << 30, "swap": 1 << 20}
	noGo := func(w io.Writer, opt uint32, data []byte) bool {
		if opt == nbd.OptGo {
			w.Write(nbd.AppendOptReply(nil, opt, nbd.RepErrUnsup, nil))
			return true
		}
		return goServer(t, exports)(w, opt, data)
	}
	tests := []struct {
		name    string
		srv     fakeServer
		export  string
		want    *nbd.ExportInfo
		wantErr func(error) bool
	}{
		{
			name:   "go with block size",
			srv:    fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: goServer(t, exports)},
			export: "swap",
			want: &nbd.ExportInfo{Name: "swap", Size: 1 << 20, Flags: nbd.TransHasFlags | nbd.TransSendFlush,
				MinBlock: 512, PrefBlock: 4096, MaxBlock: 32 << 20},
		},
		{
			name:   "default export",
			srv:    fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: goServer(t, exports)},
			export: "",
			want: &nbd.ExportInfo{Size: 1 << 30, Flags: nbd.TransHasFlags | nbd.TransSendFlush,
				MinBlock: 512, PrefBlock: 4096, MaxBlock: 32 << 20},
		},
		{
			name:   "fallback to export name",
			srv:    fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: noGo},
			export: "root",
			want:   &nbd.ExportInfo{Name: "root", Size: 1 << 30, Flags: nbd.TransHasFlags},
		},
		{
			name:   "unknown export",
			srv:    fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: goServer(t, exports)},
			export: "nope",
			wantErr: func(err error) bool {
				var oe *nbd.OptionError
				return errors.As(err, &oe) && oe.Type == nbd.RepErrUnknown
			},
		},
		{
			name:    "export name refused by hanging up",
			srv:     fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: noGo},
			export:  "nope",
			wantErr: func(err error) bool { return err != nil },
		},
		{
			name:    "oldstyle server",
			srv:     fakeServer{oldMode: true},
			wantErr: func(err error) bool { return errors.Is(err, ErrOldstyle) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := handshakeWith(t, tt.srv, tt.export)
			if tt.wantErr != nil {
				if !tt.wantErr(err) {
					t.Fatalf("Handshake error = %v, not the one expected", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("export info (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHandshakeNonFixedWithZeroes(t *testing.T) {
	// A non-fixed newstyle server without NO_ZEROES: only EXPORT_NAME, then 124 zero bytes.
	srv := fakeServer{flags: 0, onOpt: func(w io.Writer, opt uint32, data []byte) bool {
		if opt != nbd.OptExportName {
			t.Errorf("client sent %s to a non-fixed server", nbd.OptName(opt))
			return false
		}
		w.Write(nbd.AppendExportNameReply(nil, 4096, nbd.TransHasFlags|nbd.TransReadOnly, false))
		return true
	}}
	got, err := handshakeWith(t, srv, "x")
	if err != nil {
		t.Fatal(err)
	}
	if got.Size != 4096 || got.Flags != nbd.TransHasFlags|nbd.TransReadOnly {
		t.Errorf("got %+v", got)
	}
}

func TestList(t *testing.T) {
	cli, srv := net.Pipe()
	s := fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: goServer(t, map[string]uint64{"root": 1})}
	go s.run(t, srv)
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	names, err := List(cli)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"root"}, names); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestBlockSize(t *testing.T) {
	tests := []struct {
		name    string
		info    nbd.ExportInfo
		want    int
		got     uint32
		wantErr bool
	}{
		{"no constraints", nbd.ExportInfo{}, 0, 512, false},
		{"server minimum", nbd.ExportInfo{MinBlock: 4096, PrefBlock: 4096, MaxBlock: 1 << 25}, 0, 4096, false},
		{"preferred is not used", nbd.ExportInfo{MinBlock: 1, PrefBlock: 4096}, 0, 512, false},
		{"asked", nbd.ExportInfo{}, 1024, 1024, false},
		{"not a power of two", nbd.ExportInfo{}, 1000, 0, true},
		{"too large", nbd.ExportInfo{}, 8192, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := BlockSize(tt.info, tt.want)
			if (err != nil) != tt.wantErr || got != tt.got {
				t.Errorf("BlockSize = %d, %v; want %d, error %v", got, err, tt.got, tt.wantErr)
			}
		})
	}
}
