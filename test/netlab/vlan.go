//go:build linux

package netlab

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// VLANPort is a guest NIC on an 802.1Q trunk that carries one VLAN, switched in userspace
// (the lab's kernel need not have 802.1Q or VLAN filtering): QEMU exchanges the guest's
// Ethernet frames with the port over UDP on the lab's loopback (-netdev socket); frames
// tagged with the port's VLAN lose their tag and go to a tap on the lab's bridge, frames from
// the bridge come to the guest tagged, and everything else the guest sends — untagged, or
// another VLAN — is dropped. A guest reaches the lab's servers only through its VLAN
// interface.
type VLANPort struct {
	// VID is the VLAN the port carries.
	VID uint16

	tap     *os.File
	conn    *net.UDPConn
	guest   *net.UDPAddr
	tagged  atomic.Int64
	dropped atomic.Int64
	wg      sync.WaitGroup
}

// Tagged and Dropped count the guest's frames on the port's VLAN and the others.
func (p *VLANPort) Tagged() int64  { return p.tagged.Load() }
func (p *VLANPort) Dropped() int64 { return p.dropped.Load() }

// tpid8021Q is the 802.1Q tag's EtherType.
const tpid8021Q = 0x8100

// AddVLANPort makes a VLANPort for VLAN vid and returns it with the QEMU arguments of a
// virtio NIC (netdev id, MAC mac) on it. The test's cleanup stops it.
func (l *Lab) AddVLANPort(t testing.TB, id, mac string, vid uint16) (*VLANPort, []string) {
	t.Helper()
	l.mu.Lock()
	n := l.taps
	l.taps++
	l.mu.Unlock()
	name := "vtap" + strconv.Itoa(n)
	// The lab's loopback is its own: fixed ports cannot collide with another test's.
	ours := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 41000 + n}
	guest := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000 + n}
	p := &VLANPort{VID: vid, guest: guest}
	err := l.Do(func() error {
		tap, err := openTap(name)
		if err != nil {
			return err
		}
		p.tap = tap
		c, err := net.ListenUDP("udp4", ours)
		if err != nil {
			tap.Close()
			return err
		}
		p.conn = c
		return nil
	})
	if err != nil {
		t.Fatalf("VLAN port in %s: %v", l.Name, err)
	}
	for _, s := range [][]string{{"link", "set", name, "master", Bridge}, {"link", "set", name, "up"}} {
		if err := ip(append([]string{"-n", l.Name}, s...)...); err != nil {
			t.Fatal(err)
		}
	}
	p.wg.Add(2)
	go p.fromGuest()
	go p.toGuest()
	t.Cleanup(p.close)
	return p, []string{
		"-netdev", fmt.Sprintf("socket,id=%s,udp=%s,localaddr=%s", id, ours, guest),
		"-device", fmt.Sprintf("virtio-net-pci,netdev=%s,mac=%s,romfile=", id, mac),
	}
}

// openTap creates a tap device without packet information (raw Ethernet frames), for
// reading and writing through the runtime's poller.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/dev/net/tun", Err: err}
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("TUNSETIFF", err)
	}
	return os.NewFile(uintptr(fd), name), nil
}

// fromGuest strips the tag of the guest's frames on the VLAN and passes them to the bridge.
func (p *VLANPort) fromGuest() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, _, err := p.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		f := buf[:n]
		if n < 18 || binary.BigEndian.Uint16(f[12:]) != tpid8021Q || binary.BigEndian.Uint16(f[14:])&0x0fff != p.VID {
			p.dropped.Add(1)
			continue
		}
		p.tagged.Add(1)
		untagged := append(append(make([]byte, 0, n-4), f[:12]...), f[16:]...)
		p.tap.Write(untagged)
	}
}

// toGuest tags the bridge's frames with the VLAN and sends them to the guest.
func (p *VLANPort) toGuest() {
	defer p.wg.Done()
	buf := make([]byte, 65536)
	for {
		n, err := p.tap.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return
			}
			continue
		}
		if n < 14 {
			continue
		}
		f := make([]byte, 0, n+4)
		f = append(f, buf[:12]...)
		f = binary.BigEndian.AppendUint16(f, tpid8021Q)
		f = binary.BigEndian.AppendUint16(f, p.VID)
		f = append(f, buf[12:n]...)
		p.conn.WriteToUDP(f, p.guest)
	}
}

func (p *VLANPort) close() {
	p.conn.Close()
	p.tap.Close()
	p.wg.Wait()
}
