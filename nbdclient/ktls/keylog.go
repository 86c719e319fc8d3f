package ktls

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
)

// KeyLog takes what crypto/tls writes to Config.KeyLogWriter (the NSS key log format,
// "LABEL CLIENT_RANDOM SECRET" in hex, one line per secret) and keeps the two
// application traffic secrets of TLS 1.3. It keeps them in memory only; nothing is
// written anywhere.
type KeyLog struct {
	mu             sync.Mutex
	client, server []byte
	err            error
}

// Write implements io.Writer.
func (k *KeyLog) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, line := range bytes.Split(bytes.TrimSpace(p), []byte("\n")) {
		f := bytes.Fields(line)
		if len(f) != 3 {
			k.err = fmt.Errorf("key log line with %d fields", len(f))
			continue
		}
		var dst *[]byte
		switch string(f[0]) {
		case "CLIENT_TRAFFIC_SECRET_0":
			dst = &k.client
		case "SERVER_TRAFFIC_SECRET_0":
			dst = &k.server
		default:
			continue // handshake secrets, or TLS 1.2's CLIENT_RANDOM
		}
		s, err := hex.DecodeString(string(f[2]))
		if err != nil {
			k.err = fmt.Errorf("key log %s: %w", f[0], err)
			continue
		}
		*dst = s
	}
	return len(p), nil
}

// Secrets returns the client's and the server's application traffic secrets.
func (k *KeyLog) Secrets() (client, server []byte, err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.err != nil {
		return nil, nil, k.err
	}
	if k.client == nil || k.server == nil {
		return nil, nil, errors.New("crypto/tls logged no TLS 1.3 application traffic secrets (was TLS 1.3 negotiated?)")
	}
	return k.client, k.server, nil
}

// Handoff assembles the record layer's state after a handshake and the negotiation that
// followed it: the secrets from the key log, the sequence numbers from the counter. It
// proves the state by opening the last record of each direction with it; a state that
// does not open them (a KeyUpdate, records the counter missed) is an error rather than a
// connection that would fail in the kernel.
func Handoff(s Suite, log *KeyLog, c *Counter) (State, error) {
	client, server, err := log.Secrets()
	if err != nil {
		return State{}, err
	}
	tx, rx, lastTX, lastRX, err := c.Records()
	if err != nil {
		return State{}, err
	}
	st := State{Suite: s, TX: Direction{Secret: client, Seq: tx}, RX: Direction{Secret: server, Seq: rx}}
	for _, d := range []struct {
		name string
		dir  Direction
		last []byte
	}{{"sent", st.TX, lastTX}, {"received", st.RX, lastRX}} {
		if d.dir.Seq == 0 {
			continue // nothing to prove it on (the negotiation always sends and receives)
		}
		ci, err := NewCipher(s, Direction{Secret: d.dir.Secret, Seq: d.dir.Seq - 1})
		if err != nil {
			return State{}, err
		}
		if _, _, err := ci.Open(d.last); err != nil {
			return State{}, fmt.Errorf("the derived keys do not open the last record %s (sequence number %d): %w", d.name, d.dir.Seq-1, err)
		}
	}
	return st, nil
}
