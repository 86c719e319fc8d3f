package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/keymap"
	"github.com/nbdroot/nbdroot/luks"
	"github.com/nbdroot/nbdroot/lvm"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// The in-memory fakes of System, one per concern. Tests set the fields they need; unset
// behaviour succeeds. netFake, the Network, is in net_test.go.

// fakes is one fake per concern of System.
type fakes struct {
	files   *fakeFiles
	net     *netFake
	nbd     *fakeNBD
	blocks  *fakeBlocks
	console *fakeConsole
	mapper  *fakeMapper
	machine *fakeMachine
}

func newFakes() *fakes {
	files := &fakeFiles{}
	n := newNetFake()
	n.files = files
	return &fakes{files: files, net: n, nbd: &fakeNBD{}, blocks: &fakeBlocks{}, console: &fakeConsole{},
		mapper: &fakeMapper{}, machine: &fakeMachine{}}
}

// system is the System the stages see.
func (f *fakes) system() System {
	return System{Files: f.files, Net: f.net, NBD: f.nbd, Blocks: f.blocks, Console: f.console,
		Mapper: f.mapper, Machine: f.machine}
}

var (
	_ Files        = (*fakeFiles)(nil)
	_ Network      = (*netFake)(nil)
	_ Attacher     = (*fakeNBD)(nil)
	_ BlockDevices = (*fakeBlocks)(nil)
	_ Console      = (*fakeConsole)(nil)
	_ Mapper       = (*fakeMapper)(nil)
	_ Machine      = (*fakeMachine)(nil)
)

// fakeFiles records mounts, directories and written files.
type fakeFiles struct {
	mu       sync.Mutex
	calls    []string
	files    map[string]string
	perms    map[string]os.FileMode
	mounts   []fakeMount
	mountErr func(source, target, fstype string) error
}

type fakeMount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

func (f *fakeFiles) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeFiles) Mount(source, target, fstype string, flags uintptr, data string) error {
	f.record("mount %s %s %s", source, target, fstype)
	if f.mountErr != nil {
		if err := f.mountErr(source, target, fstype); err != nil {
			return err
		}
	}
	f.mu.Lock()
	f.mounts = append(f.mounts, fakeMount{source, target, fstype, flags, data})
	f.mu.Unlock()
	return nil
}

func (f *fakeFiles) Unmount(target string) error { f.record("umount %s", target); return nil }

func (f *fakeFiles) RemoveAll(path string) error { f.record("rm -r %s", path); return nil }

func (f *fakeFiles) MkdirAll(path string, perm os.FileMode) error {
	f.record("mkdir %s", path)
	return nil
}

func (f *fakeFiles) WriteFile(path string, data []byte, perm os.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string]string{}
		f.perms = map[string]os.FileMode{}
	}
	f.files[path] = string(data)
	f.perms[path] = perm
	return nil
}

