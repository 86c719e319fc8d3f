package nbdclient

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

func TestMACIdentity(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"52:54:00:12:34:56", "52:54:00:12:34:56", false},
		{"52:54:00:AB:CD:EF", "52:54:00:ab:cd:ef", false},
		{"52-54-00-ab-cd-ef", "52:54:00:ab:cd:ef", false},
		{"5254.00ab.cdef", "52:54:00:ab:cd:ef", false},
		{"00:00:00:00:00:00", "", true},
		{"52:54:00:12:34", "", true},
		{"not a mac", "", true},
		{"", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := MACIdentity(tt.in)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Fatalf("MACIdentity(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
			}
			if err != nil && !errors.Is(err, nbd.ErrBadIdentity) {
				t.Errorf("error %v does not wrap nbd.ErrBadIdentity", err)
			}
		})
	}
}

func TestRouteIdentityLoopback(t *testing.T) {
	// The loopback interface has no hardware address: no identity, said so.
	_, iface, err := RouteIdentity("127.0.0.1:10809")
	if !errors.Is(err, ErrNoMAC) {
		t.Fatalf("RouteIdentity(loopback) = %q, %v; want ErrNoMAC", iface, err)
	}
}

var (
	overlayU = nbd.OverlayID{0x26, 0xab, 0x91, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
	overlayV = nbd.OverlayID{0xf2, 0x8f, 0x98, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}
)

// identityServer answers NBD_OPT_NBDROOT_CLIENT with clientReply (and its message) and
// NBD_OPT_GO like goServer, adding the overlay info when overlay is not nil (or the error
// goErr, when set). It records the options and the client option's data.
type identityServer struct {
	t           *testing.T
	clientReply uint32
	overlay     *nbd.OverlayID
	goErr       uint32
	opts        []uint32
	clientData  string
}

func (s *identityServer) onOpt(w io.Writer, opt uint32, data []byte) bool {
	s.opts = append(s.opts, opt)
	switch opt {
	case nbd.OptNbdrootClient:
		s.clientData = string(data)
		w.Write(nbd.AppendOptReply(nil, opt, s.clientReply, []byte("identity says no")))
		return true
	case nbd.OptGo:
		if s.goErr != 0 {
			w.Write(nbd.AppendOptReply(nil, opt, s.goErr, []byte("overlay 26ab… of client pc-1 no longer exists")))
			return true
		}
		if s.overlay != nil {
			w.Write(nbd.AppendOptReply(nil, opt, nbd.RepInfo, nbd.AppendInfoOverlay(nil, *s.overlay)))
		}
	}
	return goServer(s.t, map[string]uint64{"root": 1 << 20})(w, opt, data)
}

func TestHandshakeIdentity(t *testing.T) {
	id := &nbd.ClientOption{ID: "pc-1"}
	resume := &nbd.ClientOption{ID: "pc-1", Overlay: overlayU}
	tests := []struct {
		name     string
		srv      identityServer
		client   *nbd.ClientOption
		wantOpts []uint32
		wantData string
		want     *nbd.ExportInfo // Size, Flags and the overlay fields are compared
		wantErr  uint32          // the OptionError type expected
	}{
		{name: "nbdroot serve, fresh", srv: identityServer{clientReply: nbd.RepAck, overlay: &overlayV}, client: id,
			wantOpts: []uint32{nbd.OptNbdrootClient, nbd.OptGo}, wantData: "id=pc-1",
			want: &nbd.ExportInfo{HasOverlay: true, Overlay: overlayV}},
		{name: "nbdroot serve, resume", srv: identityServer{clientReply: nbd.RepAck, overlay: &overlayU}, client: resume,
			wantOpts: []uint32{nbd.OptNbdrootClient, nbd.OptGo}, wantData: "id=pc-1 overlay=" + overlayU.String(),
			want: &nbd.ExportInfo{HasOverlay: true, Overlay: overlayU}},
		{name: "nbdroot serve, plain export", srv: identityServer{clientReply: nbd.RepAck, overlay: &nbd.OverlayID{}}, client: id,
			wantOpts: []uint32{nbd.OptNbdrootClient, nbd.OptGo}, wantData: "id=pc-1",
			want: &nbd.ExportInfo{HasOverlay: true}},
		{name: "another server (NBD_REP_ERR_UNSUP)", srv: identityServer{clientReply: nbd.RepErrUnsup}, client: id,
			wantOpts: []uint32{nbd.OptNbdrootClient, nbd.OptGo}, wantData: "id=pc-1", want: &nbd.ExportInfo{}},
		{name: "TLS first", srv: identityServer{clientReply: nbd.RepErrTLSReqd, goErr: nbd.RepErrTLSReqd}, client: id,
			wantOpts: []uint32{nbd.OptNbdrootClient, nbd.OptGo}, wantData: "id=pc-1", wantErr: nbd.RepErrTLSReqd},
		{name: "identity refused", srv: identityServer{clientReply: nbd.RepErrInvalid}, client: id,
			wantOpts: []uint32{nbd.OptNbdrootClient}, wantData: "id=pc-1", wantErr: nbd.RepErrInvalid},
		{name: "overlay gone", srv: identityServer{clientReply: nbd.RepAck, goErr: nbd.RepErrNbdrootOverlayGone}, client: resume,
			wantOpts: []uint32{nbd.OptNbdrootClient, nbd.OptGo}, wantData: "id=pc-1 overlay=" + overlayU.String(),
			wantErr: nbd.RepErrNbdrootOverlayGone},
		{name: "no identity", srv: identityServer{}, wantOpts: []uint32{nbd.OptGo}, want: &nbd.ExportInfo{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := tt.srv
			s.t = t
			cli, srvConn := net.Pipe()
			done := make(chan struct{})
			go func() {
				defer close(done)
				fakeServer{flags: nbd.FlagFixedNewstyle | nbd.FlagNoZeroes, onOpt: s.onOpt}.run(t, srvConn)
			}()
			cli.SetDeadline(time.Now().Add(10 * time.Second))
			info, err := Handshake(cli, DialOptions{Export: "root", Client: tt.client})
			cli.Close()
			<-done
			if diff := cmp.Diff(tt.wantOpts, s.opts); diff != "" {
				t.Errorf("options sent (-want +got):\n%s", diff)
			}
			if s.clientData != tt.wantData {
				t.Errorf("NBD_OPT_NBDROOT_CLIENT data %q, want %q", s.clientData, tt.wantData)
			}
			if tt.wantErr != 0 {
				var oe *nbd.OptionError
				if !errors.As(err, &oe) || oe.Type != tt.wantErr {
					t.Fatalf("Handshake = %+v, %v; want %s", info, err, nbd.RepName(tt.wantErr))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if info.Size != 1<<20 || info.HasOverlay != tt.want.HasOverlay || info.Overlay != tt.want.Overlay {
				t.Errorf("export info %+v, want overlay %v/%s", info, tt.want.HasOverlay, tt.want.Overlay)
			}
		})
	}
}

func TestHandshakeIdentityNotOnOldServers(t *testing.T) {
	// A server that is not fixed newstyle takes no options: the identity is not sent.
	srv := fakeServer{onOpt: func(w io.Writer, opt uint32, data []byte) bool {
		if opt != nbd.OptExportName {
			t.Errorf("client sent %s to a non-fixed server", nbd.OptName(opt))
			return false
		}
		w.Write(nbd.AppendExportNameReply(nil, 4096, nbd.TransHasFlags, false))
		return true
	}}
	cli, s := net.Pipe()
	go srv.run(t, s)
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	defer cli.Close()
	info, err := Handshake(cli, DialOptions{Export: "x", Client: &nbd.ClientOption{ID: "pc-1"}})
	if err != nil || info.HasOverlay {
		t.Fatalf("Handshake = %+v, %v", info, err)
	}
}

// overlayDialer is a DialFunc of loopback connections whose GO replies report overlays: the
// first connection without overlay= gets fresh, the others what they resume (or, per dial
// number, served[n] when set). It records what each dial sent.
type overlayDialer struct {
	t      *testing.T
	addr   string
	info   nbd.ExportInfo
	fresh  nbd.OverlayID
	served map[int]nbd.OverlayID
	sent   []DialOptions
}

func (d *overlayDialer) dial(ctx context.Context, _ string, o DialOptions) (*Conn, error) {
	n := len(d.sent)
	sent := o
	if o.Client != nil {
		c := *o.Client
		sent.Client = &c
	}
	d.sent = append(d.sent, sent)
	var nd net.Dialer
	c, err := nd.DialContext(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	info := d.info
	if o.Client != nil {
		info.HasOverlay, info.Overlay = true, d.fresh
		if !o.Client.Overlay.IsZero() {
			info.Overlay = o.Client.Overlay
		}
		if v, ok := d.served[n]; ok {
			info.Overlay = v
		}
	}
	return &Conn{TCPConn: c.(*net.TCPConn), Info: info}, nil
}

func TestDialConnsResumeTheFirstOverlay(t *testing.T) {
	multi := nbd.ExportInfo{Size: 100, Flags: nbd.TransHasFlags | nbd.TransCanMultiConn}
	tests := []struct {
		name      string
		client    *nbd.ClientOption
		served    map[int]nbd.OverlayID
		want      int
		wantSent  []nbd.OverlayID // the overlay= of each dial
		wantNotes string
	}{
		{"fresh boot", &nbd.ClientOption{ID: "pc-1"}, nil, 3, []nbd.OverlayID{{}, overlayU, overlayU}, ""},
		{"resume", &nbd.ClientOption{ID: "pc-1", Overlay: overlayV}, nil, 3, []nbd.OverlayID{overlayV, overlayV, overlayV}, ""},
		{"an extra is served another", &nbd.ClientOption{ID: "pc-1"}, map[int]nbd.OverlayID{2: overlayV}, 2,
			[]nbd.OverlayID{{}, overlayU, overlayU}, "extra connection 3 to a:1: it is served overlay " + overlayV.String() + ", the first connection " + overlayU.String()},
		{"no identity", nil, nil, 3, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &overlayDialer{t: t, addr: serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) }), info: multi,
				fresh: overlayU, served: tt.served}
			var notes []string
			conns, err := DialConns(context.Background(), d.dial, "a:1", DialOptions{Export: "root", Client: tt.client}, 3,
				func(s string) { notes = append(notes, s) })
			defer CloseAll(conns)
			if err != nil {
				t.Fatal(err)
			}
			if len(conns) != tt.want {
				t.Errorf("%d connections, want %d", len(conns), tt.want)
			}
			var sent []nbd.OverlayID
			for _, o := range d.sent {
				if o.Client != nil {
					if o.Client.ID != "pc-1" {
						t.Errorf("identity sent %q", o.Client.ID)
					}
					sent = append(sent, o.Client.Overlay)
				}
			}
			if diff := cmp.Diff(tt.wantSent, sent); diff != "" {
				t.Errorf("overlay= of each dial (-want +got):\n%s", diff)
			}
			if got := strings.Join(notes, "\n"); !strings.Contains(got, tt.wantNotes) || (tt.wantNotes == "") != (got == "") {
				t.Errorf("notes %q, want %q", got, tt.wantNotes)
			}
		})
	}
}

