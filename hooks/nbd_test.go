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
	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// nbdDialer returns a fake DialNBD handing out real loopback connections (the hook calls
// File on them) that describe info; addresses in down refuse.
func nbdDialer(t *testing.T, info nbd.ExportInfo, down ...string) func(ctx context.Context, addr, export string) (*nbdclient.Conn, error) {
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
	return func(ctx context.Context, addr, export string) (*nbdclient.Conn, error) {
		for _, d := range down {
			if d == addr {
				return nil, &nbdclient.DialError{Server: addr, Export: export, Err: errors.New("connection refused")}
			}
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", ln.Addr().String())
		if err != nil {
			return nil, err
		}
		i := info
		i.Name = export
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
				DeadConnTimeout: DefaultDeadConnTimeout, BackendID: "10.0.0.1:10809/root", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
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
				DeadConnTimeout: DefaultDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
			log: []string{"10.0.0.1:10809 does not allow multi-conn"},
		},
		{
			name:    "read-only export, rw asked",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 rw",
			info:    ro,
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: ro.Flags,
				DeadConnTimeout: DefaultDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
			log: []string{"10.0.0.1:10809 is read-only (NBD_FLAG_READ_ONLY): mounting the root read-only despite rw"},
		},
		{
			name:    "rw",
			cmdline: "nbd_server=10.0.0.1 root=/dev/nbd0 rw",
			info:    rw,
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: rw.Flags,
				DeadConnTimeout: DefaultDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809", rw: true,
		},
		{
			name:    "failover",
			cmdline: "nbd_server=10.0.0.1:10809,10.0.0.2:10809 root=/dev/nbd0",
			info:    rw,
			down:    []string{"10.0.0.1:10809"},
			want: nbdclient.Device{Size: 64 << 20, BlockSize: 512, ServerFlags: rw.Flags,
				DeadConnTimeout: DefaultDeadConnTimeout, BackendID: "10.0.0.2:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
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
				DeadConnTimeout: DefaultDeadConnTimeout, BackendID: "10.0.0.1:10809", MaxRequest: 1 << 20, ReadAheadKB: DefaultReadAheadKB},
			socks: 1, server: "10.0.0.1:10809",
			log: []string{"nbd: /dev/nbd0 is connected, but preparing it failed: partition scan of /dev/nbd0: max_part=0"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got nbdclient.Device
			var socks int
			sys := &fakeSys{dial: nbdDialer(t, tt.info, tt.down...)}
			sys.attach = func(dev nbdclient.Device, s []*os.File) (int, error) {
				got, socks = dev, len(s)
				if tt.attach != nil {
					return tt.attach(dev, s)
				}
				return dev.Index, nil
			}
			s, buf, err := newTestState(tt.cmdline, sys)
			if err != nil {
				t.Fatal(err)
			}
			if err := (NBD{Budget: 10 * time.Second}).Run(context.Background(), s); err != nil {
				t.Fatalf("%v\n%s", err, buf)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("device (-want +got):\n%s", diff)
			}
			if socks != tt.socks || s.NBD.Sockets != tt.socks {
				t.Errorf("%d socket(s) attached, %d recorded; want %d", socks, s.NBD.Sockets, tt.socks)
			}
			if s.NBD.Server != tt.server || s.NBD.Device != "/dev/nbd"+string(rune('0'+tt.want.Index)) {
				t.Errorf("attachment %+v", s.NBD)
			}
			if s.Plan.Root.RW != tt.rw {
				t.Errorf("root rw = %v, want %v", s.Plan.Root.RW, tt.rw)
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
	sys := &fakeSys{dial: nbdDialer(t, nbd.ExportInfo{}, "10.0.0.1:10809")}
	s, _, err := newTestState("nbd_server=10.0.0.1 nbd_export=root root=/dev/nbd0", sys)
	if err != nil {
		t.Fatal(err)
	}
	err = NBD{Budget: 300 * time.Millisecond}.Run(context.Background(), s)
	var f *Failure
	if !errors.As(err, &f) || f.Hook != "nbd" || f.Param != "nbd_server=10.0.0.1" ||
		!strings.Contains(err.Error(), `NBD server 10.0.0.1:10809, export "root": connection refused`) {
		t.Errorf("err = %v", err)
	}
}

func TestNBDHookStartsKeeper(t *testing.T) {
	rw := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags}
	sys := &fakeSys{dial: nbdDialer(t, rw)}
	s, buf, err := newTestState("nbd_server=10.0.0.1 root=/dev/nbd0", sys)
	if err != nil {
		t.Fatal(err)
	}
	var kept *NBDAttachment
	h := NBD{Budget: 10 * time.Second, Keeper: func(ctx context.Context, s *State) error {
		kept = s.NBD
		return errors.New("keeper: could not start")
	}}
	if err := h.Run(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if kept == nil || kept.Device != "/dev/nbd0" {
		t.Errorf("keeper started for %+v, want the attached /dev/nbd0", kept)
	}
	if !strings.Contains(buf.String(), "nbd: keeper: could not start") {
		t.Errorf("the keeper's failure is not logged:\n%s", buf)
	}
}
