package nbd

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{"read", Request{Type: CmdRead, Handle: 1, Offset: 4096, Length: 512}},
		{"write fua", Request{Flags: CmdFlagFUA, Type: CmdWrite, Handle: ^uint64(0), Offset: 1 << 40, Length: MaxPayload}},
		{"disc", Request{Type: CmdDisc}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := AppendRequest(nil, tt.req)
			if len(b) != RequestSize {
				t.Fatalf("encoded %d bytes, want %d", len(b), RequestSize)
			}
			got, err := ParseRequest(b)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.req {
				t.Fatalf("round trip: got %+v, want %+v", got, tt.req)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	var me *MagicError
	if _, err := ParseRequest(make([]byte, RequestSize)); !errors.As(err, &me) {
		t.Errorf("zero request: got %v, want MagicError", err)
	}
	if _, err := ParseSimpleReply(make([]byte, 3)); err == nil {
		t.Error("short simple reply accepted")
	}
	if _, err := ParseOptReply(AppendOption(nil, OptGo, []byte{0, 0, 0, 0})[:OptReplyHeaderSize]); !errors.As(err, &me) {
		t.Errorf("option parsed as option reply: got %v, want MagicError", err)
	}
}

func TestSimpleReplyKnownBytes(t *testing.T) {
	b := AppendSimpleReply(nil, SimpleReply{Error: EIO, Handle: 0x0102030405060708})
	want := []byte{0x67, 0x44, 0x66, 0x98, 0, 0, 0, 5, 1, 2, 3, 4, 5, 6, 7, 8}
	if !bytes.Equal(b, want) {
		t.Fatalf("got % x, want % x", b, want)
	}
}

func TestInfoRequestRoundTrip(t *testing.T) {
	b := AppendInfoRequest(nil, "root", InfoBlockSize, InfoName)
	name, infos, err := ParseInfoRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if name != "root" || len(infos) != 2 || infos[0] != InfoBlockSize || infos[1] != InfoName {
		t.Fatalf("got %q %v", name, infos)
	}
	for _, bad := range [][]byte{nil, {0, 0, 0, 9, 'a'}, {0, 0, 0, 0, 0, 2, 0, 1}} {
		if _, _, err := ParseInfoRequest(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseInfoRequest(% x) = %v, want ErrMalformed", bad, err)
		}
	}
}

func TestParseInfo(t *testing.T) {
	var e ExportInfo
	for _, b := range [][]byte{
		AppendInfoExport(nil, 1<<30, TransHasFlags|TransSendFlush),
		AppendInfoBlockSize(nil, 512, 4096, 32<<20),
		AppendInfoString(nil, InfoName, "root"),
		AppendInfoString(nil, InfoDescription, "thin client root"),
		{0x12, 0x34, 1, 2, 3}, // unknown type: ignored
	} {
		if err := ParseInfo(b, &e); err != nil {
			t.Fatal(err)
		}
	}
	want := ExportInfo{Name: "root", Description: "thin client root", Size: 1 << 30,
		Flags: TransHasFlags | TransSendFlush, MinBlock: 512, PrefBlock: 4096, MaxBlock: 32 << 20}
	if e != want {
		t.Fatalf("got %+v, want %+v", e, want)
	}
	if err := ParseInfo([]byte{0, 0, 1}, &e); !errors.Is(err, ErrMalformed) {
		t.Errorf("short NBD_INFO_EXPORT: %v", err)
	}
}

func TestErrnoIs(t *testing.T) {
	if !errors.Is(Errno(EIO), syscall.EIO) {
		t.Error("Errno(EIO) is not syscall.EIO")
	}
	if got := (&OptionError{Option: OptGo, Type: RepErrPolicy, Message: "held by 10.0.0.2"}).Error(); got !=
		"server refused NBD_OPT_GO: NBD_REP_ERR_POLICY (forbidden by server policy): held by 10.0.0.2" {
		t.Errorf("OptionError text: %q", got)
	}
}

func FuzzParseInfoRequest(f *testing.F) {
	f.Add(AppendInfoRequest(nil, "root", InfoBlockSize))
	f.Add(AppendInfoRequest(nil, ""))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		name, infos, err := ParseInfoRequest(b)
		if err != nil {
			return
		}
		if again := AppendInfoRequest(nil, name, infos...); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: % x vs % x", again, b)
		}
	})
}

func FuzzParseInfo(f *testing.F) {
	f.Add(AppendInfoExport(nil, 1<<30, TransHasFlags))
	f.Add(AppendInfoBlockSize(nil, 512, 4096, 1<<25))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e ExportInfo
		_ = ParseInfo(b, &e)
	})
}
