package nbdserver

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// newTestOverlay creates a fresh overlay of export "x" over base, as the server does.
func newTestOverlay(t *testing.T, base *fileBackend, st ovstore.Local, c ovstore.Client) *overlay {
	t.Helper()
	h, err := st.Create(ovstore.Meta{Export: "x", Client: c, Kind: ovstore.Persistent, ImageSize: base.size},
		func(dir string) error { return initOverlayFiles(dir, base.size) })
	if err != nil {
		t.Fatal(err)
	}
	ov, err := attachOverlay(base, h, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return ov
}

// A persistent overlay's bitmap survives close and reopen, including changes that land in
// different pieces of a bitmap larger than one incremental write (images over 128 MiB).
func TestOverlayBitmapPersistence(t *testing.T) {
	const size = 300 << 20 // sparse
	base := filepath.Join(t.TempDir(), "base.img")
	if err := os.WriteFile(base, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(base, size); err != nil {
		t.Fatal(err)
	}
	fb, err := openFile(base, true, false)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	st := ovstore.Local{Root: t.TempDir()}
	client := ovstore.Client{ID: "10.0.0.1", ByAddress: true}
	writes := map[int64][]byte{
		0:            []byte("first block"),
		200<<20 + 17: []byte("far away, unaligned"),
		size - 5:     []byte("end!!"),
	}
	ov := newTestOverlay(t, fb, st, client)
	id := ov.h.ID
	for off, p := range writes {
		if err := ov.WriteAt(p, off, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := ov.Flush(); err != nil {
		t.Fatal(err)
	}
	// A second flush after one more write changes one piece of the bitmap only.
	if err := ov.WriteAt([]byte("later"), 100<<20, true); err != nil {
		t.Fatal(err)
	}
	writes[100<<20] = []byte("later")
	if err := ov.Close(); err != nil {
		t.Fatal(err)
	}

	h, err := st.Open("x", client, id)
	if err != nil {
		t.Fatal(err)
	}
	if ov, err = attachOverlay(fb, h, t.Logf); err != nil {
		t.Fatal(err)
	}
	defer ov.Close()
	for off, p := range writes {
		got := make([]byte, len(p))
		if err := ov.ReadAt(got, off); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, p) {
			t.Errorf("at %d after reopening: %q, want %q", off, got, p)
		}
	}
	// Untouched blocks still come from the (zero) image.
	got := make([]byte, 4096)
	ov.ReadAt(got, 50<<20)
	if !bytes.Equal(got, make([]byte, 4096)) {
		t.Error("untouched block reads overlay garbage")
	}
	// A different client has its own (empty) overlay.
	other := newTestOverlay(t, fb, st, ovstore.Client{ID: "10.0.0.2", ByAddress: true})
	defer other.Close()
	other.ReadAt(got[:11], 0)
	if !bytes.Equal(got[:11], make([]byte, 11)) {
		t.Error("another client sees the overlay")
	}
}
