package nbdclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

// fakeSys builds /sys/block/nbdN trees: size in sectors and optional other attributes.
func fakeSys(t *testing.T, devs map[string]map[string]string) string {
	t.Helper()
	sys := t.TempDir()
	for dev, attrs := range devs {
		dir := filepath.Join(sys, "block", dev)
		if err := os.MkdirAll(filepath.Join(dir, "queue"), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, v := range attrs {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return sys
}

func TestFreeDevice(t *testing.T) {
	tests := []struct {
		name    string
		devs    map[string]map[string]string
		want    int
		wantErr string
	}{
		{"first", map[string]map[string]string{"nbd0": {"size": "0"}, "nbd1": {"size": "0"}}, 0, ""},
		{"skips connected", map[string]map[string]string{
			"nbd0": {"size": "131072", "pid": "1"}, "nbd1": {"size": "0", "pid": "55"}, "nbd2": {"size": "0"}, "nbd10": {"size": "0"},
			"sda": {"size": "0"}}, 2, ""},
		{"numeric order", map[string]map[string]string{"nbd10": {"size": "0"}, "nbd9": {"size": "0"}}, 9, ""},
		{"all busy", map[string]map[string]string{"nbd0": {"size": "8", "pid": "1"}}, -1, "all 1 NBD devices are connected"},
		{"no driver", map[string]map[string]string{"sda": {"size": "8"}}, -1, "is the nbd module loaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FreeDevice(fakeSys(t, tt.devs))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FreeDevice = %d, %v; want error %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("FreeDevice = %d, %v; want %d", got, err, tt.want)
			}
		})
	}
}

func TestDeviceNumber(t *testing.T) {
	for in, want := range map[string]int{"/dev/nbd0": 0, "nbd12": 12, "/dev/nbd0p1": -1, "/dev/sda": -1, "/dev/nbd": -1, "/dev/nbd-1": -1, "/dev/nbd01": -1} {
		got, err := DeviceNumber(in)
		if got != want || (want < 0) != (err != nil) {
			t.Errorf("DeviceNumber(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestDeviceInfos(t *testing.T) {
	sys := fakeSys(t, map[string]map[string]string{
		"nbd0": {"size": "131072", "pid": "1", "ro": "0", "backend": "10.0.2.100:10809/root"},
		"nbd1": {"size": "2048", "pid": "300", "ro": "1"},
		"nbd2": {"size": "0"},
	})
	os.WriteFile(filepath.Join(sys, "block/nbd0/queue/logical_block_size"), []byte("512\n"), 0o644)
	keeper := func(i int) (*KeeperState, error) {
		if i == 0 {
			return &KeeperState{Device: "/dev/nbd0", Pid: 125, State: "watching"}, nil
		}
		return nil, ErrNoKeeper
	}
	got := DeviceInfos(sys, []DeviceStatus{{0, true}, {1, true}, {2, false}}, keeper)
	want := []DeviceInfo{
		{Device: "/dev/nbd0", Index: 0, Connected: true, Size: 64 << 20, BlockSize: 512, Backend: "10.0.2.100:10809/root", Pid: 1,
			Keeper: &KeeperState{Device: "/dev/nbd0", Pid: 125, State: "watching"}},
		{Device: "/dev/nbd1", Index: 1, Connected: true, Size: 1 << 20, ReadOnly: true, Pid: 300},
		{Device: "/dev/nbd2", Index: 2},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestKeeperErrorWording(t *testing.T) {
	err := error(&KeeperError{Device: "/dev/nbd3", Err: ErrKeeperRunning})
	if !errors.Is(err, ErrKeeperRunning) || !strings.Contains(err.Error(), "nbdroot detach /dev/nbd3") {
		t.Errorf("%v", err)
	}
}

// fakeConnector is the netlink family of a fake kernel: it records what it is handed.
type fakeConnector struct {
	mu    sync.Mutex
	devs  []Device
	socks []int
	err   error // returned by Connect
	index int   // the index the kernel picks for Index -1
}

func (c *fakeConnector) Connect(dev Device, socks []*os.File) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, f := range socks {
		// The kernel takes a socket of its own; a closed descriptor would fail here.
		if _, err := f.Stat(); err != nil {
			return -1, err
		}
	}
	c.devs = append(c.devs, dev)
	c.socks = append(c.socks, len(socks))
	idx := dev.Index
	if idx < 0 {
		idx = c.index
	}
	if c.err != nil {
		var se *SetupError
		if errors.As(c.err, &se) {
			return idx, c.err
		}
		return -1, c.err
	}
	return idx, nil
}

func (c *fakeConnector) Close() error { return nil }

// launchRecorder is a Request.Launch that records the keeper specs and fails: a real
// keeper is a process of its own (tested in QEMU).
type launchRecorder struct {
	specs  []KeeperSpec
	starts []KeeperStart
}

func (l *launchRecorder) launch(spec KeeperSpec, o KeeperStart) (*KeeperProcess, error) {
	l.specs = append(l.specs, spec)
	l.starts = append(l.starts, o)
	return nil, errors.New("no keeper in unit tests")
}

// attachRig is an Attach over fake servers, a fake kernel and a keeper recorder.
type attachRig struct {
	servers *fakeServers
	kernel  *fakeConnector
	family  error // returned by Request.Kernel instead of the connector
	keepers launchRecorder
	log     []string
}

func newAttachRig(t *testing.T) *attachRig {
	return &attachRig{servers: newFakeServers(t), kernel: &fakeConnector{index: 7}}
}

func (r *attachRig) request(req Request) Request {
	req.Dial = r.servers.dial
	req.Kernel = func() (Connector, error) {
		if r.family != nil {
			return nil, r.family
		}
		return r.kernel, nil
	}
	req.Launch = r.keepers.launch
	req.Log = func(s string) { r.log = append(r.log, s) }
	req.MinBackoff, req.MaxBackoff = time.Millisecond, 5*time.Millisecond
	return req
}

func (r *attachRig) logged(t *testing.T, want string) {
	t.Helper()
	if !strings.Contains(strings.Join(r.log, "\n"), want) {
		t.Errorf("log does not say %q:\n%s", want, strings.Join(r.log, "\n"))
	}
}

func TestAttachNetlink(t *testing.T) {
	info := nbd.ExportInfo{Size: 64 << 20, Flags: nbd.TransHasFlags | nbd.TransSendFlush | nbd.TransCanMultiConn,
		MinBlock: 512, PrefBlock: 4096, MaxBlock: 1 << 20}
	tests := []struct {
		name    string
		req     Request
		up      map[string]nbd.ExportInfo
		wantDev Device
		want    Attached
		socks   int
		log     string
	}{
		{
			name: "one server, first free device",
			req:  Request{Servers: []string{"10.0.0.1:10809"}, Export: "root", Device: -1},
			up:   map[string]nbd.ExportInfo{"10.0.0.1:10809": info},
			wantDev: Device{Index: -1, Size: 64 << 20, BlockSize: 512, ServerFlags: info.Flags,
				BackendID: "10.0.0.1:10809/root", MaxRequest: 1 << 20},
			want: Attached{Device: "/dev/nbd7", Index: 7, Server: "10.0.0.1:10809", Export: "root", Info: info,
				BlockSize: 512, Sockets: 1, Interface: InterfaceNetlink,
				Target: KeeperTarget{Index: 7, Servers: []string{"10.0.0.1:10809"}, Export: "root", Size: 64 << 20,
					Flags: info.Flags, BlockSize: 512, Connections: 1, BackendID: "10.0.0.1:10809/root"}},
			socks: 1,
		},
		{
			name: "the init's root: failover, knobs, multi-conn",
			req: Request{Servers: []string{"10.0.0.1:10809", "10.0.0.2:10900"}, Device: 0, Connections: 2,
				Budget: 10 * time.Second, Timeout: 20 * time.Second, DeadConnTimeout: 300 * time.Second, BlockSize: 4096,
				ReadAheadKB: 1024, Identity: "52:54:00:12:34:56"},
			up: map[string]nbd.ExportInfo{"10.0.0.2:10900": info},
			wantDev: Device{Index: 0, Size: 64 << 20, BlockSize: 4096, ServerFlags: info.Flags, Timeout: 20 * time.Second,
				DeadConnTimeout: 300 * time.Second, BackendID: "10.0.0.2:10900", MaxRequest: 1 << 20, ReadAheadKB: 1024},
			want: Attached{Device: "/dev/nbd0", Index: 0, Server: "10.0.0.2:10900", Info: info,
				BlockSize: 4096, Sockets: 2, Interface: InterfaceNetlink,
				Target: KeeperTarget{Index: 0, Servers: []string{"10.0.0.2:10900", "10.0.0.1:10809"}, Size: 64 << 20,
					Flags: info.Flags, BlockSize: 4096, Connections: 2, DeadConnTimeout: 300 * time.Second,
					BackendID: "10.0.0.2:10900", Identity: "52:54:00:12:34:56"}},
			socks: 2,
			log:   "attempt 1: NBD server 10.0.0.1:10809, the default export: connection refused",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newAttachRig(t)
			for addr, i := range tt.up {
				r.servers.set(addr, &i)
			}
			a, err := Attach(context.Background(), r.request(tt.req))
			if err != nil {
				t.Fatalf("Attach: %v\nlog: %q", err, r.log)
			}
			if diff := cmp.Diff([]Device{tt.wantDev}, r.kernel.devs); diff != "" {
				t.Errorf("device handed to the kernel (-want +got):\n%s", diff)
			}
			if r.kernel.socks[0] != tt.socks {
				t.Errorf("%d socket(s) handed to the kernel, want %d", r.kernel.socks[0], tt.socks)
			}
			if diff := cmp.Diff(&tt.want, a, cmp.AllowUnexported(KeeperProcess{})); diff != "" {
				t.Errorf("attached (-want +got):\n%s", diff)
			}
			if tt.log != "" {
				r.logged(t, tt.log)
			}
			if len(r.keepers.specs) != 0 {
				t.Errorf("a keeper was launched without Keep: %+v", r.keepers.specs)
			}
		})
	}
}

func TestAttachStartsKeeper(t *testing.T) {
	r := newAttachRig(t)
	info := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags}
	r.servers.set("127.0.0.1:10809", &info)
	start := KeeperStart{Args: []string{"attach", "--run-keeper"}}
	// localhost:10809 does not answer, but the keeper gets it resolved (from /etc/hosts here).
	a, err := Attach(context.Background(), r.request(Request{Servers: []string{"127.0.0.1:10809", "localhost:10900"},
		Device: 2, Keep: true, Keeper: start, Identity: "pc-7"}))
	var ke *KeeperError
	if !errors.As(err, &ke) || ke.Device != "/dev/nbd2" || a == nil || a.Device != "/dev/nbd2" {
		t.Fatalf("Attach = %+v, %v; want /dev/nbd2 with a *KeeperError", a, err)
	}
	if len(r.keepers.specs) != 1 {
		t.Fatalf("%d keepers launched, want 1", len(r.keepers.specs))
	}
	got := r.keepers.specs[0]
	local := got.Target.Servers[1]
	if local != "127.0.0.1:10900" && local != "[::1]:10900" {
		t.Errorf("localhost resolved to %q (log %q)", local, r.log)
	}
	want := KeeperSpec{Probe: "/dev/nbd2", Target: KeeperTarget{Index: 2, Servers: []string{"127.0.0.1:10809", local},
		Size: 1 << 20, Flags: info.Flags, BlockSize: 512, Connections: 1, DeadConnTimeout: DefaultKeptDeadConnTimeout,
		BackendID: "127.0.0.1:10809", Identity: "pc-7"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keeper spec (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(start, r.keepers.starts[0]); diff != "" {
		t.Errorf("keeper start (-want +got):\n%s", diff)
	}
	// The kept device waits for a reconnect for the default dead-connection timeout.
	if d := r.kernel.devs[0].DeadConnTimeout; d != DefaultKeptDeadConnTimeout {
		t.Errorf("dead-connection timeout %s, want %s", d, DefaultKeptDeadConnTimeout)
	}
}

func TestAttachIoctlFallback(t *testing.T) {
	r := newAttachRig(t)
	r.family = ErrNoFamily
	info := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags}
	r.servers.set("10.0.0.1:10809", &info)
	sys := fakeSys(t, map[string]map[string]string{"nbd0": {"size": "8", "pid": "1"}, "nbd1": {"size": "0"}})
	req := r.request(Request{Servers: []string{"10.0.0.1:10809"}, Export: "data", Device: -1, SysDir: sys})
	_, err := Attach(context.Background(), req)
	var ae *AttachError
	if !errors.As(err, &ae) || ae.Step != StepKernel || !strings.Contains(err.Error(), "no keeper in unit tests") {
		t.Fatalf("Attach = %v; want the keeper's failure at the kernel step", err)
	}
	r.logged(t, `kernel has no "nbd" generic netlink family (nbd module not loaded, or kernel older than 4.12); using the ioctl interface`)
	// The keeper attaches the first free device itself, with no dead-connection timeout.
	spec := r.keepers.specs[0]
	if spec.Legacy == nil || spec.Legacy.Index != 1 || spec.Legacy.DeadConnTimeout != 0 || spec.Target.Index != 1 ||
		spec.Target.DeadConnTimeout != 0 || len(r.keepers.starts[0].Socks) != 1 {
		t.Errorf("ioctl keeper spec %+v, start %+v", spec, r.keepers.starts[0])
	}
}

func TestAttachFailures(t *testing.T) {
	info := nbd.ExportInfo{Size: 1 << 20, Flags: nbd.TransHasFlags, MinBlock: 512, MaxBlock: 1024}
	tests := []struct {
		name     string
		req      Request
		up       bool
		family   error
		kernel   error
		ready    error
		step     Step
		want     string
		kernelOK bool // the kernel saw the device
	}{
		{name: "refused, one round", req: Request{Servers: []string{"10.0.0.1:10809"}}, step: StepConnect,
			want: "NBD server 10.0.0.1:10809, the default export: connection refused"},
		{name: "refused until the budget is spent", req: Request{Servers: []string{"10.0.0.1:10809"}, Budget: 50 * time.Millisecond},
			step: StepConnect, want: "gave up after"},
		{name: "block size out of the server's range", req: Request{Servers: []string{"10.0.0.1:10809"}, BlockSize: 4096, Budget: time.Minute},
			up: true, step: StepBlockSize, want: "10.0.0.1:10809: block size 4096 exceeds the server's maximum 1024"},
		{name: "ready fails", req: Request{Servers: []string{"10.0.0.1:10809"}}, up: true, ready: errors.New("nbd module: ENOEXEC"),
			step: StepReady, want: "nbd module: ENOEXEC"},
		{name: "kernel refuses", req: Request{Servers: []string{"10.0.0.1:10809"}, Device: 3}, up: true,
			kernel: errors.New("NBD_CMD_CONNECT: /dev/nbd3 is already connected"), step: StepKernel, want: "already connected"},
		{name: "netlink asked, no family", req: Request{Servers: []string{"10.0.0.1:10809"}, Interface: InterfaceNetlink}, up: true,
			family: ErrNoFamily, step: StepKernel, want: "generic netlink family"},
		// Whatever the dial function does, a connection without TLS is refused when TLS is
		// required: never a silent clear-text attach.
		{name: "TLS required, plain connection", req: Request{Servers: []string{"10.0.0.1:10809"}, TLS: &TLSSettings{ServerName: "nbd.lab"}},
			up: true, step: StepConnect, want: "TLS: the server does not do TLS: the connection is not encrypted and TLS is required"},
		{name: "no server", req: Request{}, want: "no server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newAttachRig(t)
			if tt.up {
				r.servers.set("10.0.0.1:10809", &info)
			}
			r.family, r.kernel.err = tt.family, tt.kernel
			req := r.request(tt.req)
			if tt.ready != nil {
				req.Ready = func(context.Context) error { return tt.ready }
			}
			a, err := Attach(context.Background(), req)
			if a != nil || err == nil || !strings.Contains(err.Error(), tt.want) || (tt.step != "" && stepOf(err) != tt.step) {
				t.Fatalf("Attach = %+v, %v (step %q); want %q at step %q", a, err, stepOf(err), tt.want, tt.step)
			}
			if len(r.kernel.devs) != 0 && tt.kernel == nil {
				t.Errorf("the kernel got a device: %+v", r.kernel.devs)
			}
			if tt.step != "" && tt.step != StepConnect && r.servers.dialCount("10.0.0.1:10809") != 1 {
				t.Errorf("dialled %d times; a failure after the handshake is not retried", r.servers.dialCount("10.0.0.1:10809"))
			}
		})
	}
}

func TestAttachSetupWarning(t *testing.T) {
	r := newAttachRig(t)
	r.servers.set("10.0.0.1:10809", &rwInfo)
	r.kernel.err = &SetupError{Index: 0, Err: errors.New("partition scan of /dev/nbd0: max_part=0")}
	a, err := Attach(context.Background(), r.request(Request{Servers: []string{"10.0.0.1:10809"}}))
	if err != nil || len(a.Warnings) != 1 || !strings.Contains(a.Warnings[0], "max_part=0") {
		t.Fatalf("Attach = %+v, %v; want the setup failure as a warning", a, err)
	}
}

// TestAttachedJSON keeps the shape `nbdroot attach --json` prints.
func TestAttachedJSON(t *testing.T) {
	a := &Attached{Device: "/dev/nbd1", Index: 1, Server: "10.0.2.100:10809", Export: "data",
		Info: nbd.ExportInfo{Size: 1 << 20}, BlockSize: 512, Sockets: 1, Interface: InterfaceNetlink, KeeperPid: 42}
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"device":"/dev/nbd1","index":1,"server":"10.0.2.100:10809","export":"data","size":1048576,"flags":[],"block_size":512,"connections":1,"interface":"netlink","keeper_pid":42}`
	if string(b) != want {
		t.Errorf("JSON\n got %s\nwant %s", b, want)
	}
}

func TestFailover(t *testing.T) {
	errDown := errors.New("down")
	errFinal := errors.New("final")
	tests := []struct {
		name      string
		rounds    int
		start     int
		results   map[string][]error // per server, one per try; nil = success
		wantTried []string
		wantIdx   int
		wantRound int
		wantErr   error
	}{
		{"second server", 0, 0, map[string][]error{"a": {errDown}, "b": {nil}}, []string{"a", "b"}, 1, 1, nil},
		{"starts at the server in use", 0, 1, map[string][]error{"b": {nil}}, []string{"b"}, 1, 1, nil},
		{"next round", 0, 0, map[string][]error{"a": {errDown, nil}, "b": {errDown}}, []string{"a", "b", "a"}, 0, 2, nil},
		{"one round", 1, 0, map[string][]error{"a": {errDown}, "b": {errDown}}, []string{"a", "b"}, -1, 1, errDown},
		{"final error", 0, 0, map[string][]error{"a": {errFinal}}, []string{"a"}, -1, 1, errFinal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tried, failed []string
			idx, round, err := failover(context.Background(), retry{minBackoff: time.Millisecond, maxBackoff: time.Millisecond,
				rounds: tt.rounds, final: func(err error) bool { return err == errFinal },
				failed: func(round int, addr string, err error) { failed = append(failed, addr) },
			}, []string{"a", "b"}, tt.start, func(addr string) error {
				tried = append(tried, addr)
				res := tt.results[addr]
				if len(res) == 0 {
					return errDown
				}
				tt.results[addr] = res[1:]
				return res[0]
			})
			if idx != tt.wantIdx || round != tt.wantRound || err != tt.wantErr {
				t.Errorf("failover = %d, %d, %v; want %d, %d, %v", idx, round, err, tt.wantIdx, tt.wantRound, tt.wantErr)
			}
			if diff := cmp.Diff(tt.wantTried, tried); diff != "" {
				t.Errorf("tried (-want +got):\n%s", diff)
			}
			if len(failed) != len(tried)-btoi(err == nil) {
				t.Errorf("%d failures reported for %d tries", len(failed), len(tried))
			}
		})
	}
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, _, err := failover(ctx, retry{}, []string{"a"}, 0, func(string) error { return errDown })
		if err != errDown {
			t.Errorf("failover = %v, want the last error", err)
		}
	})
	t.Run("an attempt cut short by the context keeps the reason before it", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errCert := &TLSError{Reason: TLSWrongName, Err: errors.New("not for nbd.lab")}
		tries := 0
		_, _, err := failover(ctx, retry{minBackoff: time.Millisecond, maxBackoff: time.Millisecond}, []string{"a"}, 0, func(string) error {
			if tries++; tries == 1 {
				return errCert
			}
			cancel()
			return fmt.Errorf("handshake: %w", context.Canceled)
		})
		if err != errCert {
			t.Errorf("failover = %v, want %v", err, errCert)
		}
	})
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