func TestAttachIdentity(t *testing.T) {
	info := nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags | nbd.TransSendFlush | nbd.TransCanMultiConn}
	r := newAttachRig(t)
	r.servers.set("10.0.0.1:10809", &info)
	r.servers.setCow("10.0.0.1:10809", func(c nbd.ClientOption) (nbd.OverlayID, error) {
		if c.Overlay.IsZero() {
			return overlayU, nil
		}
		return c.Overlay, nil
	})
	a, err := Attach(context.Background(), r.request(Request{Servers: []string{"10.0.0.1:10809"}, Export: "root",
		Device: 0, Connections: 2, Identity: "52:54:00:12:34:56"}))
	if err != nil {
		t.Fatal(err)
	}
	if a.Target.Identity != "52:54:00:12:34:56" || a.Target.Overlay != overlayU || a.Sockets != 2 {
		t.Errorf("attached with target identity %q, overlay %s, %d sockets", a.Target.Identity, a.Target.Overlay, a.Sockets)
	}
	want := []DialOptions{
		{Export: "root", Client: &nbd.ClientOption{ID: "52:54:00:12:34:56"}},
		{Export: "root", Client: &nbd.ClientOption{ID: "52:54:00:12:34:56", Overlay: overlayU}},
	}
	if diff := cmp.Diff(want, r.servers.sentTo("10.0.0.1:10809")); diff != "" {
		t.Errorf("dials (-want +got):\n%s", diff)
	}
	b, err := a.MarshalJSON()
	if err != nil || !strings.Contains(string(b), `"identity":"52:54:00:12:34:56","overlay":"`+overlayU.String()+`"`) {
		t.Errorf("JSON %s, %v", b, err)
	}
}

