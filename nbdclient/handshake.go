// Package nbdclient is the client side of nbdroot. It negotiates with an NBD server (fixed
// newstyle; NBD_OPT_GO with NBD_OPT_EXPORT_NAME as fallback; NBD_OPT_LIST), hands the
// negotiated sockets to the kernel's nbd driver — through the generic netlink family "nbd"
// (CONNECT, RECONFIGURE, DISCONNECT, STATUS) or, on kernels without it, the legacy ioctls —
// and keeps them alive: the Keeper, a process of its own that survives switch_root,
// reconnects when the kernel reports a dead link (NBD_CMD_LINK_DEAD).
//
// Attach is the one attach path: the init's nbd hook and `nbdroot attach` call it, and the
// keeper's reconnect shares its negotiation and its retry loop (connect.go), so a behaviour
// of the connection is changed in one place. Detach and Status are `nbdroot detach/status`.
//
// It never negotiates structured replies or extended headers on a socket it hands to the
// kernel: the kernel's nbd driver reads only simple replies. It never sets
// DISCONNECT_ON_CLOSE for a root device, and never disconnects a device it keeps — except to
// fail one with EIO whose copy-on-write overlay no server serves any more (see Keeper).
package nbdclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/nbdroot/nbdroot/nbd"
)

// ErrOldstyle reports a server that speaks only the oldstyle handshake, which carries no
// export name and which nbdroot does not implement.
var ErrOldstyle = errors.New("server speaks the oldstyle handshake (nbd-server -o / before 3.10); fixed newstyle is required")

// ErrNoGo is returned by negotiateGo when the server does not know NBD_OPT_GO; the caller
// falls back to NBD_OPT_EXPORT_NAME.
var errNoGo = errors.New("server does not support NBD_OPT_GO")

// DialOptions is what one connection asks of the server: the export and, for a server
// that keys copy-on-write overlays and the writer lock by client identity, who this client
// is and which overlay it resumes.
type DialOptions struct {
	// Export is the export name ("" for the server's default export).
	Export string
	// Client is sent as NBD_OPT_NBDROOT_CLIENT before NBD_OPT_GO (CONTRACTS.md): the
	// identity, and the overlay to resume (zero on a fresh attach). nil sends nothing, and
	// the server keys the client by its address.
	Client *nbd.ClientOption
}

// Handshake negotiates o.Export on rw (an established connection to a server) and returns
// what the server said about it. The connection is then in the transmission phase, ready for
// the kernel. An empty name asks for the server's default export.
//
// With o.Client, a fixed newstyle server is told the client's identity first; one that does
// not know the option (nbd-server, nbdkit, qemu-nbd answer NBD_REP_ERR_UNSUP, as proto.md
// requires of unknown options) is used without it. Only our server then reports the
// overlay it serves in the GO reply (ExportInfo.HasOverlay).
func Handshake(rw io.ReadWriter, o DialOptions) (*nbd.ExportInfo, error) {
	fixed, noZeroes, err := greet(rw)
	if err != nil {
		return nil, err
	}
	return haggle(rw, o, fixed, noZeroes)
}

// haggle negotiates o after the greeting (and, with TLS, over it): the client identity,
// then NBD_OPT_GO, or NBD_OPT_EXPORT_NAME where the server does not know it.
func haggle(rw io.ReadWriter, o DialOptions, fixed, noZeroes bool) (*nbd.ExportInfo, error) {
	if fixed {
		if o.Client != nil {
			if err := sendClient(rw, *o.Client); err != nil {
				return nil, err
			}
		}
		info, err := negotiateGo(rw, o.Export)
		if !errors.Is(err, errNoGo) {
			return info, err
		}
	}
	return exportName(rw, o.Export, noZeroes)
}

