// Package dmtest fakes the kernel's device-mapper for tests of the packages that build
// tables (luks, lvm): a Control that decodes and records every command, answers
// DM_DEV_CREATE with a device number, and fails the command it is told to; and Nodes kept
// in memory.
package dmtest

import (
	"fmt"
	"sync"

	"github.com/nbdroot/nbdroot/dm"
)

// Call is one command the fake received, decoded.
type Call struct {
	Cmd string
	dm.Message
}

// Fake is an in-memory device-mapper: a dm.Control and dm.Nodes.
type Fake struct {
	mu sync.Mutex
	// Calls are the commands received, in order. Target parameters are copies.
	Calls []Call
	// Buffers are the callers' buffers, as passed, to check they are wiped afterwards.
	Buffers [][]byte
	// Fail and FailErr make the command Fail return FailErr (when FailErr is not nil).
	Fail    dm.Cmd
	FailErr error
	// Major and next minor of the devices DM_DEV_CREATE makes.
	Major, NextMinor uint32
	// Nodes holds the existing node paths; MknodErr fails Mknod.
	Nodes    map[string]string // path → "major:minor"
	MknodErr error
}

var (
	_ dm.Control = (*Fake)(nil)
	_ dm.Nodes   = (*Fake)(nil)
)

// New returns a fake with device numbers 253:0, 253:1, … and no nodes.
func New() *Fake { return &Fake{Major: 253, Nodes: map[string]string{}} }

// Client returns a dm.Client over the fake, making nodes in /dev/mapper.
func (f *Fake) Client() *dm.Client { return &dm.Client{Control: f, Nodes: f, DevDir: "/dev/mapper"} }

// Ioctl records cmd and answers it.
func (f *Fake) Ioctl(cmd dm.Cmd, buf []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	m, err := dm.ParseMessage(buf)
	if err != nil {
		return fmt.Errorf("dmtest: %s: %w", cmd, err)
	}
	for i, t := range m.Targets {
		m.Targets[i].Params = append([]byte(nil), t.Params...)
	}
	f.Calls = append(f.Calls, Call{Cmd: cmd.String(), Message: m})
	f.Buffers = append(f.Buffers, buf)
	if f.FailErr != nil && cmd == f.Fail {
		return f.FailErr
	}
	if cmd == dm.CmdDevCreate {
		dm.PutDev(buf, f.Major, f.NextMinor)
		f.NextMinor++
	}
	return nil
}

// Cmds returns the names of the commands received, in order.
func (f *Fake) Cmds() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, c := range f.Calls {
		out = append(out, c.Cmd)
	}
	return out
}

// Mknod records a node.
func (f *Fake) Mknod(path string, major, minor uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.MknodErr != nil {
		return f.MknodErr
	}
	f.Nodes[path] = fmt.Sprintf("%d:%d", major, minor)
	return nil
}

// Exists reports whether a node exists.
func (f *Fake) Exists(path string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	_, ok := f.Nodes[path]
	return ok
}

// Remove removes a node.
func (f *Fake) Remove(path string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.Nodes, path)
	return nil
}
