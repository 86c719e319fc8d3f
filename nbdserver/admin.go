package nbdserver

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	ovstore "github.com/nbdroot/nbdroot/nbdserver/overlay"
)

// `nbdroot overlays` and `nbdroot status --control` work through an OverlayAdmin: the
// running server's, over its control socket (STATE/control.sock), when one answers — it
// knows which overlays are attached to whom and can disconnect a client to remove its
// overlay — or else the state directory's, straight on disk, where the overlays' locks
// keep it from touching an overlay that some process (a server not answering on the
// socket) holds.

// ControlSocket is the name of the control socket in a state directory.
const ControlSocket = "control.sock"

// OverlayInfo is one overlay as `nbdroot overlays list` shows it.
type OverlayInfo struct {
	ovstore.Info
	// From lists the remote addresses of the connections using it (the server's view).
	From []string `json:"from,omitempty"`
}

// OverlayAdmin lists and removes overlays.
type OverlayAdmin interface {
	// List returns every overlay in the state directory and the overlay directories it
	// knows, sorted by export, client and creation.
	List(ctx context.Context) ([]OverlayInfo, error)
	// Remove deletes an overlay, given its full ID. An attached overlay is refused (an
	// error wrapping overlay.ErrBusy) unless force is set; with force its client is
	// disconnected first, and its next attempt to resume the overlay fails loudly.
	Remove(ctx context.Context, id nbd.OverlayID, force bool) error
}

// ResolveOverlay finds the overlay a full ID or a unique prefix (8 or more hex digits)
// names in list.
func ResolveOverlay(list []OverlayInfo, prefix string) (OverlayInfo, error) {
	if len(prefix) < 8 {
		return OverlayInfo{}, fmt.Errorf("overlay ID %q: give at least 8 of its hex digits", prefix)
	}
	var found []OverlayInfo
	for _, in := range list {
		if strings.HasPrefix(in.ID.String(), prefix) {
			found = append(found, in)
		}
	}
	switch len(found) {
	case 0:
		return OverlayInfo{}, fmt.Errorf("overlay %s: %w", prefix, ovstore.ErrGone)
	case 1:
		return found[0], nil
	}
	return OverlayInfo{}, fmt.Errorf("overlay ID %q is ambiguous: %d overlays start with it", prefix, len(found))
}

func sortOverlays(list []OverlayInfo) {
	slices.SortFunc(list, func(a, b OverlayInfo) int {
		return cmp.Or(cmp.Compare(a.Export, b.Export), cmp.Compare(a.Client.String(), b.Client.String()), a.Created.Compare(b.Created))
	})
}

// listRoots lists the overlays under local roots.
func listRoots(roots []string) ([]OverlayInfo, error) {
	var stores []ovstore.Store
	for _, r := range roots {
		stores = append(stores, ovstore.Local{Root: r})
	}
	return listStores(stores)
}

// listStores lists the overlays of stores.
func listStores(stores []ovstore.Store) ([]OverlayInfo, error) {
	var out []OverlayInfo
	var errs []error
	for _, st := range stores {
		infos, err := st.List()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", st.Location(), err))
		}
		for _, in := range infos {
			out = append(out, OverlayInfo{Info: in})
		}
	}
	sortOverlays(out)
	return out, errors.Join(errs...)
}

// LocalAdmin works on a state directory without a server: on the overlays in
// StateDir/overlays, in the directories listed in its overlay-dirs file, and in extra
// directories (cowdir= of servers that used another state directory).
func LocalAdmin(stateDir string, extraDirs ...string) OverlayAdmin {
	return localAdmin{stateDir, extraDirs}
}

type localAdmin struct {
	stateDir string
	extra    []string
}

func (a localAdmin) roots() ([]string, error) {
	roots, err := ovstore.Roots(a.stateDir)
	for _, d := range a.extra {
		if !slices.Contains(roots, d) {
			roots = append(roots, d)
		}
	}
	return roots, err
}

func (a localAdmin) List(ctx context.Context) ([]OverlayInfo, error) {
	roots, err := a.roots()
	if err != nil {
		return nil, err
	}
	return listRoots(roots)
}