// sendClient sends NBD_OPT_NBDROOT_CLIENT. A server that does not know it (NBD_REP_ERR_UNSUP)
// or wants TLS first (NBD_REP_ERR_TLS_REQD: the GO that follows gets the same answer, which
// says it better) is not an error; a refused identity is.
func sendClient(rw io.ReadWriter, c nbd.ClientOption) error {
	if _, err := rw.Write(nbd.AppendOption(nil, nbd.OptNbdrootClient, nbd.AppendClientOption(nil, c))); err != nil {
		return fmt.Errorf("send %s: %w", nbd.OptName(nbd.OptNbdrootClient), err)
	}
	r, data, err := readOptReply(rw, nbd.OptNbdrootClient)
	if err != nil {
		return err
	}
	switch {
	case r.Type == nbd.RepAck:
		return nil
	case r.Type == nbd.RepErrUnsup, r.Type == nbd.RepErrTLSReqd:
		return nil
	case r.Type&nbd.RepFlagError != 0:
		return &nbd.OptionError{Option: nbd.OptNbdrootClient, Type: r.Type, Message: string(data)}
	}
	return fmt.Errorf("unexpected %s to %s", nbd.RepName(r.Type), nbd.OptName(nbd.OptNbdrootClient))
}

// List asks the server for its export names (NBD_OPT_LIST) and ends the session with
// NBD_OPT_ABORT.
func List(rw io.ReadWriter) ([]string, error) {
	fixed, _, err := greet(rw)
	if err != nil {
		return nil, err
	}
	return listAfterGreet(rw, fixed)
}

// listAfterGreet is List after the greeting (and, with TLS, over it).
func listAfterGreet(rw io.ReadWriter, fixed bool) ([]string, error) {
	if !fixed {
		return nil, errors.New("server is not fixed newstyle: it cannot list exports")
	}
	if _, err := rw.Write(nbd.AppendOption(nil, nbd.OptList, nil)); err != nil {
		return nil, fmt.Errorf("send NBD_OPT_LIST: %w", err)
	}
	var names []string
	for {
		r, data, err := readOptReply(rw, nbd.OptList)
		if err != nil {
			return nil, err
		}
		switch {
		case r.Type == nbd.RepAck:
			abort(rw)
			return names, nil
		case r.Type == nbd.RepServer:
			if len(data) < 4 || uint64(binary.BigEndian.Uint32(data))+4 > uint64(len(data)) {
				return nil, fmt.Errorf("NBD_REP_SERVER: %w", nbd.ErrMalformed)
			}
			names = append(names, string(data[4:4+binary.BigEndian.Uint32(data)]))
		case r.Type&nbd.RepFlagError != 0:
			return nil, &nbd.OptionError{Option: nbd.OptList, Type: r.Type, Message: string(data)}
		default:
			return nil, fmt.Errorf("unexpected %s to NBD_OPT_LIST", nbd.RepName(r.Type))
		}
	}
}

// greet reads the server's greeting and sends our client flags. It returns whether the
// server is fixed newstyle and whether both sides agreed to NO_ZEROES.
func greet(rw io.ReadWriter) (fixed, noZeroes bool, err error) {
	var b [18]byte
	if _, err := io.ReadFull(rw, b[:16]); err != nil {
		return false, false, fmt.Errorf("read server greeting: %w", err)
	}
	if m := binary.BigEndian.Uint64(b[:]); m != nbd.NBDMagic {
		return false, false, &nbd.MagicError{What: "greeting", Got: m, Want: nbd.NBDMagic}
	}
	switch m := binary.BigEndian.Uint64(b[8:]); m {
	case nbd.IHaveOpt:
	case nbd.OldstyleMagic:
		return false, false, ErrOldstyle
	default:
		return false, false, &nbd.MagicError{What: "newstyle greeting", Got: m, Want: nbd.IHaveOpt}
	}
	if _, err := io.ReadFull(rw, b[16:18]); err != nil {
		return false, false, fmt.Errorf("read handshake flags: %w", err)
	}
	flags := binary.BigEndian.Uint16(b[16:])
	fixed = flags&nbd.FlagFixedNewstyle != 0
	noZeroes = flags&nbd.FlagNoZeroes != 0
	// Only echo bits the server offered: proto.md says a server must drop a client that sets
	// a flag it does not know.
	var cf uint32
	if fixed {
		cf |= nbd.ClientFlagFixedNewstyle
	}
	if noZeroes {
		cf |= nbd.ClientFlagNoZeroes
	}
	if _, err := rw.Write(binary.BigEndian.AppendUint32(nil, cf)); err != nil {
		return false, false, fmt.Errorf("send client flags: %w", err)
	}
	return fixed, noZeroes, nil
}

