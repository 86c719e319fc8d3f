package nbdclient

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
	"github.com/nbdroot/nbdroot/nbd"
)

// scripted is a connection whose server side is a fixed byte stream; what the client
// writes is discarded.
type scripted struct{ r io.Reader }

func (s scripted) Read(p []byte) (int, error)  { return s.r.Read(p) }
func (s scripted) Write(p []byte) (int, error) { return len(p), nil }

// serverStream builds a plausible server byte stream: greeting, then option replies.
func serverStream(flags uint16, replies ...[]byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, nbd.NBDMagic)
	b = binary.BigEndian.AppendUint64(b, nbd.IHaveOpt)
	b = binary.BigEndian.AppendUint16(b, flags)
	for _, r := range replies {
		b = append(b, r...)
	}
	return b
}

// FuzzHandshake feeds arbitrary server answers to Handshake and List: whatever the network
// says, the client returns (no panic, no endless loop) and a success is self-consistent.
func FuzzHandshake(f *testing.F) {
	fixed := uint16(nbd.FlagFixedNewstyle | nbd.FlagNoZeroes)
	f.Add(serverStream(fixed,
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepInfo, nbd.AppendInfoExport(nil, 1<<20, 1)),
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepInfo, nbd.AppendInfoBlockSize(nil, 512, 4096, 1<<25)),
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepAck, nil)))
	f.Add(serverStream(fixed, nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepErrUnsup, nil),
		nbd.AppendExportNameReply(nil, 4096, 3, true)))
	f.Add(serverStream(0, nbd.AppendExportNameReply(nil, 4096, 3, false)))
	f.Add(serverStream(fixed, nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepErrUnknown, []byte("no"))))
	f.Add(serverStream(fixed, nbd.AppendOptReply(nil, nbd.OptList, nbd.RepServer, []byte{0, 0, 0, 4, 'r', 'o', 'o', 't'}),
		nbd.AppendOptReply(nil, nbd.OptList, nbd.RepAck, nil)))
	f.Add(append(binary.BigEndian.AppendUint64(nil, nbd.NBDMagic), binary.BigEndian.AppendUint64(nil, nbd.OldstyleMagic)...))
	f.Add([]byte("SSH-2.0-OpenSSH\r\n"))
	// nbdroot serve: the identity acknowledged, the overlay reported with the export.
	f.Add(serverStream(fixed,
		nbd.AppendOptReply(nil, nbd.OptNbdrootClient, nbd.RepAck, nil),
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepInfo, nbd.AppendInfoOverlay(nil, nbd.OverlayID{1, 2, 3})),
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepInfo, nbd.AppendInfoExport(nil, 1<<20, 1)),
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepAck, nil)))
	f.Add(serverStream(fixed,
		nbd.AppendOptReply(nil, nbd.OptNbdrootClient, nbd.RepErrUnsup, nil),
		nbd.AppendOptReply(nil, nbd.OptGo, nbd.RepErrNbdrootOverlayGone, []byte("gone"))))
	f.Fuzz(func(t *testing.T, stream []byte) {
		info, err := Handshake(scripted{bytes.NewReader(stream)}, DialOptions{Export: "root"})
		if err == nil {
			if info == nil {
				t.Fatal("Handshake succeeded without export information")
			}
			if info.Name != "root" && info.Name != "" && !bytes.Contains(stream, []byte(info.Name)) {
				t.Fatalf("export name %q came from nowhere", info.Name)
			}
		}
		// The same answers to a client that names itself (and resumes an overlay).
		client := &nbd.ClientOption{ID: "52:54:00:12:34:56", Overlay: nbd.OverlayID{9}}
		if info, err := Handshake(scripted{bytes.NewReader(stream)}, DialOptions{Export: "root", Client: client}); err == nil {
			if info == nil {
				t.Fatal("Handshake succeeded without export information")
			}
			if !info.HasOverlay && !info.Overlay.IsZero() {
				t.Fatalf("an overlay %s without the overlay information", info.Overlay)
			}
		}
		names, err := List(scripted{bytes.NewReader(stream)})
		if err == nil && len(names) > len(stream) {
			t.Fatalf("%d names from %d bytes", len(names), len(stream))
		}
	})
}

// FuzzDecodeKernel feeds arbitrary attribute payloads to the decoders of the kernel's
// replies and events.
func FuzzDecodeKernel(f *testing.F) {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(attrDeviceList, func(l *netlink.AttributeEncoder) error {
		l.Nested(deviceItem, func(d *netlink.AttributeEncoder) error {
			d.Uint32(deviceIndex, 3)
			d.Uint8(deviceConnected, 1)
			return nil
		})
		return nil
	})
	b, _ := ae.Encode()
	f.Add(b)
	ae = netlink.NewAttributeEncoder()
	ae.Uint32(attrIndex, 7)
	b, _ = ae.Encode()
	f.Add(b)
	f.Add([]byte{4, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs := []genetlink.Message{{Header: genetlink.Header{Command: cmdLinkDead}, Data: data}}
		decodeStatus(msgs)
		decodeIndex(msgs)
		if idx, err := decodeLinkDead(msgs); err == nil && len(idx) != 1 {
			t.Fatalf("one LINK_DEAD message decoded to %d indexes", len(idx))
		}
	})
}