func (a localAdmin) Remove(ctx context.Context, id nbd.OverlayID, force bool) error {
	list, err := a.List(ctx)
	if err != nil {
		return err
	}
	in, err := ResolveOverlay(list, id.String())
	if err != nil {
		return err
	}
	err = ovstore.Local{}.Remove(in.Dir)
	if errors.Is(err, ovstore.ErrBusy) {
		how := "stop that server first"
		if force {
			how = "--force can disconnect a client only through the server's control socket; stop that server first"
		}
		return fmt.Errorf("overlay %s of client %s: %w: attached to a client of a server that does not answer on %s (%s)",
			id, in.Client, ovstore.ErrBusy, filepath.Join(a.stateDir, ControlSocket), how)
	}
	return err
}

// serverAdmin is a running server's OverlayAdmin.
type serverAdmin struct{ s *Server }

// Admin returns the server's OverlayAdmin, what its control socket serves.
func (s *Server) Admin() OverlayAdmin { return serverAdmin{s} }

// stores are the state directory's overlay roots and the stores of the current exports.
func (a serverAdmin) stores() []ovstore.Store {
	s := a.s
	roots, _ := ovstore.Roots(s.stateDir)
	var out []ovstore.Store
	for _, r := range roots {
		out = append(out, ovstore.Local{Root: r})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.overlayStoresLocked() {
		if !slices.ContainsFunc(out, func(o ovstore.Store) bool { return o.Location() == st.Location() }) {
			out = append(out, st)
		}
	}
	return out
}

// storeOf returns the store an overlay listed at where belongs to.
func (a serverAdmin) storeOf(where string) ovstore.Store {
	for _, st := range a.stores() {
		if strings.HasPrefix(where, st.Location()+"/") {
			return st
		}
	}
	return ovstore.Local{}
}

func (a serverAdmin) List(ctx context.Context) ([]OverlayInfo, error) {
	s := a.s
	list, err := listStores(a.stores())
	from := map[nbd.OverlayID][]string{}
	s.mu.Lock()
	for ss := range s.sessions {
		if ov := cmp.Or(ss.cow, ss.writes); ov != nil {
			from[ov.h.ID] = append(from[ov.h.ID], ss.nc.RemoteAddr().String())
		}
	}
	s.mu.Unlock()
	for i := range list {
		if f := from[list[i].ID]; f != nil {
			slices.Sort(f)
			list[i].From = f
		}
	}
	return list, err
}

func (a serverAdmin) Remove(ctx context.Context, id nbd.OverlayID, force bool) error {
	s := a.s
	list, err := a.List(ctx)
	if err != nil && len(list) == 0 {
		return err
	}
	in, err := ResolveOverlay(list, id.String())
	if err != nil {
		return err
	}
	set := &s.ovs
	set.mu.Lock()
	ov := set.byID[in.ID]
	if ov != nil && !force {
		set.mu.Unlock()
		return fmt.Errorf("overlay %s: %w: attached to client %s (connections from %s); --force disconnects it, and its next reconnect fails with OVERLAY_GONE",
			in.ID, ovstore.ErrBusy, in.Client, strings.Join(in.From, ", "))
	}
	if set.removing[in.ID] {
		set.mu.Unlock()
		return fmt.Errorf("overlay %s: %w: being removed already", in.ID, ovstore.ErrBusy)
	}
	set.removing[in.ID] = true
	if ov != nil {
		// No new session shares it from now on.
		delete(set.byID, in.ID)
		k := exportClient{ov.h.Export, ov.h.Client}
		if set.latest[k] == ov {
			delete(set.latest, k)
		}
	}
	set.mu.Unlock()
	defer func() {
		set.mu.Lock()
		delete(set.removing, in.ID)
		set.mu.Unlock()
	}()
	if ov != nil {
		s.mu.Lock()
		for ss := range s.sessions {
			if ss.cow == ov || ss.writes == ov {
				ss.nc.Close()
			}
		}
		s.mu.Unlock()
		s.log.Printf("export %q: disconnecting client %s: an administrator removes its %s", ov.h.Export, ov.h.Client, ov.describe())
		select {
		case <-ov.closed:
		case <-ctx.Done():
			return fmt.Errorf("overlay %s: waiting for its connections to close: %w", in.ID, ctx.Err())
		}
	}
	// Meanwhile the client's new connections wait (and then find the overlay gone).
	set.mu.Lock()
	done := set.waitIdleLocked(exportClient{in.Export, in.Client})
	set.mu.Unlock()
	defer func() {
		set.mu.Lock()
		done()
		set.mu.Unlock()
	}()
	if err := a.storeOf(in.Dir).Remove(in.Dir); err != nil {
		if errors.Is(err, ovstore.ErrBusy) {
			return fmt.Errorf("overlay %s: %w: held by another process (another server using %s?)", in.ID, err, filepath.Dir(in.Dir))
		}
		return err
	}
	s.log.Printf("export %q: an administrator removed %s overlay %s of client %s", in.Export, in.Kind, in.ID, in.Client)
	return nil
}

// ControlHandler serves the control API on the Unix socket `nbdroot serve` opens in its
// state directory (mode 0600: root's, or the server user's):
//
//	GET  /status                          Status
//	GET  /overlays                        []OverlayInfo
//	POST /overlays/remove?id=HEX&force=1  remove an overlay (409 if attached, 404 if gone)
func (s *Server) ControlHandler() http.Handler {
	a := s.Admin()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", s.serveStatus)
	mux.HandleFunc("GET /overlays", func(w http.ResponseWriter, r *http.Request) {
		list, err := a.List(r.Context())
		if err != nil && len(list) == 0 {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		if list == nil {
			list = []OverlayInfo{}
		}
		writeJSON(w, list)
	})
	mux.HandleFunc("POST /overlays/remove", func(w http.ResponseWriter, r *http.Request) {
		id, err := nbd.ParseOverlayID(r.URL.Query().Get("id"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		switch err := a.Remove(ctx, id, r.URL.Query().Get("force") == "1"); {
		case err == nil:
			w.WriteHeader(http.StatusNoContent)
		case errors.Is(err, ovstore.ErrBusy):
			http.Error(w, err.Error(), http.StatusConflict)
		case errors.Is(err, ovstore.ErrGone):
			http.Error(w, err.Error(), http.StatusNotFound)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return mux
}

// ControlClient talks to a running server's control socket. It is an OverlayAdmin.
type ControlClient struct {
	http *http.Client
	base string // "http://control" or "http://HOST:PORT"
}

var _ OverlayAdmin = (*ControlClient)(nil)

// DialControl connects to the control socket at path; it fails at once when no server
// answers there (no socket, or a stale one).
func DialControl(path string) (*ControlClient, error) {
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		return nil, err
	}
	c.Close()
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &ControlClient{http: &http.Client{Transport: tr, Timeout: time.Minute}, base: "http://control"}, nil
}

// StatusClient reads /status from a server's metrics listener (--metrics HOST:PORT).
func StatusClient(hostPort string) *ControlClient {
	return &ControlClient{http: &http.Client{Timeout: 30 * time.Second}, base: "http://" + hostPort}
}

func (c *ControlClient) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return controlError(resp)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Status fetches the server's Status.
func (c *ControlClient) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.get(ctx, "/status", &st)
	return st, err
}

// List implements OverlayAdmin.
func (c *ControlClient) List(ctx context.Context) ([]OverlayInfo, error) {
	var list []OverlayInfo
	err := c.get(ctx, "/overlays", &list)
	return list, err
}

// Remove implements OverlayAdmin.
func (c *ControlClient) Remove(ctx context.Context, id nbd.OverlayID, force bool) error {
	q := url.Values{"id": {id.String()}}
	if force {
		q.Set("force", "1")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/overlays/remove?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return controlError(resp)
	}
	return nil
}

// controlError turns an error response back into an error errors.Is recognises.
func controlError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := strings.TrimSpace(string(b))
	switch resp.StatusCode {
	case http.StatusConflict:
		return &remoteError{msg, ovstore.ErrBusy}
	case http.StatusNotFound:
		if msg == "" || strings.HasPrefix(msg, "404 page not found") {
			return fmt.Errorf("the server does not know %s (an older nbdroot?)", resp.Request.URL.Path)
		}
		return &remoteError{msg, ovstore.ErrGone}
	}
	return fmt.Errorf("server: %s: %s", resp.Status, msg)
}

// remoteError is an error the server reported, with the sentinel it stands for.
type remoteError struct {
	msg string
	err error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.err }

// listenControl opens the control socket in the state directory. A socket another running
// server answers on is left alone (that server keeps it): this one then has none.
func listenControl(stateDir string) (net.Listener, error) {
	path := filepath.Join(stateDir, ControlSocket)
	ln, err := listenUnix(path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}
