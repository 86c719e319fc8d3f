package ktls

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Handshake message types a relay meets after the handshake (RFC 8446 4).
const (
	msgNewSessionTicket = 4
	msgKeyUpdate        = 24
)

// Alert descriptions (RFC 8446 6).
const alertCloseNotify = 0

// ErrClosed reports a relay that ended because one side closed cleanly: the server sent
// close_notify, or the kernel closed its end.
var ErrClosed = errors.New("closed")

// AlertError is a fatal alert the server sent.
type AlertError struct{ Description uint8 }

// Error implements error.
func (e *AlertError) Error() string {
	return fmt.Sprintf("the server sent TLS alert %d (%s)", e.Description, alertName(e.Description))
}

func alertName(d uint8) string {
	switch d {
	case 10:
		return "unexpected_message"
	case 20:
		return "bad_record_mac"
	case 40:
		return "handshake_failure"
	case 42:
		return "bad_certificate"
	case 45:
		return "certificate_expired"
	case 50:
		return "decode_error"
	case 80:
		return "internal_error"
	case 90:
		return "user_canceled"
	}
	return "see RFC 8446 6"
}

// Relay does in userspace what kernel TLS does for a socket handed to the nbd driver. It
// carries a connection between plain, the end of a socket pair whose other end the kernel
// reads and writes, and wire, the TCP connection to the server: what the kernel writes is
// sealed into records, what the server sends is opened, and the sequence numbers continue
// from the handshake's (State).
//
// Unlike the kernel (before Linux 6.14) it follows the server's KeyUpdate, answering one
// that asks for it (RFC 8446 4.6.3), and skips NewSessionTicket messages. An alert, a
// record that does not authenticate or either side closing ends the relay and closes both
// sides: the kernel then sees its socket fail, marks the connection dead and the keeper
// reconnects.
type Relay struct {
	plain, wire io.ReadWriteCloser

	txMu sync.Mutex // the sealing side: the kernel's data, and the answer to a KeyUpdate
	tx   *Cipher
	rx   *Cipher
}

// NewRelay prepares a relay of st between plain and wire.
func NewRelay(plain, wire io.ReadWriteCloser, st State) (*Relay, error) {
	tx, err := NewCipher(st.Suite, st.TX)
	if err != nil {
		return nil, err
	}
	rx, err := NewCipher(st.Suite, st.RX)
	if err != nil {
		return nil, err
	}
	return &Relay{plain: plain, wire: wire, tx: tx, rx: rx}, nil
}

// Run relays until one side ends, closes both sides and returns why: an error wrapping
// ErrClosed when a side closed cleanly.
func (r *Relay) Run() error {
	up, down := make(chan error, 1), make(chan error, 1)
	go func() { up <- r.up() }()
	go func() { down <- r.down() }()
	var upErr, downErr error
	upFirst := false
	select {
	case upErr = <-up:
		upFirst = true
	case downErr = <-down:
	}
	r.plain.Close()
	r.wire.Close()
	if upFirst {
		downErr = <-down
	} else {
		upErr = <-up
	}
	// The kernel closing its end is the cause even when the server's answer to our
	// close_notify (it closes too) reached this point first: up reports the kernel's EOF
	// only when the kernel closed, never after Run closed that end (a read then fails
	// with net.ErrClosed).
	if upFirst || errors.Is(upErr, ErrClosed) {
		return upErr
	}
	return downErr
}

