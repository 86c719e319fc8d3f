package hooks

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/keymap"
)

func TestKeymapStage(t *testing.T) {
	km, err := keymap.Parse("de", []byte("keymaps 0-1\nkeycode 21 = +z\nkeycode 44 = +y\n"), keymap.Options{})
	if err != nil {
		t.Fatal(err)
	}
	km.Name = "de"
	good, err := km.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name    string
		path    string
		loadErr error
		summary string
		log     string
		loaded  []string
	}{
		{name: "loaded", path: write("good", good), summary: "de loaded (4 keys, 0 tables removed, 0 compose definitions, 0 strings)", loaded: []string{"de"}},
		{name: "not in the image", path: filepath.Join(dir, "none"), summary: "no keymap in this image"},
		{name: "damaged", path: write("bad", good[:10]), summary: "not loaded", log: "keymap file truncated; the kernel's default layout stays"},
		{name: "no virtual terminal", path: write("good2", good), loadErr: os.ErrNotExist, summary: "de not loaded", log: "(no virtual terminal?)", loaded: []string{"de"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFakes()
			f.console.keymapErr = tt.loadErr
			s, buf, err := newTestState("nbd_server=10.0.0.1 root=/dev/nbd0", f)
			if err != nil {
				t.Fatal(err)
			}
			if err := (Keymap{Path: tt.path}).Run(context.Background(), s); err != nil {
				t.Fatalf("the keymap stage failed the boot: %v", err)
			}
			if got := (Keymap{}).Summary(s); !strings.HasPrefix(got, tt.summary) {
				t.Errorf("summary %q, want %q", got, tt.summary)
			}
			if !strings.Contains(buf.String(), tt.log) {
				t.Errorf("log %q lacks %q", buf.String(), tt.log)
			}
			if diff := cmp.Diff(tt.loaded, f.console.keymaps); diff != "" {
				t.Errorf("keymaps loaded (-want +got):\n%s", diff)
			}
		})
	}
}
