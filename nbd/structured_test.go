package nbd

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestStructuredChunks(t *testing.T) {
	b := AppendOffsetDataHeader(nil, 9, ReplyFlagDone, 4096, 512)
	if len(b) != OffsetDataHeaderSize {
		t.Fatalf("data header is %d bytes", len(b))
	}
	h, err := ParseStructuredReply(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := (StructuredReply{Flags: ReplyFlagDone, Type: ReplyTypeOffsetData, Handle: 9, Length: 8 + 512}); h != want {
		t.Errorf("data header %+v, want %+v", h, want)
	}
	if off := be.Uint64(b[StructuredReplyHdr:]); off != 4096 {
		t.Errorf("offset %d", off)
	}

	b = AppendOffsetHole(nil, 3, 0, 1<<30, 65536)
	if len(b) != OffsetHoleSize {
		t.Fatalf("hole chunk is %d bytes", len(b))
	}
	if h, _ := ParseStructuredReply(b); h.Type != ReplyTypeOffsetHole || h.Length != 12 {
		t.Errorf("hole header %+v", h)
	}

	ext := []Extent{{Length: 4096, Flags: StateHole | StateZero}, {Length: 1 << 20}}
	b = AppendBlockStatus(nil, 5, ReplyFlagDone, 1, ext)
	h, _ = ParseStructuredReply(b)
	id, got, err := ParseBlockStatus(b[StructuredReplyHdr:])
	if err != nil || id != 1 || h.Length != uint32(len(b)-StructuredReplyHdr) {
		t.Fatalf("block status: id %d, %v, header %+v", id, err, h)
	}
	if diff := cmp.Diff(ext, got); diff != "" {
		t.Errorf("extents (-want +got):\n%s", diff)
	}

	b = AppendErrorChunk(nil, 5, ReplyFlagDone, EIO, "disk on fire")
	h, _ = ParseStructuredReply(b)
	errno, msg, err := ParseErrorChunk(b[StructuredReplyHdr:])
	if err != nil || errno != EIO || msg != "disk on fire" || h.Type != ReplyTypeError {
		t.Errorf("error chunk: %d %q %v %+v", errno, msg, err, h)
	}
	long := AppendErrorChunk(nil, 1, 0, EIO, string(bytes.Repeat([]byte("x"), 2*MaxErrorMessage)))
	if _, msg, _ := ParseErrorChunk(long[StructuredReplyHdr:]); len(msg) != MaxErrorMessage {
		t.Errorf("long message kept %d bytes", len(msg))
	}
}

func TestMetaContextRequest(t *testing.T) {
	tests := []MetaContextRequest{
		{Export: "root", Queries: []string{MetaBaseAllocation}},
		{Export: "", Queries: []string{}},
		{Export: "x", Queries: []string{"base:", "qemu:dirty-bitmap:a"}},
	}
	for _, r := range tests {
		got, err := ParseMetaContextRequest(AppendMetaContextRequest(nil, r))
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(r, got); diff != "" {
			t.Errorf("round trip (-want +got):\n%s", diff)
		}
	}
	for _, bad := range [][]byte{
		nil,
		{0, 0, 0, 5, 'r'},
		{0, 0, 0, 0},
		{0, 0, 0, 0, 0, 0, 0, 1},
		{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0},
		append(AppendMetaContextRequest(nil, MetaContextRequest{Export: "a"}), 0),
	} {
		if _, err := ParseMetaContextRequest(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseMetaContextRequest(% x) = %v, want ErrMalformed", bad, err)
		}
	}
	if ns, rest, ok := MetaNamespace(MetaBaseAllocation); !ok || ns != "base" || rest != "allocation" {
		t.Errorf("MetaNamespace: %q %q %v", ns, rest, ok)
	}
	if got := AppendServerReply(nil, "ab", "desc"); !bytes.Equal(got, []byte{0, 0, 0, 2, 'a', 'b', 'd', 'e', 's', 'c'}) {
		t.Errorf("server reply % x", got)
	}
}

func FuzzParseMetaContextRequest(f *testing.F) {
	f.Add(AppendMetaContextRequest(nil, MetaContextRequest{Export: "root", Queries: []string{MetaBaseAllocation}}))
	f.Add(AppendMetaContextRequest(nil, MetaContextRequest{}))
	f.Add([]byte{0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseMetaContextRequest(b)
		if err != nil {
			return
		}
		if again := AppendMetaContextRequest(nil, r); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: % x vs % x", again, b)
		}
	})
}

func FuzzParseBlockStatus(f *testing.F) {
	f.Add(AppendBlockStatus(nil, 1, 0, 1, []Extent{{Length: 1, Flags: 3}})[StructuredReplyHdr:])
	f.Add([]byte{0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, ext, err := ParseBlockStatus(b)
		if err != nil {
			return
		}
		again := AppendBlockStatus(nil, 0, 0, id, ext)[StructuredReplyHdr:]
		if !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func FuzzParseErrorChunk(f *testing.F) {
	f.Add(AppendErrorChunk(nil, 1, 0, EIO, "x")[StructuredReplyHdr:])
	f.Add([]byte{0, 0, 0, 5, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		errno, msg, err := ParseErrorChunk(b)
		if err != nil {
			return
		}
		if len(msg) > len(b)-6 || errno != be.Uint32(b) {
			t.Fatalf("parsed %d %q from % x", errno, msg, b)
		}
	})
}
