package hooks

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// nbdDialer returns a fake DialNBD handing out real loopback connections (the hook calls
// File on them) that describe info; addresses in down refuse.
func nbdDialer(t *testing.T, info nbd.ExportInfo, down ...string) nbdclient.DialFunc {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for _, c := range held {
			c.Close()
		}
	})
	return func(ctx context.Context, addr string, o nbdclient.DialOptions) (*nbdclient.Conn, error) {
		for _, d := range down {
			if d == addr {
				return nil, &nbdclient.DialError{Server: addr, Export: o.Export, Err: errors.New("connection refused")}
			}
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		i := info
		i.Name = o.Export
		return &nbdclient.Conn{TCPConn: c.(*net.TCPConn), Info: i}, nil
	}
}

func TestNBDHook(t *testing.T) {
	rw := nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags | nbd.TransSendFlush | nbd.TransCanMultiConn,
		MinBlock: 512, PrefBlock: 4096, MaxBlock: 1 << 20}
	single := rw
	single.Flags &^= nbd.TransCanMultiConn
	ro := rw
	ro.Flags |= nbd.TransReadOnly
	big := rw
	big.MinBlock = 4096
	tests := []struct {
		name    string
		cmdline string
		info    nbd.ExportInfo
		down    []string
		attach  func(dev nbdclient.Device, socks []*os.File) (int, error)
		want    nbdclient.Device
		socks   int
		server  string
		rw      bool
		log     []string
	}{
		{
			name:    "defaults",
			cmdline: "nbd_server=10.0.0.1 nbd_export=root root=/dev/nbd0",
			info:    rw,
			want: nbdclient.Device{Index: 0, Size: 64 << 20, BlockSize: 512, ServerFlags: rw.Flags,
				DeadConnTimeout: nbdclient.DefaultKeptDeadConnTimeout, BackendID: "10.0.0.1:10809/root", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
		},
		{
			name:    "knobs, multi-conn, named device",
			cmdline: "nbd_server=10.0.0.1:2000 root=/dev/nbd3p1 nbdroot.connections=4 nbdroot.timeout=20 nbdroot.deadconn=300",
			info:    big,
			want: nbdclient.Device{Index: 3, Size: 64 << 20, BlockSize: 4096, ServerFlags: rw.Flags,
				Timeout: 20 * time.Second, DeadConnTimeout: 300 * time.Second, BackendID: "10.0.0.1:2000", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 4, server: "10.0.0.1:2000",
		},
		{
			name:    "no multi-conn",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.connections=2",
			info:    single,
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: single.Flags,
				DeadConnTimeout: nbdclient.DefaultKeptDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
			log: []string{"10.0.0.1:10809 does not allow multi-conn"},
		},
		{
			name:    "read-only export, rw asked",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 rw",
			info:    ro,
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: ro.Flags,
				DeadConnTimeout: nbdclient.DefaultKeptDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
			log: []string{"10.0.0.1:10809 is read-only (NBD_FLAG_READ_ONLY): mounting the root read-only despite rw"},
		},
		{
			name:    "rw",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 rw",
			info:    rw,
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: rw.Flags,
				DeadConnTimeout: nbdclient.DefaultKeptDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809", rw: true,
		},
		{
			name:    "failover",
			cmdline: "nbd_server=10.0.0.1:10809,10.0.0.2:10809 root=/dev/nbd0",
			info:    rw,
			down:    []string{"10.0.0.1:10809"},
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: rw.Flags,
				DeadConnTimeout: nbdclient.DefaultKeptDeadConnTimeout, BackendID: "10.0.0.2:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.2:10809",
			log: []string{"nbd: attempt 1: NBD server 10.0.0.1:10809"},
		},
		{
			name:    "partition scan failed",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0p1",
			info:    rw,
			attach: func(dev nbdclient.Device, socks []*os.File) (int, error) {
				return 0, &nbdclient.SetupError{Index: 0, Err: errors.New("partition scan of /dev/nbd0: max_part=0")}
			},
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: rw.Flags,
				DeadConnTimeout: nbdclient.DefaultKeptDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
			log: []string{"nbd: /dev/nbd0 is connected, but preparing it failed: partition scan of /dev/nbd0: max_part=0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			sys.nbd.dial = nbdDialer(t, tt.info, tt.down...)
			sys.nbd.connect = tt.attach
			s, buf, err := newTestState(tt.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			planRW := s.Plan.Root.RW
			if err := (NBD{Budget: 10 * time.Second}).Run(context.Background(), s); err != nil {
				t.Fatalf("%v\n%s", err, buf)
			}
			if diff := cmp.Diff([]nbdclient.Device{tt.want}, sys.nbd.devs); diff != "" {
				t.Errorf("device (-want +got):\n%s", diff)
			}
			if sys.nbd.socks[0] != tt.socks || s.NBD.Sockets != tt.socks {
				t.Errorf("%d socket(s) attached, %d recorded; want %d", sys.nbd.socks[0], s.NBD.Sockets, tt.socks)
			}
			if s.NBD.Server != tt.server || s.NBD.Device != "/dev/nbd"+string(rune('0'+tt.want.Index)) {
				t.Errorf("attachment %+v", s.NBD)
			}
			if s.Root().RW != tt.rw {
				t.Errorf("root rw = %v, want %v", s.Root().RW, tt.rw)
			}
			if s.Plan.Root.RW != planRW {
				t.Errorf("the hook changed the Plan's root mode to %v", s.Plan.Root.RW)
			}
			for _, l := range tt.log {
				if !strings.Contains(buf.String(), l) {
					t.Errorf("log does not say %q:\n%s", l, buf)
				}
			}
		})
	}
}

func TestNBDHookFailure(t *testing.T) {
	sys := newFakes()
	sys.nbd.dial = nbdDialer(t, nbd.ExportInfo{}, "10.0.0.1:10809")
	s, _, err := newTestState("nbd_server=10.0.0.1 nbd_export=root root=/dev/nbd0", sys)
	if err != nil {
		t.Fatal(err)
	}
	err = NBD{Budget: 300 * time.Millisecond}.Run(context.Background(), s)
	var f *Failure
	if !errors.As(err, &f) || f.Hook != "nbd" || f.Param != "nbd_server=10.0.0.1" || f.Tried != "connect" ||
		!strings.Contains(err.Error(), `NBD server 10.0.0.1:10809, export "root": connection refused`) {
		t.Errorf("err = %v", err)
	}
}

// TestNBDHookFailures maps each step of the attach to the console's words.
func TestNBDHookFailures(t *testing.T) {
	rw := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags, MinBlock: 512, MaxBlock: 1024}
	tests := []struct {
		name     string
		cmdline  string
		noFamily bool
		connect  error
		modules  error
		tried    string
		param    string
	}{
		{name: "block size", cmdline: "root=nbd:10.0.0.1:10809:::bs=4096",
			tried: "choose a block size", param: "root=nbd:10.0.0.1:10809:::bs=4096"},
		{name: "nbd module", cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0", modules: errors.New("ENOEXEC"),
			tried: "load the nbd module"},
		{name: "kernel refuses", cmdline: "nbd_server=10.0.0.1 root=/dev/nbd2", connect: errors.New("busy"),
			tried: "attach 10.0.0.1:10809 (1048576 bytes) to /dev/nbd2", param: "nbd_server=10.0.0.1"},
		{name: "ioctl keeper does not start", cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0", noFamily: true,
			tried: "attach 10.0.0.1:10809 (1048576 bytes) to /dev/nbd0", param: "nbd_server=10.0.0.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			sys.nbd.dial = nbdDialer(t, rw)
			sys.nbd.noFamily = tt.noFamily
			if tt.connect != nil {
				sys.nbd.connect = func(nbdclient.Device, []*os.File) (int, error) { return -1, tt.connect }
			}
			s, buf, err := newTestState(tt.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			s.Modules = &fakeModules{err: tt.modules}
			err = NBD{Budget: 10 * time.Second}.Run(context.Background(), s)
			var f *Failure
			if !errors.As(err, &f) || f.Hook != "nbd" || f.Tried != tt.tried || f.Param != tt.param {
				t.Fatalf("err = %#v; want tried %q, parameter %q\n%s", f, tt.tried, tt.param, buf)
			}
			if tt.noFamily && !strings.Contains(buf.String(), "nbd: "+nbdclient.ErrNoFamily.Error()+"; using the ioctl interface") {
				t.Errorf("the fallback is not logged:\n%s", buf)
			}
		})
	}
}

// fakeModules is a ModuleLoader whose hooks' modules are loaded (or fail with err).
type fakeModules struct {
	err    error
	waited []string
}

func (m *fakeModules) Start(context.Context) {}

func (m *fakeModules) Wait(ctx context.Context, hook string) error {
	m.waited = append(m.waited, hook)
	return m.err
}

func TestNBDHookKeeper(t *testing.T) {
	rw := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags}
	sys := newFakes()
	sys.nbd.dial = nbdDialer(t, rw, "10.0.0.1:10809")
	s, buf, err := newTestState("nbd_server=10.0.0.1:10809,10.0.0.2:10900 nbd_export=root root=/dev/nbd1 nbdroot.deadconn=90", sys)
	if err != nil {
		t.Fatal(err)
	}
	mods := &fakeModules{}
	s.Modules = mods
	if err := (NBD{Budget: 10 * time.Second}).Run(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	// The root came from the second server: the keeper starts there, then goes on in the
	// plan's order, and reads the device once at its start.
	want := []nbdclient.KeeperSpec{{Probe: "/dev/nbd1", Target: nbdclient.KeeperTarget{Index: 1,
		Servers: []string{"10.0.0.2:10900", "10.0.0.1:10809"}, Export: "root", Size: 1 << 20, Flags: rw.Flags,
		BlockSize: 512, Connections: 1, DeadConnTimeout: 90 * time.Second, BackendID: "10.0.0.2:10900/root"}}}
	if diff := cmp.Diff(want, sys.nbd.keepers); diff != "" {
		t.Errorf("keeper (-want +got):\n%s", diff)
	}
	if !strings.Contains(buf.String(), "keeper: WARNING: no keeper process in unit tests: /dev/nbd1 will not survive a server restart") {
		t.Errorf("the keeper's failure is not logged:\n%s", buf)
	}
	if s.NBD == nil || s.NBD.Device != "/dev/nbd1" || s.keeper != nil {
		t.Errorf("attachment %+v, keeper %v", s.NBD, s.keeper)
	}
	if diff := cmp.Diff([]string{"nbd"}, mods.waited); diff != "" {
		t.Errorf("modules waited for (-want +got):\n%s", diff)
	}
}

// TestNBDHookDHCP completes the Plan with the DHCP answer into the State, not the Plan.
func TestNBDHookDHCP(t *testing.T) {
	rw := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags}
	tests := []struct {
		name     string
		net      NetConfig
		want     string
		from     bootparam.ServerSource
		root     string
		wantFail string
	}{
		{name: "root-path", net: NetConfig{RootPath: "nbd:10.0.0.5:10900/data:ext4:rw", ServerID: net.ParseIP("10.0.0.9")},
			want: "10.0.0.5:10900", from: bootparam.ServerFromRootPath},
		{name: "next-server", net: NetConfig{NextServer: net.ParseIP("10.0.0.7"), ServerID: net.ParseIP("10.0.0.9")},
			want: "10.0.0.7:10809", from: bootparam.ServerFromDHCPServer},
		{name: "the boot server does not answer", net: NetConfig{ServerID: net.ParseIP("10.0.0.9")},
			wantFail: "no NBD server on the command line (nbd_server=) and no root-path (option 17) in the DHCP answer: tried the boot server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			sys.nbd.dial = nbdDialer(t, rw, "10.0.0.9:10809")
			s, _, err := newTestState("ip=dhcp root=/dev/nbd0", sys)
			if err != nil {
				t.Fatal(err)
			}
			plan := *s.Plan
			s.Net = &tt.net
			err = NBD{Budget: 100 * time.Millisecond}.Run(context.Background(), s)
			if diff := cmp.Diff(plan, *s.Plan); diff != "" {
				t.Errorf("the hook changed the Plan (-before +after):\n%s", diff)
			}
			if tt.wantFail != "" {
				var f *Failure
				if !errors.As(err, &f) || f.Tried != tt.wantFail || f.Param != "DHCP server address 10.0.0.9" {
					t.Fatalf("err = %v; want a failure that tried the boot server", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.NBD.Server != tt.want || s.Target.Server != tt.from {
				t.Errorf("attached from %s (%v), want %s (%v)", s.NBD.Server, s.Target.Server, tt.want, tt.from)
			}
		})
	}
	// dracut's root-path says rw: the root is mounted rw, though the Plan says ro.
	sys := newFakes()
	sys.nbd.dial = nbdDialer(t, rw)
	s, _, _ := newTestState("ip=dhcp root=/dev/nbd0", sys)
	s.Net = &NetConfig{RootPath: "nbd:10.0.0.5:10900/data:ext4:rw"}
	if err := (NBD{Budget: time.Second}).Run(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if r := s.Root(); !r.RW || r.FSType != "ext4" || s.Plan.Root.RW {
		t.Errorf("root %+v (plan %+v): want the root-path's rw and ext4, the Plan untouched", r, s.Plan.Root)
	}
}

// TestNBDHookIdentity checks who the init says this machine is: nbdroot.id=, else BOOTIF's
// MAC, else the MAC of the NIC the net stage configured, else nobody (said on the console).
func TestNBDHookIdentity(t *testing.T) {
	rw := nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags | nbd.TransSendFlush}
	tests := []struct {
		name    string
		cmdline string
		net     *NetConfig
		want    string
		log     string
	}{
		{"nbdroot.id", "nbd_server=10.0.0.1 root=/dev/nbd0 BOOTIF=01-52-54-00-12-34-56 nbdroot.id=lab7-pc03",
			&NetConfig{Interface: "eth0", MAC: "52:54:00:aa:bb:cc"}, "lab7-pc03", ""},
		{"BOOTIF", "nbd_server=10.0.0.1 root=/dev/nbd0 BOOTIF=01-52-54-00-12-34-56",
			&NetConfig{Interface: "eth1", MAC: "52:54:00:aa:bb:cc"}, "52:54:00:12:34:56", ""},
		{"the net stage's NIC", "nbd_server=10.0.0.1 root=/dev/nbd0",
			&NetConfig{Interface: "eth0", MAC: "52:54:00:AA:BB:CC"}, "52:54:00:aa:bb:cc", ""},
		{"no NIC", "nbd_server=10.0.0.1 root=/dev/nbd0", nil, "",
			"nbd: no client identity (no NIC configured by the net stage; set nbdroot.id=): the server keys this client by its address"},
		{"a NIC without a MAC", "nbd_server=10.0.0.1 root=/dev/nbd0", &NetConfig{Interface: "tun0", MAC: "00:00:00:00:00:00"}, "",
			"nbd: no client identity from tun0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := newFakes()
			sys.nbd.dial = nbdDialer(t, rw)
			s, buf, err := newTestState(tt.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			s.Net = tt.net
			if err := (NBD{Budget: 10 * time.Second}).Run(context.Background(), s); err != nil {
				t.Fatalf("%v\n%s", err, buf)
			}
			if got := sys.nbd.requests[0].Identity; got != tt.want {
				t.Errorf("identity %q, want %q", got, tt.want)
			}
			if got := s.NBD.Target.Identity; got != tt.want {
				t.Errorf("the keeper's identity %q, want %q", got, tt.want)
			}
			if !strings.Contains(buf.String(), tt.log) {
				t.Errorf("log does not say %q:\n%s", tt.log, buf)
			}
		})
	}
}
