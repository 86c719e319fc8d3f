//go:build linux

// Package netlab builds private networks for nbdroot's QEMU boot tests: a network namespace
// of the test's own with a bridge, the server's address on that bridge, tap devices for QEMU
// guests, a DHCPv4 server and a DNS server written in Go, and `nbdroot serve` bound inside.
//
// QEMU's user networking (slirp) cannot set DHCP options such as the root-path or serve DNS
// names under restrict=on; a lab can. A lab never reaches the host's network: its namespace
// holds only a loopback, the bridge and the taps, with no link out, so every packet a guest
// or a lab server sends stays inside. Each lab has unique names (several tests run in
// parallel) and is removed by the test's cleanup.
//
// Building a lab needs root (network namespaces, tap devices); Need skips a test that cannot
// have one, or fails it under NBDROOT_REQUIRE_PEERS=1.
package netlab

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// The lab's addressing: the servers live on the bridge at ServerIP; guests get addresses of
// Subnet from the lab's DHCP server (or are given one statically).
const (
	ServerIP = "10.77.0.1"
	// PrefixLen is the subnet's prefix length.
	PrefixLen = 24
	// Bridge is the bridge every tap is a port of.
	Bridge = "br0"
	// prefix starts the name of every namespace a lab creates; the rest is the test
	// process's pid and a counter, so stale labs of dead processes can be recognised.
	prefix = "nbdlab-"
)

// Subnet is the lab's IPv4 network.
var Subnet = net.IPNet{IP: net.IPv4(10, 77, 0, 0).To4(), Mask: net.CIDRMask(PrefixLen, 32)}

// Lab is one test network namespace.
type Lab struct {
	// Name is the network namespace, as `ip netns` knows it.
	Name string

	ns    netns.NsHandle
	mu    sync.Mutex
	taps  int
	hosts int
}

var labs atomic.Int64

// Need skips the test when it cannot build a lab (not root, no ip(8), no /dev/net/tun), or
// fails it when NBDROOT_REQUIRE_PEERS=1 (make test) says it must run.
func Need(t testing.TB) {
	t.Helper()
	var missing string
	switch {
	case os.Geteuid() != 0:
		missing = "root (network namespaces and tap devices)"
	case !haveIP():
		missing = "ip(8) from iproute2"
	default:
		if _, err := os.Stat("/dev/net/tun"); err != nil {
			missing = "/dev/net/tun"
		}
	}
	if missing == "" {
		return
	}
	if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
		t.Fatalf("this test needs %s and NBDROOT_REQUIRE_PEERS=1 says it must run", missing)
	}
	t.Skipf("this test needs %s", missing)
}

func haveIP() bool {
	_, err := exec.LookPath("ip")
	return err == nil
}

// New creates a lab: a fresh namespace with its loopback up and the bridge Bridge carrying
// ServerIP/PrefixLen. The test's cleanup deletes the namespace (and with it the bridge and
// taps); cleanups registered later — servers, guests — run before it.
func New(t testing.TB) *Lab {
	t.Helper()
	sweep()
	l := &Lab{Name: fmt.Sprintf("%s%d-%d", prefix, os.Getpid(), labs.Add(1))}
	if err := ip("netns", "add", l.Name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ip("netns", "delete", l.Name); err != nil {
			t.Errorf("remove the lab: %v", err)
		}
	})
	steps := [][]string{
		{"link", "set", "lo", "up"},
		// No spanning tree, no forward delay: a tap forwards as soon as QEMU opens it.
		{"link", "add", Bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"},
		{"addr", "add", ServerIP + "/" + strconv.Itoa(PrefixLen), "dev", Bridge},
		{"link", "set", Bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(append([]string{"-n", l.Name}, s...)...); err != nil {
			t.Fatal(err)
		}
	}
	h, err := netns.GetFromName(l.Name)
	if err != nil {
		t.Fatalf("open namespace %s: %v", l.Name, err)
	}
	l.ns = h
	t.Cleanup(func() { h.Close() })
	return l
}

// sweep deletes the namespaces of labs whose test process is gone (a test killed before its
// cleanup ran), so they do not pile up on a machine that runs the tests every day.
func sweep() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(filepath.Join("/proc", pidText)); errors.Is(err, os.ErrNotExist) {
			ip("netns", "delete", e.Name())
		}
	}
}

// ip runs ip(8) and returns its error with its output.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// AddTap creates a tap device in the lab, a port of the bridge, and returns its name. A QEMU
// guest attaches to it with NIC's arguments.
func (l *Lab) AddTap(t testing.TB) string {
	t.Helper()
	l.mu.Lock()
	name := "tap" + strconv.Itoa(l.taps)
	l.taps++
	l.mu.Unlock()
	for _, s := range [][]string{
		{"tuntap", "add", "dev", name, "mode", "tap"},
		{"link", "set", name, "master", Bridge},
		{"link", "set", name, "up"},
	} {
		if err := ip(append([]string{"-n", l.Name}, s...)...); err != nil {
			t.Fatal(err)
		}
	}
	return name
}

// Wrapper is vm.Options.Wrapper for a guest whose NICs are taps of this lab: QEMU runs in
// the lab's namespace, where its taps are.
func (l *Lab) Wrapper() []string { return []string{"ip", "netns", "exec", l.Name} }

// NIC returns the QEMU arguments of a virtio NIC with the given MAC address attached to tap;
// id names the netdev and must be unique within the guest. The NIC has no boot ROM.
func NIC(id, tap, mac string) []string {
	return []string{
		"-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, tap),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,romfile=", id, mac),
	}
}

// PXENIC is NIC with QEMU's iPXE boot ROM: the guest (with -boot n, vm.Options.PXE)
// network-boots from the lab.
func PXENIC(id, tap, mac string) []string {
	return []string{
		"-netdev", fmt.Sprintf("tap,id=%s,ifname=%s,script=no,downscript=no", id, tap),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s", id, mac),
	}
}

// Do runs fn on an OS thread that has entered the lab's namespace. Sockets fn opens belong
// to the lab for their whole life, whichever thread uses them later; that is how the lab's
// servers listen inside it.
func (l *Lab) Do(fn func() error) error { return doIn(l.ns, l.Name, fn) }

// doIn runs fn on an OS thread that has entered the namespace ns (called name in errors).
func doIn(ns netns.NsHandle, name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is only given back to the runtime once it is back in its own
		// namespace; if that fails, it stays locked and dies with this goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("current namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: %w", name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Run runs a command inside the lab (ip netns exec) and returns its combined output.
func (l *Lab) Run(name string, args ...string) (string, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", l.Name, name}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), l.Name, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}
