package hooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/luks"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// fakeSys is a System that records what the stages asked for. Tests set the fields they
// need; unset behaviour succeeds.
type fakeSys struct {
	mu     sync.Mutex
	calls  []string
	files  map[string]string
	mounts []fakeMount

	mountErr  func(source, target, fstype string) error
	nics      []NIC
	linkUpErr error
	lease     *Lease
	dhcpErr   error
	dial      func(ctx context.Context, addr, export string) (*nbdclient.Conn, error)
	attach    func(dev nbdclient.Device, socks []*os.File) (int, error)
	ready     func(path string) (bool, error)
	find      func(spec string) (string, error)
	devices   map[string]string // device path → image file OpenDevice opens
	passes    []string          // answers AskPassphrase gives, in order
	prompts   []string
	activate  func(name string, table *luks.Table) (string, error)
	tables    []string // ActivateCrypt's tables, key redacted
	memKiB    uint32   // MemAvailableKiB; 0 means 512 MiB
}

type fakeMount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
}

var _ System = (*fakeSys)(nil)

func (f *fakeSys) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

func (f *fakeSys) Mount(source, target, fstype string, flags uintptr, data string) error {
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

func (f *fakeSys) MkdirAll(path string, perm os.FileMode) error {
	f.record("mkdir %s", path)
	return nil
}

func (f *fakeSys) WriteFile(path string, data []byte, perm os.FileMode) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.files == nil {
		f.files = map[string]string{}
	}
	f.files[path] = string(data)
	return nil
}

func (f *fakeSys) NICs() ([]NIC, error) { return f.nics, nil }

func (f *fakeSys) LinkUp(ctx context.Context, name string) error {
	f.record("up %s", name)
	return f.linkUpErr
}

func (f *fakeSys) DHCP(ctx context.Context, name string, req DHCPRequest) (*Lease, error) {
	f.record("dhcp %s", name)
	if f.dhcpErr != nil {
		return nil, f.dhcpErr
	}
	if f.lease == nil {
		return nil, errors.New("no DHCP server in this fake")
	}
	return f.lease, nil
}

func (f *fakeSys) Configure(name string, c *NetConfig) error {
	f.record("configure %s %s", name, c.Address.String())
	return nil
}

func (f *fakeSys) SetHostname(name string) error { f.record("hostname %s", name); return nil }

func (f *fakeSys) DialNBD(ctx context.Context, addr, export string) (*nbdclient.Conn, error) {
	f.record("dial %s %q", addr, export)
	if f.dial == nil {
		return nil, errors.New("connection refused")
	}
	return f.dial(ctx, addr, export)
}

func (f *fakeSys) AttachNBD(dev nbdclient.Device, socks []*os.File) (int, error) {
	f.record("attach nbd%d %d sockets", dev.Index, len(socks))
	if f.attach == nil {
		return dev.Index, nil
	}
	return f.attach(dev, socks)
}

func (f *fakeSys) BlockDeviceReady(path string) (bool, error) {
	if f.ready == nil {
		return true, nil
	}
	return f.ready(path)
}

func (f *fakeSys) FindBlockDevice(spec string) (string, error) {
	if f.find == nil {
		return "", errors.New("no devices in this fake")
	}
	return f.find(spec)
}

func (f *fakeSys) Uptime() time.Duration { return 1500 * time.Millisecond }

func (f *fakeSys) MemAvailableKiB() uint32 {
	if f.memKiB != 0 {
		return f.memKiB
	}
	return 512 << 10
}

func (f *fakeSys) OpenDevice(path string) (*os.File, error) {
	if img, ok := f.devices[path]; ok {
		return os.Open(img)
	}
	return nil, &os.PathError{Op: "open", Path: path, Err: os.ErrNotExist}
}

func (f *fakeSys) Unmount(target string) error { f.record("umount %s", target); return nil }

func (f *fakeSys) AskPassphrase(ctx context.Context, prompt string) ([]byte, error) {
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

func (f *fakeSys) ActivateCrypt(name string, table *luks.Table) (string, error) {
	f.mu.Lock()
	f.tables = append(f.tables, table.String())
	f.mu.Unlock()
	if f.activate != nil {
		return f.activate(name, table)
	}
	return "/dev/mapper/" + name, nil
}

// newTestState returns a State over a fake System with a plan parsed from cmdline, and the
// buffer the logger writes to.
func newTestState(cmdline string, sys *fakeSys) (*State, *bytes.Buffer, error) {
	p, err := bootparam.Parse(cmdline)
	if err != nil {
		return nil, nil, err
	}
	var buf bytes.Buffer
	return &State{Plan: p, Sys: sys, Log: NewLogger(&syncWriter{w: &buf}, sys.Uptime)}, &buf, nil
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

func (f *fakeSys) callsWith(prefix string) []string {
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
