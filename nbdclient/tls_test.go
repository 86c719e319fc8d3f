//go:build !nbdroot_notls

package nbdclient

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient/ktls"
	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/test/pki"
	"golang.org/x/sys/unix"
)

func TestServerName(t *testing.T) {
	s := &TLSSettings{Names: map[string]string{"10.0.0.5:10809": "nbd.lab"}}
	for _, tc := range []struct{ addr, want string }{
		{"10.0.0.5:10809", "nbd.lab"}, // resolved before switch_root: the name it came from
		{"10.0.0.6:10809", "10.0.0.6"},
		{"[fd00::1]:10809", "fd00::1"},
		{"nbd.lab:10809", "nbd.lab"},
	} {
		if got := s.serverName(tc.addr); got != tc.want {
			t.Errorf("serverName(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	s.ServerName = "override.lab"
	if got := s.serverName("10.0.0.5:10809"); got != "override.lab" {
		t.Errorf("an explicit server name is not used: %q", got)
	}
}

// relayedDial wraps a fake dial: its connections come back as TLS connections whose
// records the kernel could not take.
func relayedDial(dial DialFunc) DialFunc {
	return func(ctx context.Context, addr string, o DialOptions) (*Conn, error) {
		c, err := dial(ctx, addr, o)
		if err != nil {
			return nil, err
		}
		st := ktls.State{Suite: ktls.AES128GCMSHA256, TX: ktls.Direction{Secret: make([]byte, 32), Seq: 3}, RX: ktls.Direction{Secret: make([]byte, 32), Seq: 5}}
		c.TLS = &TLSState{Suite: st.Suite, Relay: &st, Why: "kernel TLS: no tls module"}
		return c, nil
	}
}

// TestAttachRelayed: connections the kernel cannot take go to a keeper that starts their
// relays and connects the device itself; the kernel is not touched by the attach.
func TestAttachRelayed(t *testing.T) {
	r := newAttachRig(t)
	info := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags | nbd.TransCanMultiConn}
	r.servers.set("localhost:10809", &info)
	req := r.request(Request{Servers: []string{"localhost:10809"}, Device: -1, Connections: 2,
		TLS: &TLSSettings{CAPEM: "ca"}, Keeper: KeeperStart{Args: []string{"attach", "--run-keeper"}}})
	req.Dial = relayedDial(req.Dial)
	_, err := Attach(context.Background(), req)
	if err == nil || stepOf(err) != StepKernel || !strings.Contains(err.Error(), "no keeper in unit tests") {
		t.Fatalf("Attach: %v; want the (fake) keeper's failure at the kernel step", err)
	}
	if len(r.kernel.devs) != 0 {
		t.Errorf("the attach handed the kernel relayed sockets itself: %+v", r.kernel.devs)
	}
	if len(r.keepers.specs) != 1 {
		t.Fatalf("%d keepers launched", len(r.keepers.specs))
	}
	spec, start := r.keepers.specs[0], r.keepers.starts[0]
	if spec.Netlink == nil || spec.Netlink.Index != -1 || spec.Legacy != nil {
		t.Errorf("the keeper does not connect the device through netlink: %+v %+v", spec.Netlink, spec.Legacy)
	}
	if len(spec.Relays) != 2 || spec.Relays[0] == nil || spec.Relays[0].RX.Seq != 5 || len(start.Socks) != 2 {
		t.Errorf("relays %+v for %d sockets", spec.Relays, len(start.Socks))
	}
	// The keeper reconnects to addresses, and checks certificates for the names.
	tgt := spec.Target
	if tgt.TLS == nil || tgt.TLS.CAPEM != "ca" || len(tgt.TLS.Names) != 1 || tgt.TLS.Names[tgt.Servers[0]] != "localhost" || tgt.Servers[0] == "localhost:10809" {
		t.Errorf("keeper target %v, TLS %+v", tgt.Servers, tgt.TLS)
	}
}

// relayKernel is a DeviceKernel that acts as the nbd driver with the sockets it is
// handed: it keeps the latest ones (closing those they replace, as the kernel drops them).
type relayKernel struct {
	mu    sync.Mutex
	socks []*os.File
	got   chan []*os.File
}

func (k *relayKernel) Reconfigure(dev Device, socks []*os.File) error {
	var own []*os.File
	for _, f := range socks {
		d, err := dupFile(f)
		if err != nil {
			return err
		}
		own = append(own, d)
	}
	k.mu.Lock()
	CloseFiles(k.socks)
	k.socks = own
	k.mu.Unlock()
	k.got <- own
	return nil
}

func (k *relayKernel) Disconnect(index int) error { return nil }

func (k *relayKernel) Status(index int) ([]DeviceStatus, error) {
	return []DeviceStatus{{Index: index, Connected: true}}, nil
}

// TestKeeperRelaysTLS reconnects a device to a TLS server on a kernel without kernel TLS
// (this host's): the keeper negotiates TLS, starts a relay and hands the kernel a socket
// pair, through which the "kernel" reads the image; the relay a second reconnect replaces
// ends when the kernel drops its socket.
func TestKeeperRelaysTLS(t *testing.T) {
	if _, err := os.Stat("/proc/sys/net/ipv4/tcp_available_ulp"); err == nil {
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_available_ulp"); strings.Contains(string(b), "tls") {
			t.Skip("this kernel has kernel TLS: the relay is not used (the QEMU tests force it)")
		}
	}
	p := pki.New(t, "client")
	root, _, data := peerImages(t)
	srv := startNbdrootServeTLS(t, p, root, nbdserver.TLSRequire)
	target := KeeperTarget{Index: 0, Servers: []string{srv.addr}, Export: "root", Size: peerImageSize,
		Flags: nbd.TransHasFlags, Connections: 1, TLS: clientTLS(p)}
	kernel := &relayKernel{got: make(chan []*os.File, 4)}
	links := newFakeLinks()
	log := newLogRecorder()
	ended := make(chan struct{}, 1)
	relays := &Relays{Logf: log.Logf, Device: "nbd0", Ended: ended}
	k := &Keeper{Target: target, Dial: NewDialer(target.TLS).Dial, Kernel: kernel, Links: links, Logf: log.Logf,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Relays: relays, RelayEnded: ended}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	defer func() { cancel(); <-done }()

	read := func() {
		t.Helper()
		var socks []*os.File
		select {
		case socks = <-kernel.got:
		case <-time.After(20 * time.Second):
			t.Fatalf("no reconfigure; log:\n%s", log.text())
		}
		if dom, err := unix.GetsockoptInt(int(socks[0].Fd()), unix.SOL_SOCKET, unix.SO_DOMAIN); err != nil || dom != unix.AF_UNIX {
			t.Fatalf("the kernel got a socket of domain %d (%v), want one end of a Unix socket pair", dom, err)
		}
		d, _ := dupFile(socks[0])
		c, err := net.FileConn(d)
		d.Close()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if got := readBlock(t, c, 1<<20, 8192); !bytes.Equal(got, data[1<<20:1<<20+8192]) {
			t.Fatal("the data read through the keeper's relay differs")
		}
	}
	links.ch <- linkNotice{idx: []int{0}}
	read()
	log.wait(t, "nbd0: reconnected to")
	if st := k.State(); st.Relays != 1 || !strings.Contains(st.TLS, "relayed by the keeper") {
		t.Errorf("keeper state: %d relays, TLS %q", st.Relays, st.TLS)
	}
	links.ch <- linkNotice{idx: []int{0}}
	read()
	log.wait(t, "nbd0: TLS relay 1 ended: the kernel closed its end")
	if n := relays.Running(); n != 1 {
		t.Errorf("%d relays run after the second reconnect, want 1", n)
	}
}

// TestStartTLSRefused: a server that cannot be asked for TLS (not fixed newstyle: an old
// nbd-server) or that refuses NBD_OPT_STARTTLS (ERR_UNSUP, ERR_POLICY) fails a required
// TLS with a *TLSError of reason TLSRefused, before any export is negotiated
// (TestTLSBadInput has TLSIfOffered going on in clear text).
func TestStartTLSRefused(t *testing.T) {
	greeting := func(c net.Conn, flags uint16) {
		b := binary.BigEndian.AppendUint64(nil, nbd.NBDMagic)
		b = binary.BigEndian.AppendUint64(b, nbd.IHaveOpt)
		c.Write(binary.BigEndian.AppendUint16(b, flags))
	}
	for _, tc := range []struct {
		name  string
		serve func(c net.Conn)
		want  string
	}{
		{"not fixed newstyle", func(c net.Conn) {
			greeting(c, 0)
			io.Copy(io.Discard, c)
		}, "the server is not fixed newstyle, which TLS needs"},
		{"ERR_UNSUP", func(c net.Conn) {
			greeting(c, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes)
			buf := make([]byte, 4+16)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(nbd.AppendOptReply(nil, nbd.OptStartTLS, nbd.RepErrUnsup, nil))
			io.Copy(io.Discard, c)
		}, "NBD_REP_ERR_UNSUP"},
		{"ERR_POLICY", func(c net.Conn) {
			greeting(c, nbd.FlagFixedNewstyle|nbd.FlagNoZeroes)
			buf := make([]byte, 4+16)
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			c.Write(nbd.AppendOptReply(nil, nbd.OptStartTLS, nbd.RepErrPolicy, []byte("no TLS here")))
			io.Copy(io.Discard, c)
		}, "NBD_REP_ERR_POLICY (forbidden by server policy): no TLS here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serveTCP(t, tc.serve)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := NewDialer(&TLSSettings{CAPEM: "unused"}).Dial(ctx, addr, DialOptions{Export: "root"})
			var te *TLSError
			if !errors.As(err, &te) || te.Reason != TLSRefused || !errors.Is(err, ErrTLSRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want a refused TLS saying %q", err, tc.want)
			}
		})
	}
}