// up seals what the kernel writes into records for the server.
func (r *Relay) up() error {
	buf := make([]byte, MaxPlaintext)
	out := make([]byte, 0, HeaderLen+MaxCiphertext)
	for {
		n, err := r.plain.Read(buf)
		if n > 0 {
			if werr := r.send(out, TypeApplicationData, buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, io.EOF) {
			// The kernel closed its end: say goodbye to the server the way TLS does.
			r.send(out, TypeAlert, []byte{1, alertCloseNotify})
			return fmt.Errorf("the kernel closed its end: %w", ErrClosed)
		}
		if err != nil {
			return fmt.Errorf("read from the kernel's socket: %w", err)
		}
	}
}

func (r *Relay) send(out []byte, typ uint8, p []byte) error {
	r.txMu.Lock()
	defer r.txMu.Unlock()
	rec, err := r.tx.Seal(out[:0], typ, p)
	if err != nil {
		return err
	}
	if _, err := r.wire.Write(rec); err != nil {
		return fmt.Errorf("write to the server: %w", err)
	}
	return nil
}

// down opens the server's records for the kernel.
func (r *Relay) down() error {
	buf := make([]byte, HeaderLen+MaxCiphertext)
	var hs []byte // handshake messages split across records
	for {
		if _, err := io.ReadFull(r.wire, buf[:HeaderLen]); err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the server closed the connection without close_notify: %w", io.ErrUnexpectedEOF)
			}
			return fmt.Errorf("read from the server: %w", err)
		}
		h, err := ParseHeader(buf[:HeaderLen])
		if err != nil {
			return err
		}
		rec := buf[:HeaderLen+h.Length]
		if _, err := io.ReadFull(r.wire, rec[HeaderLen:]); err != nil {
			return fmt.Errorf("read from the server: %w", err)
		}
		typ, pt, err := r.rx.Open(rec)
		if err != nil {
			return err
		}
		switch typ {
		case TypeApplicationData:
			if len(hs) > 0 {
				return fmt.Errorf("%w: application data inside a handshake message", ErrRecord)
			}
			if _, err := r.plain.Write(pt); err != nil {
				return fmt.Errorf("write to the kernel's socket: %w", err)
			}
		case TypeHandshake:
			if hs, err = r.handshake(append(hs, pt...)); err != nil {
				return err
			}
		case TypeAlert:
			if len(pt) != 2 {
				return fmt.Errorf("%w: an alert of %d bytes", ErrRecord, len(pt))
			}
			if pt[1] == alertCloseNotify {
				return fmt.Errorf("the server sent close_notify: %w", ErrClosed)
			}
			return &AlertError{Description: pt[1]}
		default:
			return fmt.Errorf("%w: content type %d after the handshake", ErrRecord, typ)
		}
	}
}

// handshake handles the whole post-handshake messages at the start of b and returns the
// incomplete rest.
func (r *Relay) handshake(b []byte) ([]byte, error) {
	for len(b) >= 4 {
		n := int(b[1])<<16 | int(b[2])<<8 | int(b[3])
		if n > 1<<16 {
			return nil, fmt.Errorf("%w: a post-handshake message of %d bytes", ErrRecord, n)
		}
		if len(b) < 4+n {
			break
		}
		typ, body := b[0], b[4:4+n]
		b = b[4+n:]
		switch typ {
		case msgNewSessionTicket:
			// For resumption, which nobody here uses.
		case msgKeyUpdate:
			if len(body) != 1 || body[0] > 1 {
				return nil, fmt.Errorf("%w: malformed KeyUpdate", ErrRecord)
			}
			// A key change aligns with a record boundary (RFC 8446 5.1).
			if len(b) != 0 {
				return nil, fmt.Errorf("%w: data after a KeyUpdate in its record", ErrRecord)
			}
			if err := r.rx.Update(); err != nil {
				return nil, err
			}
			if body[0] == 1 {
				if err := r.updateTX(false); err != nil {
					return nil, err
				}
			}
		default:
			return nil, fmt.Errorf("%w: handshake message %d after the handshake", ErrRecord, typ)
		}
	}
	return b, nil
}

// updateTX sends a KeyUpdate and moves our next records to the next key: the answer to a
// KeyUpdate that asks for one (request false, RFC 8446 4.6.3), or one asking the server
// to update too.
func (r *Relay) updateTX(request bool) error {
	r.txMu.Lock()
	defer r.txMu.Unlock()
	msg := binary.BigEndian.AppendUint32(nil, msgKeyUpdate<<24|1)
	if request {
		msg = append(msg, 1)
	} else {
		msg = append(msg, 0)
	}
	rec, err := r.tx.Seal(nil, TypeHandshake, msg)
	if err != nil {
		return err
	}
	if _, err := r.wire.Write(rec); err != nil {
		return fmt.Errorf("write to the server: %w", err)
	}
	return r.tx.Update()
}