// negotiateGo sends NBD_OPT_GO for name, asking for the block size constraints (which
// promises the server that we honour them) and the export's name and description.
func negotiateGo(rw io.ReadWriter, name string) (*nbd.ExportInfo, error) {
	data := nbd.AppendInfoRequest(nil, name, nbd.InfoBlockSize, nbd.InfoName, nbd.InfoDescription)
	if _, err := rw.Write(nbd.AppendOption(nil, nbd.OptGo, data)); err != nil {
		return nil, fmt.Errorf("send NBD_OPT_GO: %w", err)
	}
	info := &nbd.ExportInfo{Name: name}
	gotExport := false
	for {
		r, data, err := readOptReply(rw, nbd.OptGo)
		if err != nil {
			return nil, err
		}
		switch {
		case r.Type == nbd.RepInfo:
			if err := nbd.ParseInfo(data, info); err != nil {
				return nil, err
			}
			if len(data) >= 2 && binary.BigEndian.Uint16(data) == nbd.InfoExport {
				gotExport = true
			}
		case r.Type == nbd.RepAck:
			if !gotExport {
				return nil, errors.New("server acknowledged NBD_OPT_GO without NBD_INFO_EXPORT (size unknown)")
			}
			return info, nil
		case r.Type == nbd.RepErrUnsup:
			return nil, errNoGo
		case r.Type&nbd.RepFlagError != 0:
			return nil, &nbd.OptionError{Option: nbd.OptGo, Type: r.Type, Message: string(data)}
		default:
			// proto.md: a client must ignore reply types it does not understand only for
			// informational replies; anything else means we are out of step.
			return nil, fmt.Errorf("unexpected %s to NBD_OPT_GO", nbd.RepName(r.Type))
		}
	}
}

// exportName is the fallback for servers without NBD_OPT_GO (and for non-fixed newstyle
// servers): the server answers with size and flags, or closes the connection when the export
// does not exist.
func exportName(rw io.ReadWriter, name string, noZeroes bool) (*nbd.ExportInfo, error) {
	if len(name) > nbd.MaxNameLength {
		return nil, fmt.Errorf("export name of %d bytes is longer than %d", len(name), nbd.MaxNameLength)
	}
	if _, err := rw.Write(nbd.AppendOption(nil, nbd.OptExportName, []byte(name))); err != nil {
		return nil, fmt.Errorf("send NBD_OPT_EXPORT_NAME: %w", err)
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(rw, b); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("server closed the connection after NBD_OPT_EXPORT_NAME: no such export or not allowed")
		}
		return nil, fmt.Errorf("read NBD_OPT_EXPORT_NAME reply: %w", err)
	}
	return &nbd.ExportInfo{Name: name, Size: binary.BigEndian.Uint64(b), Flags: binary.BigEndian.Uint16(b[8:])}, nil
}

// readOptReply reads one option reply to opt, refusing data longer than nbd.MaxOptionLength.
func readOptReply(r io.Reader, opt uint32) (nbd.OptReply, []byte, error) {
	var h [nbd.OptReplyHeaderSize]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nbd.OptReply{}, nil, fmt.Errorf("read reply to %s: %w", nbd.OptName(opt), err)
	}
	rep, err := nbd.ParseOptReply(h[:])
	if err != nil {
		return rep, nil, err
	}
	if rep.Option != opt {
		return rep, nil, fmt.Errorf("reply for %s while waiting for %s", nbd.OptName(rep.Option), nbd.OptName(opt))
	}
	if rep.Length > nbd.MaxOptionLength {
		return rep, nil, fmt.Errorf("reply to %s of %d bytes exceeds %d", nbd.OptName(opt), rep.Length, nbd.MaxOptionLength)
	}
	data := make([]byte, rep.Length)
	if _, err := io.ReadFull(r, data); err != nil {
		return rep, nil, fmt.Errorf("read reply to %s: %w", nbd.OptName(opt), err)
	}
	return rep, data, nil
}

// abort ends a negotiation politely; errors do not matter, the connection is closed next.
func abort(w io.Writer) {
	_, _ = w.Write(nbd.AppendOption(nil, nbd.OptAbort, nil))
}
