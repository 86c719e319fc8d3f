package dhcpclient

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// TestRenewerOnTheWire runs the real Renewer (packet socket, boot clock, the interface's
// addresses) on a netlab host against the lab's DHCP server with a 4-second lease: every
// renewal reaches the server in the RENEWING form and is answered; with the server gone the
// lease expires loudly and the address stays, without lifetime.
func TestRenewerOnTheWire(t *testing.T) {
	netlab.Need(t)
	t.Parallel()
	lab := netlab.New(t)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{LeaseTime: 4 * time.Second})
	const mac = "52:54:00:4e:17:01"
	h := lab.AddHost(t, netlab.HostOptions{MACs: []string{mac}})

	var spec Spec
	if err := h.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		c, err := nclient4.New("eth0", nclient4.WithTimeout(time.Second), nclient4.WithRetry(5))
		if err != nil {
			return err
		}
		defer c.Close()
		sent := BootClock{}.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		ack, err := Obtain(ctx, c, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("nbdroot")))
		if err != nil {
			return err
		}
		addr := net.IPNet{IP: ack.YourIPAddr, Mask: ack.SubnetMask()}
		// As the net hook adds it: no lifetime.
		if err := netlink.AddrReplace(l, &netlink.Addr{IPNet: &addr}); err != nil {
			return err
		}
		spec = Spec{Interface: "eth0", MAC: mac, Address: addr.String(), Server: ack.ServerIdentifier().String(),
			Lease: ack.IPAddressLeaseTime(0), Requested: sent, VendorClass: "nbdroot", Root: "/dev/nbd0"}
		return nil
	}); err != nil {
		t.Fatalf("first lease: %v", err)
	}
	if spec.Address != "10.77.0.100/24" || spec.Lease != 4*time.Second {
		t.Fatalf("lease %+v", spec)
	}

	logs := &logLines{}
	run := func(d time.Duration) {
		t.Helper()
		if err := h.Do(func() error {
			r, err := NewRenewer(spec, logs.log)
			if err != nil {
				return err
			}
			// The host's own root is not a booted client's: no hand-off is looked for.
			r.Detector = nil
			ctx, cancel := context.WithTimeout(context.Background(), d)
			defer cancel()
			if err := r.Run(ctx); err != context.DeadlineExceeded {
				t.Errorf("Run = %v, want the test's deadline", err)
			}
			spec.Requested, spec.Server, spec.Lease = r.requested, r.server.String(), r.lease
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	run(13 * time.Second)
	var renewals int
	for _, r := range dhcp.Requests() {
		if r.Type != dhcpv4.MessageTypeRequest || r.ClientIP == nil {
			continue
		}
		renewals++
		if !r.ClientIP.Equal(net.IPv4(10, 77, 0, 100)) || r.ServerID != nil || r.RequestedIP != nil || r.Class != "nbdroot" {
			t.Errorf("renewal %+v: want ciaddr 10.77.0.100, vendor class nbdroot, neither option 50 nor 54 (RFC 2131 table 5)", r)
		}
	}
	// T1 every 2 s from 2 s on: 6 in 13 s, give or take one at the edges.
	if got := logs.count("renewed by 10.77.0.1 for 4s"); renewals < 5 || got != renewals {
		t.Errorf("%d renewals reached the server, %d logged as answered:\n%s", renewals, got, logs)
	}

	dhcp.Close()
	run(10 * time.Second)
	if logs.count("2 eth0: DHCP LEASE OF 10.77.0.100 EXPIRED") != 1 {
		t.Errorf("no loud expiry line:\n%s", logs)
	}
	if err := h.Do(func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.Equal(net.IPv4(10, 77, 0, 100)) {
				// 0xffffffff is "forever" (INFINITY_LIFE_TIME in the kernel).
				if uint32(a.ValidLft) != 0xffffffff || uint32(a.PreferedLft) != 0xffffffff {
					t.Errorf("address lifetimes valid %d preferred %d, want forever", a.ValidLft, a.PreferedLft)
				}
				return nil
			}
		}
		t.Errorf("the address is gone after the lease expired: %v", addrs)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("renewer log:\n%s", strings.TrimSpace(logs.String()))
	}
}

// TestProcessRoot reads files through a procfs of the renewer's own, as it does after
// switch_root — here this process's root rather than PID 1's, which in a container is
// another — with absolute links resolved inside the root.
func TestProcessRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (a procfs instance of its own)")
	}
	proc, err := openProc()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(proc)
	dir, err := os.MkdirTemp("", "nbdroot-root-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "lease"), []byte("ADDRESS=10.77.0.100\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// An absolute link, as /var/run -> /run is: it must resolve in the process's root.
	if err := os.Symlink(dir, filepath.Join(dir, "abs")); err != nil {
		t.Fatal(err)
	}
	root, id, err := processRoot(proc, os.Getpid())
	if err != nil || id == "" {
		t.Fatalf("processRoot: %q, %v", id, err)
	}
	rel := strings.TrimPrefix(dir, "/")
	for _, name := range []string{rel + "/lease", rel + "/abs/lease"} {
		if ip := envAddress(root, name); !ip.Equal(net.IPv4(10, 77, 0, 100)) {
			t.Errorf("ADDRESS of %s through the process's root = %v", name, ip)
		}
	}
	if _, err := fs.Stat(root, rel+"/missing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Stat(missing) = %v, want not-exist", err)
	}
}
