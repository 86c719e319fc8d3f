package overlay

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

var pc1 = Client{ID: "52:54:00:12:34:56"}

func meta(export string, c Client, kind Kind) Meta {
	return Meta{Export: export, Client: c, Kind: kind, Image: "/srv/base.img", ImageSize: 1 << 20}
}

func create(t *testing.T, s Local, m Meta) *Overlay {
	t.Helper()
	o, err := s.Create(m, func(dir string) error {
		return os.WriteFile(filepath.Join(dir, DataFile), []byte("data"), 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func TestCreateOpenFind(t *testing.T) {
	s := Local{Root: filepath.Join(t.TempDir(), "overlays")}
	o := create(t, s, meta("thin/root", pc1, Temporary))
	if o.ID.IsZero() || o.Version != MetaVersion || o.Created.IsZero() {
		t.Fatalf("created %+v", o.Meta)
	}
	if o.Dir != s.Dir("thin/root", pc1, o.ID) {
		t.Errorf("dir %s, want %s", o.Dir, s.Dir("thin/root", pc1, o.ID))
	}
	if b, err := os.ReadFile(o.Path(DataFile)); err != nil || string(b) != "data" {
		t.Errorf("populated file: %q %v", b, err)
	}
	// Held by its creator: nobody else opens or removes it.
	if _, err := s.Open("thin/root", pc1, o.ID); !errors.Is(err, ErrBusy) {
		t.Errorf("open while held: %v, want ErrBusy", err)
	}
	if err := s.Remove(o.Dir); !errors.Is(err, ErrBusy) {
		t.Errorf("remove while held: %v, want ErrBusy", err)
	}
	o.Close()
	again, err := s.Open("thin/root", pc1, o.ID)
	if err != nil {
		t.Fatal(err)
	}
	if again.Meta != o.Meta {
		t.Errorf("reopened meta %+v, want %+v", again.Meta, o.Meta)
	}
	again.Close()

	// The overlay belongs to its export and client only.
	for _, tc := range []struct {
		export string
		c      Client
	}{{"other", pc1}, {"thin/root", Client{ID: "pc2"}}, {"thin/root", Client{ID: pc1.ID, ByAddress: true}}} {
		if _, err := s.Open(tc.export, tc.c, o.ID); !errors.Is(err, ErrGone) {
			t.Errorf("open as %s on %q: %v, want ErrGone", tc.c, tc.export, err)
		}
	}
	time.Sleep(2 * time.Millisecond)
	newer := create(t, s, meta("thin/root", pc1, Temporary))
	newer.Close()
	found, err := s.Find("thin/root", pc1)
	if err != nil || len(found) != 2 || found[0].ID != newer.ID || found[1].ID != o.ID {
		t.Fatalf("Find: %v %v, want newest first", found, err)
	}
	if found, err := s.Find("thin/root", Client{ID: "nobody"}); err != nil || len(found) != 0 {
		t.Errorf("Find of an unknown client: %v %v", found, err)
	}
}

func TestRemove(t *testing.T) {
	s := Local{Root: t.TempDir()}
	o := create(t, s, meta("root", pc1, Persistent))
	o.Close()
	if err := s.Remove(o.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Open("root", pc1, o.ID); !errors.Is(err, ErrGone) {
		t.Errorf("open after remove: %v, want ErrGone", err)
	}
	if err := s.Remove(o.Dir); !errors.Is(err, ErrGone) {
		t.Errorf("second remove: %v", err)
	}
	if _, err := os.Stat(filepath.Dir(o.Dir)); !os.IsNotExist(err) {
		t.Errorf("empty client directory left behind: %v", err)
	}
	// A client directory emptied by a remove is made again by the next create.
	create(t, s, meta("root", pc1, Persistent)).Close()
}

// An opener that opened the directory just before a remover renamed it away must not take
// the renamed (dying) overlay for the real one.
func TestOpenRacingRemove(t *testing.T) {
	s := Local{Root: t.TempDir()}
	o := create(t, s, meta("root", pc1, Temporary))
	o.Close()
	held, err := lockDir(o.Dir)
	if err != nil {
		t.Fatal(err)
	}
	gone := filepath.Join(filepath.Dir(o.Dir), gonePrefix+o.ID.String())
	if err := os.Rename(o.Dir, gone); err != nil {
		t.Fatal(err)
	}
	if stillAt(held, o.Dir) {
		t.Fatal("stillAt true after rename")
	}
	held.Close()
	if _, err := s.Open("root", pc1, o.ID); !errors.Is(err, ErrGone) {
		t.Errorf("open of a renamed overlay: %v", err)
	}
}

func TestReap(t *testing.T) {
	s := Local{Root: t.TempDir()}
	now := time.Now()
	old := now.Add(-2 * time.Hour)
	mk := func(c Client, kind Kind, lastUsed time.Time) *Overlay {
		o := create(t, s, meta("root", c, kind))
		o.Close()
		os.Chtimes(o.Dir, lastUsed, lastUsed)
		return o
	}
	stale := mk(Client{ID: "a"}, Temporary, old)
	fresh := mk(Client{ID: "b"}, Temporary, now.Add(-time.Minute))
	persistent := mk(Client{ID: "c"}, Persistent, old)
	attached := mk(Client{ID: "d"}, Temporary, old)
	held, err := s.Open("root", Client{ID: "d"}, attached.ID)
	if err != nil {
		t.Fatal(err)
	}
	os.Chtimes(attached.Dir, old, old)
	// Leftovers of a crash during creation and removal.
	leftNew := filepath.Join(s.ClientDir("root", pc1), newPrefix+"x")
	leftGone := filepath.Join(s.ClientDir("root", pc1), gonePrefix+"y")
	for _, d := range []string{leftNew, leftGone} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// Right after a server start, even stale overlays get their grace period.
	removed, err := s.Reap(now, now.Add(-time.Minute), time.Hour)
	if err != nil || len(removed) != 0 {
		t.Fatalf("reaped %v (%v) within the grace period after a start", removed, err)
	}
	removed, err = s.Reap(now, old, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) != 1 || removed[0].ID != stale.ID {
		t.Fatalf("reaped %v, want only the stale temporary overlay", removed)
	}
	for _, o := range []*Overlay{fresh, persistent, attached} {
		if _, err := os.Stat(o.Dir); err != nil {
			t.Errorf("%s overlay of %s was reaped", o.Kind, o.Client)
		}
	}
	for _, d := range []string{leftNew, leftGone} {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("leftover %s not cleaned", d)
		}
	}
	held.Close()
}

func TestListAndLookup(t *testing.T) {
	s := Local{Root: t.TempDir()}
	a := create(t, s, meta("root", pc1, Persistent))
	b := create(t, s, meta("root", Client{ID: "10.0.0.7", ByAddress: true}, Temporary))
	b.Close()
	// A damaged overlay is listed with its error, so it can be removed.
	broken := filepath.Join(s.ClientDir("root", Client{ID: "pc9"}), "00112233445566778899aabbccddeeff")
	os.MkdirAll(broken, 0o700)
	os.WriteFile(filepath.Join(broken, MetaFile), []byte("{"), 0o600)

	list, err := s.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("List: %d %v", len(list), err)
	}
	byID := map[nbd.OverlayID]Info{}
	for _, in := range list {
		byID[in.ID] = in
	}
	if in := byID[a.ID]; !in.Attached || in.Client != pc1 || in.Allocated == 0 || in.Err != "" {
		t.Errorf("held overlay listed as %+v", in)
	}
	if in := byID[b.ID]; in.Attached || in.Client.String() != "@10.0.0.7" {
		t.Errorf("released overlay listed as %+v", in)
	}
	bad, _ := nbd.ParseOverlayID("00112233445566778899aabbccddeeff")
	if in := byID[bad]; in.Err == "" {
		t.Errorf("damaged overlay listed without an error: %+v", in)
	}
	if in, err := s.Lookup(b.ID.String()[:10]); err != nil || in.ID != b.ID {
		t.Errorf("Lookup by prefix: %+v %v", in, err)
	}
	if _, err := s.Lookup("0011"); err == nil || !strings.Contains(err.Error(), "8 hex digits") {
		t.Errorf("short prefix: %v", err)
	}
	if _, err := s.Lookup("ffffffffff"); !errors.Is(err, ErrGone) {
		t.Errorf("unknown ID: %v", err)
	}
	a.Close()
}

func TestEscape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"root", "root"},
		{"thin/root", "thin%2Froot"},
		{"..", "%2E."},
		{".hidden", "%2Ehidden"},
		{"a b%c", "a%20b%25c"},
		{"52:54:00:12:34:56", "52:54:00:12:34:56"},
	}
	for _, tt := range tests {
		if got := escape(tt.in); got != tt.want {
			t.Errorf("escape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	long := strings.Repeat("x", 300)
	if got := escape(long); len(got) > 120 || got == escape(long+"y") {
		t.Errorf("long names: %q", got)
	}
}

func TestParseClient(t *testing.T) {
	tests := []struct {
		in   string
		want Client
		ok   bool
	}{
		{"52:54:00:12:34:56", Client{ID: "52:54:00:12:34:56"}, true},
		{"@10.0.0.1", Client{ID: "10.0.0.1", ByAddress: true}, true},
		{"@unix:uid=0", Client{ID: "unix:uid=0", ByAddress: true}, true},
		{"@", Client{}, false},
		{"a/b", Client{}, false},
	}
	for _, tt := range tests {
		got, err := ParseClient(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseClient(%q) = %+v, %v", tt.in, got, err)
		}
		if tt.ok && got.String() != tt.in {
			t.Errorf("String() = %q, want %q", got.String(), tt.in)
		}
	}
}

func TestRoots(t *testing.T) {
	state := t.TempDir()
	if err := RecordRoots(state, []string{"/srv/cow", "/srv/tmp"}); err != nil {
		t.Fatal(err)
	}
	if err := RecordRoots(state, []string{"/srv/cow", "/srv/other"}); err != nil {
		t.Fatal(err)
	}
	got, err := Roots(state)
	want := []string{StateRoot(state), "/srv/cow", "/srv/tmp", "/srv/other"}
	if err != nil || strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("Roots = %v %v, want %v", got, err, want)
	}
}
