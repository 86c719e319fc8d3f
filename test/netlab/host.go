//go:build linux

package netlab

import (
	"bytes"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netns"
)

// Host is a client machine without QEMU: a network namespace of its own whose NICs are veth
// pairs, the other end of each a port of the lab's bridge (or, with NoBridge, left in the
// lab for the test to wire). Tests run nbdroot's network code in it — the net hook with the
// real System, the lease Renewer — as the init runs it on a client: this is how every
// network form is tested without booting a kernel. The NICs start down, without addresses.
type Host struct {
	// Name is the namespace, as `ip netns` knows it.
	Name string
	// NICs are the host's interfaces, eth0, eth1, … in creation order.
	NICs []HostNIC

	lab *Lab
	ns  netns.NsHandle
}

// HostNIC is one interface of a Host.
type HostNIC struct {
	// Name is the interface in the host (eth0, …); Peer its other end in the lab.
	Name, Peer string
	// MAC is the interface's address, lower case with colons.
	MAC string
}

// HostOptions shape a Host.
type HostOptions struct {
	// MACs are the NICs' addresses, one NIC each.
	MACs []string
	// NoBridge leaves the peers in the lab unattached and down.
	NoBridge bool
}

// AddHost creates a Host with one NIC per MAC. The test's cleanup deletes it.
func (l *Lab) AddHost(t testing.TB, o HostOptions) *Host {
	t.Helper()
	l.mu.Lock()
	n := l.hosts
	l.hosts++
	l.mu.Unlock()
	h := &Host{Name: l.Name + "-h" + strconv.Itoa(n), lab: l}
	if err := ip("netns", "add", h.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ip("netns", "delete", h.Name); err != nil {
			t.Errorf("remove the host: %v", err)
		}
	})
	if err := ip("-n", h.Name, "link", "set", "lo", "up"); err != nil {
		t.Fatal(err)
	}
	for i, mac := range o.MACs {
		nic := HostNIC{Name: "eth" + strconv.Itoa(i), Peer: fmt.Sprintf("h%dn%d", n, i), MAC: strings.ToLower(mac)}
		steps := [][]string{
			{"-n", l.Name, "link", "add", nic.Peer, "type", "veth", "peer", "name", nic.Name, "netns", h.Name},
			{"-n", h.Name, "link", "set", nic.Name, "address", nic.MAC},
		}
		if !o.NoBridge {
			steps = append(steps, []string{"-n", l.Name, "link", "set", nic.Peer, "master", Bridge, "up"})
		}
		for _, s := range steps {
			if err := ip(s...); err != nil {
				t.Fatal(err)
			}
		}
		h.NICs = append(h.NICs, nic)
	}
	ns, err := netns.GetFromName(h.Name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", h.Name, err)
	}
	h.ns = ns
	t.Cleanup(func() { ns.Close() })
	return h
}

// Do runs fn on an OS thread inside the host's namespace (see Lab.Do).
func (h *Host) Do(fn func() error) error { return doIn(h.ns, h.Name, fn) }

// Run runs a command inside the host and returns its combined output.
func (h *Host) Run(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), h.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