func TestAttachIdentityErrors(t *testing.T) {
	info := nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags}
	tests := []struct {
		name  string
		req   Request
		check func(t *testing.T, err error)
	}{
		{"identity with a slash", Request{Identity: "../etc"}, func(t *testing.T, err error) {
			if !errors.Is(err, nbd.ErrBadIdentity) || !strings.Contains(err.Error(), "client identity") {
				t.Errorf("err = %v", err)
			}
		}},
		{"identity too long", Request{Identity: strings.Repeat("a", 65)}, func(t *testing.T, err error) {
			if !errors.Is(err, nbd.ErrBadIdentity) {
				t.Errorf("err = %v", err)
			}
		}},
		{"overlay without identity", Request{Overlay: overlayU}, func(t *testing.T, err error) {
			if err == nil || !strings.Contains(err.Error(), "needs a client identity") {
				t.Errorf("err = %v", err)
			}
		}},
		{"resumed overlay gone", Request{Identity: "pc-1", Overlay: overlayU, Budget: time.Hour}, func(t *testing.T, err error) {
			var ae *AttachError
			var oe *OverlayError
			if !errors.As(err, &ae) || ae.Step != StepCompatible || !errors.As(err, &oe) || !oe.Gone || oe.Expected != overlayU {
				t.Errorf("err = %v; want an *OverlayError at the compatible step (and no retry for an hour)", err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newAttachRig(t)
			r.servers.set("10.0.0.1:10809", &info)
			r.servers.setCow("10.0.0.1:10809", func(c nbd.ClientOption) (nbd.OverlayID, error) {
				return nbd.OverlayID{}, &nbd.OptionError{Option: nbd.OptGo, Type: nbd.RepErrNbdrootOverlayGone, Message: "gone"}
			})
			tt.req.Servers, tt.req.Device = []string{"10.0.0.1:10809"}, 0
			_, err := Attach(context.Background(), r.request(tt.req))
			tt.check(t, err)
			if len(r.kernel.devs) != 0 {
				t.Errorf("the kernel got a device: %+v", r.kernel.devs)
			}
		})
	}
}

func TestKeeperResumesItsOverlay(t *testing.T) {
	multi := rwInfo
	multi.Flags |= nbd.TransCanMultiConn
	target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Size: testExportSize, Flags: multi.Flags, Connections: 2,
		DeadConnTimeout: time.Hour, Identity: "52:54:00:12:34:56", Overlay: overlayU}
	r := startKeeper(t, target, func(r *keeperRig) {
		r.servers.set("a:1", &multi)
		r.servers.setCow("a:1", func(c nbd.ClientOption) (nbd.OverlayID, error) { return c.Overlay, nil })
	})
	r.links.ch <- linkNotice{idx: []int{0}}
	if got := r.call(t).Socks; got != 2 {
		t.Errorf("%d sockets handed over, want 2", got)
	}
	for i, o := range r.servers.sentTo("a:1") {
		if o.Client == nil || o.Client.ID != target.Identity || o.Client.Overlay != overlayU {
			t.Errorf("dial %d sent %+v, want identity %s resuming %s", i, o.Client, target.Identity, overlayU)
		}
	}
}

