package netboot

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
)

// interfaceIPv4 is the first IPv4 address of an interface and its mask.
func interfaceIPv4(name string) (*net.IPNet, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, err
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return &net.IPNet{IP: n.IP.To4(), Mask: n.Mask}, nil
		}
	}
	return nil, fmt.Errorf("interface %s has no IPv4 address", name)
}

// listenDHCP opens port 67 (and 4011 in proxy mode) on the DHCP interface. The sockets
// are bound to the interface and share port 67 with a DHCP server on the same host
// (SO_REUSEPORT): broadcasts reach both.
func (s *Server) listenDHCP(ctx context.Context) error {
	c := &s.cfg
	n, err := interfaceIPv4(c.DHCPInterface)
	if err != nil {
		return &ConfigError{"--dhcp-interface", c.DHCPInterface, err}
	}
	s.serverIP = n.IP
	if s.full != nil {
		s.full.Netmask = n.Mask
		p := s.full.Pool
		if !n.Contains(p.First) || !n.Contains(p.Last) {
			return &ConfigError{"--dhcp-range", c.DHCPRange, fmt.Errorf("not inside %s's network %s", c.DHCPInterface, n)}
		}
		p.Exclude = n.IP
	}
	ports := []int{dhcpv4.ServerPort}
	if c.DHCP == DHCPProxy {
		ports = append(ports, PXEPort)
	}
	for _, port := range ports {
		conn, err := server4.NewIPv4UDPConn(c.DHCPInterface, &net.UDPAddr{Port: port})
		if err != nil {
			return &ConfigError{"--dhcp", c.DHCP, fmt.Errorf("port %d on %s: %w", port, c.DHCPInterface, err)}
		}
		s.udps = append(s.udps, conn)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveDHCP(ctx, conn, port == PXEPort)
		}()
	}
	mode := "proxyDHCP (ports 67 and 4011)"
	if s.full != nil {
		mode = "DHCP for " + c.DHCPRange
	}
	s.logf("netboot: %s on %s (%s), %s loader", mode, c.DHCPInterface, n.IP, c.Loader)
	return nil
}

// serveDHCP answers requests on one socket until it is closed.
func (s *Server) serveDHCP(ctx context.Context, conn *net.UDPConn, pxePort bool) {
	buf := make([]byte, 1500)
	for {
		n, from, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, net.ErrClosed) {
				s.logf("netboot: dhcp: %v", err)
			}
			return
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue // not DHCP: nothing to say to it
		}
		resp, err := s.dhcpReply(req, pxePort)
		if err != nil {
			s.logf("netboot: dhcp %s: %v", req.ClientHWAddr, err)
			continue
		}
		if resp == nil {
			continue
		}
		to := replyAddr(req, pxePort, from)
		if _, err := conn.WriteToUDP(resp.ToBytes(), to); err != nil {
			s.logf("netboot: dhcp %s: send to %s: %v", req.ClientHWAddr, to, err)
			continue
		}
		s.logf("netboot: dhcp %s %s → %s %s file %q", ClientOf(req).describe(), req.MessageType(), resp.MessageType(), addrText(resp), resp.BootFileNameOption())
	}
}

func addrText(resp *dhcpv4.DHCPv4) string {
	if resp.YourIPAddr == nil || resp.YourIPAddr.IsUnspecified() {
		return "(no address)"
	}
	return resp.YourIPAddr.String()
}

// dhcpReply answers one request in the configured mode.
func (s *Server) dhcpReply(req *dhcpv4.DHCPv4, pxePort bool) (*dhcpv4.DHCPv4, error) {
	if s.full != nil {
		return fullReply(s, s.full, req, s.serverIP)
	}
	return proxyReply(s, req, s.serverIP, pxePort)
}

// bootFile is what a PXE client on the DHCP interface loads (see ChooseBootFile).
func (s *Server) bootFile(c Client, serverIP net.IP) (string, bool, error) {
	script := ""
	if s.cfg.BootURL != "" {
		script = s.cfg.BootURL
	} else if s.cfg.HTTP != "" {
		script = "http://" + net.JoinHostPort(serverIP.String(), strconv.Itoa(s.httpPort))
	}
	if script != "" {
		script += urlPrefix(s.cfg.BootExport) + ScriptFile
	}
	return ChooseBootFile(c, s.cfg.Loader, script)
}
