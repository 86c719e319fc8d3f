package nbdserver

import (
	"cmp"
	"slices"
	"time"
)

// Status is what `nbdroot status --server` shows: a running server's exports and clients.
type Status struct {
	Started  time.Time      `json:"started"`
	StateDir string         `json:"state_dir"`
	Exports  []ExportStatus `json:"exports"`
	// Clients has one entry per export and client that has connected in the last day.
	Clients []ClientStatus `json:"clients"`
}

// ExportStatus is one configured export.
type ExportStatus struct {
	Name        string `json:"name"`
	Description string `json:"description"` // path, size and mode, as the start-up log says
	Connections int    `json:"connections"`
}

// ClientStatus is one client's use of one export.
type ClientStatus struct {
	Export string `json:"export"`
	// Client is the identity the client sent, or "@ADDRESS" for a client without one.
	Client     string `json:"client"`
	Identified bool   `json:"identified"`
	// From lists the remote addresses of its live connections.
	From        []string `json:"from,omitempty"`
	Connections int64    `json:"connections"`
	// Overlay is the ID of the cow overlay its connections use, if any.
	Overlay        string    `json:"overlay,omitempty"`
	OverlayKind    string    `json:"overlay_kind,omitempty"`
	OverlayBytes   int64     `json:"overlay_allocated_bytes,omitempty"`
	ReadBytes      uint64    `json:"read_bytes"`
	WrittenBytes   uint64    `json:"written_bytes"`
	Requests       uint64    `json:"requests"`
	ConnectionsAll uint64    `json:"connections_total"`
	Reconnects     uint64    `json:"reconnects"`
	FirstSeen      time.Time `json:"first_seen"`
	LastActivity   time.Time `json:"last_activity"`
}

// Status returns a snapshot of the server's exports and clients. Byte counts of live
// connections lag by at most one batch of requests.
func (s *Server) Status() Status {
	st := Status{Started: s.started, StateDir: s.stateDir}
	type live struct {
		from    []string
		overlay *overlay
	}
	lives := map[exportClient]*live{}
	s.mu.Lock()
	for _, e := range s.exports {
		st.Exports = append(st.Exports, ExportStatus{Name: e.cfg.Name, Description: e.describe(), Connections: e.conns})
	}
	for ss := range s.sessions {
		k := exportClient{ss.exp.cfg.Name, ss.client.key}
		l := lives[k]
		if l == nil {
			l = &live{}
			lives[k] = l
		}
		l.from = append(l.from, ss.nc.RemoteAddr().String())
		if ov := cmp.Or(ss.cow, ss.writes); ov != nil {
			l.overlay = ov
		}
	}
	s.mu.Unlock()
	for _, cs := range s.fleet.all() {
		c := ClientStatus{
			Export:         cs.key.export,
			Client:         cs.key.client.String(),
			Identified:     !cs.key.client.ByAddress,
			Connections:    cs.conns.Load(),
			ReadBytes:      cs.readBytes.Load(),
			WrittenBytes:   cs.writtenBytes.Load(),
			ConnectionsAll: cs.connsTotal.Load(),
			Reconnects:     cs.reconnects.Load(),
			FirstSeen:      cs.firstSeen,
			LastActivity:   time.Unix(0, cs.lastActive.Load()),
		}
		for i := range cs.lat {
			_, n, _ := cs.lat[i].snapshot()
			c.Requests += n
		}
		if l := lives[cs.key]; l != nil {
			slices.Sort(l.from)
			c.From = l.from
			if ov := l.overlay; ov != nil {
				c.Overlay, c.OverlayKind, c.OverlayBytes = ov.h.ID.String(), string(ov.h.Kind), ov.allocated()
			}
		}
		st.Clients = append(st.Clients, c)
	}
	slices.SortFunc(st.Exports, func(a, b ExportStatus) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Clients, func(a, b ClientStatus) int {
		return cmp.Or(cmp.Compare(a.Export, b.Export), cmp.Compare(a.Client, b.Client))
	})
	return st
}