func TestKeeperRefusesAnotherView(t *testing.T) {
	gone := func(nbd.ClientOption) (nbd.OverlayID, error) {
		return nbd.OverlayID{}, &nbd.OptionError{Option: nbd.OptGo, Type: nbd.RepErrNbdrootOverlayGone,
			Message: "overlay " + overlayU.String() + " of client pc-1 on export \"root\" no longer exists"}
	}
	tests := []struct {
		name    string
		overlay nbd.OverlayID // the device's
		serve   func(nbd.ClientOption) (nbd.OverlayID, error)
		want    string
	}{
		{"overlay gone", overlayU, gone,
			"nbd0: refusing to attach another view of the disk: NBD server a:1, client pc-1: expected overlay " + overlayU.String() +
				", offered no overlay: the server answered NBD_REP_ERR_NBDROOT_OVERLAY_GONE (the overlay to resume no longer exists): overlay " +
				overlayU.String() + " of client pc-1 on export \"root\" no longer exists"},
		{"another overlay", overlayU, func(nbd.ClientOption) (nbd.OverlayID, error) { return overlayV, nil },
			"NBD server a:1, client pc-1: expected overlay " + overlayU.String() + ", offered overlay " + overlayV.String() + ": another view of the disk"},
		{"a server without identities", overlayU, nil,
			"NBD server a:1, client pc-1: expected overlay " + overlayU.String() + ", offered no overlay: the server does not take client identities"},
		{"an overlay where there was none", nbd.OverlayID{}, func(nbd.ClientOption) (nbd.OverlayID, error) { return overlayV, nil },
			"NBD server a:1, client pc-1: expected no overlay, offered overlay " + overlayV.String() + ": another view of the disk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := KeeperTarget{Index: 0, Servers: []string{"a:1"}, Export: "root", Size: testExportSize, Flags: rwInfo.Flags,
				Connections: 1, DeadConnTimeout: time.Hour, Identity: "pc-1", Overlay: tt.overlay}
			r := startKeeper(t, target, func(r *keeperRig) {
				r.servers.set("a:1", &rwInfo)
				if tt.serve != nil {
					r.servers.setCow("a:1", tt.serve)
				}
			})
			r.links.ch <- linkNotice{idx: []int{0}}
			select {
			case idx := <-r.kernel.disconnects:
				if idx != 0 {
					t.Errorf("disconnected nbd%d", idx)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("the device was not failed; log:\n%s", r.log.text())
			}
			r.noCall(t)
			log := r.log.text()
			if !strings.Contains(log, "<3>"+"nbd0: refusing to attach another view of the disk: "+tt.want[strings.Index(tt.want, "NBD server"):]) {
				t.Errorf("no error-level refusal saying %q:\n%s", tt.want, log)
			}
			r.log.wait(t, "<3>nbd0: no server serves client pc-1 the disk this device was attached with ("+overlayPhrase(tt.overlay)+") any more (last: a:1/root): failing I/O on /dev/nbd0 with EIO")
			if st := r.k.State(); st.State != "failed" || !strings.Contains(st.LastError, "NBD server a:1") {
				t.Errorf("state %+v", st)
			}
			// The device is not repaired again: it failed for good.
			dials := r.servers.dialCount("a:1")
			r.links.ch <- linkNotice{idx: []int{0}}
			r.links.ch <- linkNotice{err: ErrEventsLost}
			time.Sleep(50 * time.Millisecond)
			if n := r.servers.dialCount("a:1"); n != dials {
				t.Errorf("%d more dial(s) after the device failed", n-dials)
			}
		})
	}
}