func (f *fakeFiles) callsWith(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.calls {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func (f *fakeFiles) file(path string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.files[path]
	return c, ok
}

func (f *fakeFiles) fileNames() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for p := range f.files {
		names = append(names, p)
	}
	sort.Strings(names)
	return names
}

// fakeNBD attaches through the real nbdclient.Attach over fakes of what is beneath it: dial
// hands out loopback connections (the kernel takes socket files of them), the kernel
// records what NBD_CMD_CONNECT got, and a keeper launch records its spec and fails (a keeper
// is a process of its own: the QEMU tests run it).
type fakeNBD struct {
	// dial negotiates one connection; nil refuses every server.
	dial nbdclient.DialFunc
	// connect is the kernel's NBD_CMD_CONNECT; nil accepts the device asked for.
	connect func(dev nbdclient.Device, socks []*os.File) (int, error)
	// noFamily makes the kernel lack the netlink family (the ioctl fallback).
	noFamily bool

	mu       sync.Mutex
	requests []nbdclient.Request
	devs     []nbdclient.Device
	socks    []int
	keepers  []nbdclient.KeeperSpec
	starts   []nbdclient.KeeperStart
}

func (f *fakeNBD) Attach(ctx context.Context, r nbdclient.Request) (*nbdclient.Attached, error) {
	f.mu.Lock()
	f.requests = append(f.requests, r)
	f.mu.Unlock()
	r.Dial = f.dial
	if r.Dial == nil {
		r.Dial = func(ctx context.Context, addr string, o nbdclient.DialOptions) (*nbdclient.Conn, error) {
			return nil, &nbdclient.DialError{Server: addr, Export: o.Export, Err: errors.New("connection refused")}
		}
	}
	r.Kernel = func() (nbdclient.Connector, error) {
		if f.noFamily {
			return nil, nbdclient.ErrNoFamily
		}
		return fakeConnector{f}, nil
	}
	r.Launch = func(spec nbdclient.KeeperSpec, start nbdclient.KeeperStart) (*nbdclient.KeeperProcess, error) {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.keepers = append(f.keepers, spec)
		f.starts = append(f.starts, start)
		return nil, errors.New("no keeper process in unit tests")
	}
	r.MinBackoff, r.MaxBackoff = time.Millisecond, 10*time.Millisecond
	return nbdclient.Attach(ctx, r)
}

// fakeConnector is fakeNBD's kernel.
type fakeConnector struct{ f *fakeNBD }

func (c fakeConnector) Connect(dev nbdclient.Device, socks []*os.File) (int, error) {
	c.f.mu.Lock()
	c.f.devs = append(c.f.devs, dev)
	c.f.socks = append(c.f.socks, len(socks))
	c.f.mu.Unlock()
	if c.f.connect != nil {
		return c.f.connect(dev, socks)
	}
	return dev.Index, nil
}

func (fakeConnector) Close() error { return nil }

// fakeBlocks is the block devices: all ready unless ready says otherwise; devices maps a
// device path to the image file OpenDevice opens.
type fakeBlocks struct {
	ready   func(path string) (bool, error)
	find    func(spec string) (string, error)
	devices map[string]string
}

func (f *fakeBlocks) BlockDeviceReady(path string) (bool, error) {
	if f.ready == nil {
		return true, nil
	}
	return f.ready(path)
}

func (f *fakeBlocks) FindBlockDevice(spec string) (string, error) {
	if f.find == nil {
		return "", errors.New("no devices in this fake")
	}
	return f.find(spec)
}

func (f *fakeBlocks) Partitions(dev string) ([]string, error) {
	var out []string
	for d := range f.devices {
		if strings.HasPrefix(d, dev+"p") {
			out = append(out, d)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (f *fakeBlocks) OpenDevice(path string) (*os.File, error) {
	if img, ok := f.devices[path]; ok {
		return os.Open(img)
	}
	return nil, &os.PathError{Op: "open", Path: path, Err: os.ErrNotExist}
}

// fakeConsole answers passphrase prompts from passes, in order, and records the prompts.
type fakeConsole struct {
	mu        sync.Mutex
	passes    []string
	prompts   []string
	keymaps   []string
	keymapErr error
}

func (f *fakeConsole) AskPassphrase(ctx context.Context, prompt string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.prompts = append(f.prompts, prompt)
	if len(f.passes) == 0 {
		return nil, errors.New("console closed")
	}
	p := f.passes[0]
	f.passes = f.passes[1:]
	return []byte(p), nil
}

// LoadKeymap records the keymap and applies it to keys (a fake VT) when set.
func (f *fakeConsole) LoadKeymap(km *keymap.Keymap) (keymap.Applied, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keymaps = append(f.keymaps, km.Name)
	if f.keymapErr != nil {
		return keymap.Applied{}, f.keymapErr
	}
	return keymap.Applied{Keys: len(km.Entries)}, nil
}

// fakeMapper records the dm-crypt tables it is given (key redacted).
type fakeMapper struct {
	mu       sync.Mutex
	activate func(name string, table *luks.Table) (string, error)
	tables   []string
	lvs      []string
}

func (f *fakeMapper) ActivateCrypt(name string, table *luks.Table) (string, error) {
	f.mu.Lock()
	f.tables = append(f.tables, table.String())
	f.mu.Unlock()
	if f.activate != nil {
		return f.activate(name, table)
	}
	return "/dev/mapper/" + name, nil
}

// ActivateLV records the volume's table lines as "VG/LV: START LEN TYPE PARAMS" (ro when
// read-only).
func (f *fakeMapper) ActivateLV(vg *lvm.VG, lv string, readOnly bool) (string, error) {
	table, err := vg.Table(lv)
	if err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, t := range table {
		line := fmt.Sprintf("%s/%s: %d %d %s %s", vg.Name, lv, t.Start, t.Length, t.Type, t.Params)
		if readOnly {
			line += " ro"
		}
		f.lvs = append(f.lvs, line)
	}
	return "/dev/mapper/" + lvm.DMName(vg.Name, lv), nil
}

// fakeMachine has been up 1.5 s and has memKiB available (0 means 512 MiB).
type fakeMachine struct {
	memKiB uint32
}

func (f *fakeMachine) Uptime() time.Duration { return 1500 * time.Millisecond }

func (f *fakeMachine) MemAvailableKiB() uint32 {
	if f.memKiB != 0 {
		return f.memKiB
	}
	return 512 << 10
}

// newTestState returns a State over the fakes with a plan parsed from cmdline, and the
// buffer the logger writes to.
func newTestState(cmdline string, f *fakes) (*State, *bytes.Buffer, error) {
	p, err := bootparam.Parse(cmdline)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	return &State{Plan: p, Sys: f.system(), Log: NewLogger(&syncWriter{w: &buf}, f.machine.Uptime)}, &buf, nil
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// String returns what was written so far.
func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
