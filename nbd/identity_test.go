package nbd

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateIdentity(t *testing.T) {
	tests := []struct {
		name, id string
		ok       bool
	}{
		{"mac", "52:54:00:12:34:56", true},
		{"configured name", "lab-pc_07.room3", true},
		{"64 bytes", strings.Repeat("a", 64), true},
		{"one dot", ".", true},
		{"dots inside", "a..b", true},
		{"empty", "", false},
		{"65 bytes", strings.Repeat("a", 65), false},
		{"dot dot", "..", false},
		{"slash", "a/b", false},
		{"backslash", `a\b`, false},
		{"space", "a b", false},
		{"equals", "a=b", false},
		{"at", "@10.0.0.1", false},
		{"NUL", "a\x00", false},
		{"UTF-8", "pc-ü", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateIdentity(tt.id)
			if (err == nil) != tt.ok {
				t.Fatalf("ValidateIdentity(%q) = %v, want ok=%v", tt.id, err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrBadIdentity) {
				t.Errorf("error %v does not wrap ErrBadIdentity", err)
			}
		})
	}
}

func TestClientOption(t *testing.T) {
	u, _ := ParseOverlayID("00112233445566778899aabbccddeeff")
	tests := []struct {
		name    string
		data    string
		want    ClientOption
		wantErr string
	}{
		{"id only", "id=52:54:00:12:34:56", ClientOption{ID: "52:54:00:12:34:56"}, ""},
		{"resume", "id=pc1 overlay=00112233445566778899aabbccddeeff", ClientOption{ID: "pc1", Overlay: u}, ""},
		{"order free", "overlay=00112233445566778899aabbccddeeff id=pc1", ClientOption{ID: "pc1", Overlay: u}, ""},
		{"no id", "overlay=00112233445566778899aabbccddeeff", ClientOption{}, "no id="},
		{"empty", "", ClientOption{}, "no id="},
		{"upper-case hex", "id=pc1 overlay=00112233445566778899AABBCCDDEEFF", ClientOption{}, "lower-case hex"},
		{"short hex", "id=pc1 overlay=0011", ClientOption{}, "32 hex digits"},
		{"zero overlay", "id=pc1 overlay=00000000000000000000000000000000", ClientOption{}, "zero ID"},
		{"twice", "id=a id=b", ClientOption{}, "twice"},
		{"unknown key", "id=a tls=1", ClientOption{}, "unknown key"},
		{"no equals", "id=a resume", ClientOption{}, "key=value"},
		{"path", "id=../../etc", ClientOption{}, "contains '/'"},
		{"too long", "id=" + strings.Repeat("x", 65), ClientOption{}, "65 bytes"},
		{"control byte", "id=a\nb", ClientOption{}, "printable ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseClientOption([]byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrBadIdentity) {
					t.Fatalf("ParseClientOption(%q) = %+v, %v; want an ErrBadIdentity containing %q", tt.data, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseClientOption(%q) = %+v, %v; want %+v", tt.data, got, err, tt.want)
			}
			// The canonical encoding parses to the same option.
			again, err := ParseClientOption(AppendClientOption(nil, got))
			if err != nil || again != got {
				t.Fatalf("round trip: %+v, %v", again, err)
			}
		})
	}
}

func TestOverlayIDText(t *testing.T) {
	id := OverlayID{0xde, 0xad, 0xbe, 0xef, 15: 1}
	s := id.String()
	if s != "deadbeef000000000000000000000001" {
		t.Fatalf("String() = %s", s)
	}
	var back OverlayID
	if err := back.UnmarshalText([]byte(s)); err != nil || back != id {
		t.Fatalf("UnmarshalText: %v %v", back, err)
	}
	if !(OverlayID{}).IsZero() || id.IsZero() {
		t.Error("IsZero wrong")
	}
}

func TestInfoOverlay(t *testing.T) {
	id := OverlayID{1, 2, 3, 15: 16}
	var e ExportInfo
	if err := ParseInfo(AppendInfoOverlay(nil, id), &e); err != nil {
		t.Fatal(err)
	}
	if !e.HasOverlay || e.Overlay != id {
		t.Fatalf("parsed %+v", e)
	}
	if err := ParseInfo(AppendInfoOverlay(nil, id)[:10], &e); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short overlay info: %v", err)
	}
}

func FuzzParseClientOption(f *testing.F) {
	f.Add([]byte("id=52:54:00:12:34:56"))
	f.Add([]byte("id=pc1 overlay=00112233445566778899aabbccddeeff"))
	f.Add([]byte("id=.. overlay=0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseClientOption(b)
		if err != nil {
			return
		}
		if ValidateIdentity(o.ID) != nil {
			t.Fatalf("accepted invalid identity %q", o.ID)
		}
		again, err := ParseClientOption(AppendClientOption(nil, o))
		if err != nil || again != o {
			t.Fatalf("re-encoding %+v: %+v, %v", o, again, err)
		}
	})
}
