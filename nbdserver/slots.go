package nbdserver

import (
	"fmt"
	"net"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// Connection slots. Every connection takes a slot of the server (Config.MaxConnections)
// and one of its client (Config.MaxClientConnections): by source IP address when it is
// accepted and, once the client names itself (NBD_OPT_NBDROOT_CLIENT), by identity too. One
// address — a buggy client, a loop of reconnects, someone hostile — can so hold no more
// than its own share, and a normal client always gets in while another address holds all
// of its.
//
// Connections that have sent no request yet (still negotiating, or negotiated and silent)
// hold their slots on credit: when the server is full, the oldest of them that has been
// silent for Config.UnusedTimeout is closed to let a new client in. They are not closed
// otherwise — the kernel's nbd driver opens one socket per connection it was given and may
// send nothing on some of them for hours (requests go to the socket of the submitting
// CPU's queue), and a reconnected idle client sends nothing until it has I/O to do.

// slotKeyOf is the slot a connection takes by where it comes from (identify): its IP
// address, not the port. Unix-socket clients take none: they are local, admitted by the
// socket's permissions (an administrator attaching several devices), and count only
// against the server's bound.
func slotKeyOf(c *conn) string {
	if c.client.addr.IsValid() {
		return "address " + c.client.addr.String()
	}
	return ""
}

// identitySlot is the slot key of a client identity.
func identitySlot(id string) string { return "client " + id }

// takeSlotLocked counts a connection against key, or says why it may not; the empty key
// is no slot.
func (s *Server) takeSlotLocked(c *conn, key string) error {
	if key == "" {
		return nil
	}
	if n := s.slots[key]; n >= s.cfg.MaxClientConnections {
		return fmt.Errorf("%s has %d connections (limit %d, --max-client-connections)", key, n, s.cfg.MaxClientConnections)
	}
	s.slots[key]++
	c.slots = append(c.slots, key)
	return nil
}

// releaseSlotsLocked gives back every slot a connection took.
func (s *Server) releaseSlotsLocked(c *conn) {
	for len(c.slots) > 0 {
		s.releaseSlotLocked(c, c.slots[0])
	}
}

// releaseSlotLocked gives back one slot of a connection.
func (s *Server) releaseSlotLocked(c *conn, key string) {
	for i, k := range c.slots {
		if k == key {
			c.slots = append(c.slots[:i], c.slots[i+1:]...)
			if s.slots[k]--; s.slots[k] <= 0 {
				delete(s.slots, k)
			}
			return
		}
	}
}

// claimIdentity counts this connection against the slots of the identity the client
// named, with the same limit as an address; a second claim replaces the first. The
// client-identity option calls it once the identity is valid; a refusal is the option's
// answer (NBD_REP_ERR_POLICY).
func (c *conn) claimIdentity(id string) *refusal {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	key := identitySlot(id)
	if c.idSlot == key {
		return nil
	}
	if err := s.takeSlotLocked(c, key); err != nil {
		return &refusal{typ: nbd.RepErrPolicy, msg: err.Error()}
	}
	if c.idSlot != "" {
		s.releaseSlotLocked(c, c.idSlot)
	}
	c.idSlot = key
	return nil
}

// evictUnusedLocked closes the connection that has waited longest without sending a
// request, if it has waited at least Config.UnusedTimeout, to make room for a new one. It
// reports whether it closed one.
func (s *Server) evictUnusedLocked(now time.Time) bool {
	var victim *conn
	for c := range s.conns {
		if c.used.Load() || c.evicted || now.Sub(c.accepted) < s.cfg.UnusedTimeout {
			continue
		}
		if victim == nil || c.accepted.Before(victim.accepted) {
			victim = c
		}
	}
	if victim == nil {
		return false
	}
	victim.evicted = true
	s.evicting++
	victim.logf("closed to make room for a new client: no request in %v, and the server is full (%d connections)",
		now.Sub(victim.accepted).Round(time.Second), len(s.conns))
	victim.nc.Close()
	return true
}

// refusedLog keeps refusals of one kind from flooding the log: the first is logged, then
// at most one summary line per refusedLogEvery.
type refusedLog struct {
	last    time.Time
	dropped int
}

const refusedLogEvery = 10 * time.Second

// logRefusalLocked logs why a connection was refused, at most once per key and interval.
func (s *Server) logRefusalLocked(key string, nc net.Conn, why string) {
	now := time.Now()
	r := s.refused[key]
	if r == nil {
		r = &refusedLog{}
		s.refused[key] = r
	}
	if !r.last.IsZero() && now.Sub(r.last) < refusedLogEvery {
		r.dropped++
		return
	}
	more := ""
	if r.dropped > 0 {
		more = fmt.Sprintf(" (and %d more refused since %s)", r.dropped, r.last.Format(time.TimeOnly))
	}
	r.last, r.dropped = now, 0
	s.log.Printf("conn %s: refused: %s%s", nc.RemoteAddr(), why, more)
	for k, v := range s.refused {
		if now.Sub(v.last) > 6*refusedLogEvery {
			delete(s.refused, k)
		}
	}
}