func TestKeeperOverlayOnAnotherServer(t *testing.T) {
	gone := func(nbd.ClientOption) (nbd.OverlayID, error) {
		return nbd.OverlayID{}, &nbd.OptionError{Option: nbd.OptGo, Type: nbd.RepErrNbdrootOverlayGone}
	}
	target := KeeperTarget{Index: 0, Servers: []string{"a:1", "b:1"}, Size: testExportSize, Flags: rwInfo.Flags,
		Connections: 1, DeadConnTimeout: time.Hour, Identity: "pc-1", Overlay: overlayU}
	t.Run("found on the other", func(t *testing.T) {
		r := startKeeper(t, target, func(r *keeperRig) {
			r.servers.set("a:1", &rwInfo)
			r.servers.setCow("a:1", gone)
		})
		r.links.ch <- linkNotice{idx: []int{0}}
		// a:1 refused, b:1 cannot be reached yet and may have the overlay: keep trying.
		r.log.wait(t, "reconnect attempt 1: NBD server b:1")
		for deadline := time.Now().Add(10 * time.Second); r.servers.dialCount("a:1") < 3; {
			if time.Now().After(deadline) {
				t.Fatal("the keeper stopped trying")
			}
			time.Sleep(time.Millisecond)
		}
		select {
		case <-r.kernel.disconnects:
			t.Fatal("the device was failed while a server that may have its overlay was down")
		default:
		}
		r.servers.set("b:1", &rwInfo)
		r.servers.setCow("b:1", func(c nbd.ClientOption) (nbd.OverlayID, error) { return c.Overlay, nil })
		r.call(t)
		r.log.wait(t, "nbd0: reconnected to b:1")
		if n := strings.Count(r.log.text(), "<3>nbd0: refusing"); n != 1 {
			t.Errorf("the refusal of a:1 was logged %d times, want once:\n%s", n, r.log.text())
		}
	})
	t.Run("gone from both", func(t *testing.T) {
		r := startKeeper(t, target, func(r *keeperRig) {
			for _, a := range []string{"a:1", "b:1"} {
				r.servers.set(a, &rwInfo)
				r.servers.setCow(a, gone)
			}
		})
		r.links.ch <- linkNotice{idx: []int{0}}
		select {
		case <-r.kernel.disconnects:
		case <-time.After(10 * time.Second):
			t.Fatalf("the device was not failed; log:\n%s", r.log.text())
		}
		r.noCall(t)
	})
}
