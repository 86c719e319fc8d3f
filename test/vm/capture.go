package vm

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Capture records the TCP traffic of one loopback port with tcpdump: what a guest's
// forwarded connection carried to the server (guestfwd's socat connects to 127.0.0.1),
// for tests that check what crossed the wire.
type Capture struct {
	port int
	path string
	cmd  *exec.Cmd
	done chan error
}

// StartCapture starts tcpdump on lo for port and waits until it captures.
func StartCapture(t TB, port int) *Capture {
	t.Helper()
	bin, err := exec.LookPath("tcpdump")
	if err != nil {
		t.Fatal("tcpdump is not installed (scripts/deps.sh installs it)")
	}
	c := &Capture{port: port, path: filepath.Join(t.TempDir(), "capture.pcap"), done: make(chan error, 1)}
	c.cmd = exec.Command(bin, "-i", "lo", "-U", "-s", "0", "-n", "-w", c.path, "tcp port "+strconv.Itoa(port))
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stderr)
		var out strings.Builder
		for sc.Scan() {
			out.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), "listening on") {
				close(ready)
			}
		}
		err := c.cmd.Wait()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out.String())
		}
		c.done <- err
	}()
	t.Cleanup(func() { c.cmd.Process.Kill() })
	select {
	case <-ready:
	case err := <-c.done:
		t.Fatalf("tcpdump exited: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("tcpdump did not start capturing within 20s")
	}
	return c
}

// Stop ends the capture and returns the TCP payloads sent to the port and from it, each
// direction's segments concatenated in capture order (retransmissions repeat bytes,
// which does not matter to a search).
func (c *Capture) Stop(t TB) (toPort, fromPort []byte) {
	t.Helper()
	c.cmd.Process.Signal(os.Interrupt)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
	b, err := os.ReadFile(c.path)
	if err != nil {
		t.Fatal(err)
	}
	to, from, err := tcpPayloads(b, c.port)
	if err != nil {
		t.Fatalf("capture %s: %v", c.path, err)
	}
	return to, from
}

// tcpPayloads reads a pcap file (RFC draft-ietf-opsawg-pcap: a 24-byte header, then per
// packet a 16-byte header and the packet) of IPv4/IPv6 TCP packets and returns the
// payloads to and from port.
func tcpPayloads(b []byte, port int) (to, from []byte, err error) {
	if len(b) < 24 {
		return nil, nil, errors.New("no pcap header")
	}
	var bo binary.ByteOrder
	switch binary.LittleEndian.Uint32(b) {
	case 0xa1b2c3d4, 0xa1b23c4d:
		bo = binary.LittleEndian
	case 0xd4c3b2a1, 0x4d3cb2a1:
		bo = binary.BigEndian
	default:
		return nil, nil, errors.New("not a pcap file")
	}
	var linkLen int
	switch lt := bo.Uint32(b[20:]); lt {
	case 0: // BSD loopback
		linkLen = 4
	case 1: // Ethernet
		linkLen = 14
	case 113: // Linux cooked capture
		linkLen = 16
	case 276: // Linux cooked capture v2
		linkLen = 20
	default:
		return nil, nil, fmt.Errorf("link type %d", lt)
	}
	for p := b[24:]; len(p) >= 16; {
		n := int(bo.Uint32(p[8:]))
		if len(p) < 16+n {
			break // the capture was cut off mid-packet
		}
		pkt := p[16 : 16+n]
		p = p[16+n:]
		if len(pkt) < linkLen+1 {
			continue
		}
		ip := pkt[linkLen:]
		var tcp []byte
		switch ip[0] >> 4 {
		case 4:
			ihl := int(ip[0]&0xf) * 4
			total := int(binary.BigEndian.Uint16(ip[2:]))
			if ip[9] != 6 || len(ip) < total || total < ihl {
				continue
			}
			tcp = ip[ihl:total]
		case 6:
			if len(ip) < 40 || ip[6] != 6 {
				continue // extension headers do not occur on loopback TCP
			}
			tcp = ip[40 : 40+int(binary.BigEndian.Uint16(ip[4:]))]
		default:
			continue
		}
		if len(tcp) < 20 {
			continue
		}
		src, dst := int(binary.BigEndian.Uint16(tcp)), int(binary.BigEndian.Uint16(tcp[2:]))
		payload := tcp[int(tcp[12]>>4)*4:]
		switch {
		case dst == port:
			to = append(to, payload...)
		case src == port:
			from = append(from, payload...)
		}
	}
	return to, from, nil
}
