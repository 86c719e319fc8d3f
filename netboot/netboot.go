// Package netboot is what boots clients before their kernel runs, served by `nbdroot serve`
// beside the NBD server: per export an iPXE script over HTTP with the kernel and initramfs
// read straight from the export's image, TFTP for boot ROMs that speak nothing else (chain
// files from Debian's ipxe or pxelinux packages, and the kernel files for pxelinux), and
// DHCP as a ProxyDHCP beside an existing DHCP server or as the only one in a lab.
//
// The kernels come from the image itself (package netboot/ext4: no loop mount, no root):
// the newest /boot/vmlinuz-VERSION that has a /boot/nbdroot.img-VERSION, read again when
// the image changes, so a kernel installed inside a client is what it boots next time.
// docs/netboot.md is the user's guide.
//
// What it must never do:
//   - serve a file the configuration did not name: HTTP and TFTP paths are looked up among
//     an export's kernel pairs and the fixed chain files, never joined onto a directory;
//   - let one bad image, request or client stop the others: errors are per request, with a
//     log line naming the export, file or client;
//   - write to an image (images are opened read-only, by path, per request);
//   - answer DHCP for clients that are not booting in proxy mode (the network's own DHCP
//     server owns them).
package netboot

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/netboot/tftp"
)

// Default locations of the chain files (Debian's ipxe, pxelinux and syslinux-common).
const (
	DefaultIPXEDir = "/usr/lib/ipxe"
)

// DefaultPXELinuxDirs are searched for pxelinux.0 and ldlinux.c32 when no directory is
// given: Debian splits them between pxelinux and syslinux-common.
var DefaultPXELinuxDirs = []string{"/usr/lib/PXELINUX", "/usr/lib/syslinux/modules/bios", "/usr/lib/syslinux", "/usr/share/syslinux"}

// Config is the netboot service: what `nbdroot serve`'s --http, --tftp, --dhcp… flags say.
// Zero values leave a part off.
type Config struct {
	// HTTP is the address (host:port) of the HTTP server for iPXE scripts and kernels.
	HTTP string
	// TFTP is the address (host[:port], port 69 by default) of the TFTP server.
	TFTP string
	// DHCP is "", DHCPProxy or DHCPFull; DHCPInterface the interface it answers on.
	DHCP          string
	DHCPInterface string
	// DHCPRange, DHCPRouter and DHCPDNS configure full mode: "FIRST-LAST", an address,
	// addresses.
	DHCPRange  string
	DHCPRouter string
	DHCPDNS    []string
	// DHCPLease is the lease time in full mode (0: one hour).
	DHCPLease time.Duration
	// Loader is LoaderIPXE (default) or LoaderPXELinux: what TFTP-only ROMs load.
	Loader string
	// IPXEDir holds undionly.kpxe and snponly.efi; PXELinuxDir pxelinux.0 and ldlinux.c32
	// (default: DefaultIPXEDir, DefaultPXELinuxDirs).
	IPXEDir, PXELinuxDir string
	// BootExport is the export DHCP and TFTP clients boot ("": the default export).
	BootExport string
	// NBDServer, when set (host:port), is the NBD address every command line names, for
	// clients that reach the server through NAT. Default: the address the client reached
	// this server at, with the NBD listener's port.
	NBDServer string
	// BootURL, when set (http://host:port), is the base of the script URLs DHCP hands to
	// iPXE. Default: this server's address on the DHCP interface with HTTP's port.
	BootURL string
	// Append is added to every kernel command line (console=ttyS0, quiet, …).
	Append string
	// Sources maps export names to a boot source (an image or a directory) that holds the
	// export's kernels instead of its own image: a LUKS root.
	Sources map[string]string
	// TTL: see Catalog.TTL.
	TTL time.Duration
	// Log gets one line per request served or refused; nil discards.
	Log *log.Logger
}

// Enabled reports whether any part is on.
func (c *Config) Enabled() bool { return c.HTTP != "" || c.TFTP != "" || c.DHCP != "" }

// ConfigError names the flag whose value is wrong.
type ConfigError struct {
	Flag  string // "--http", "--dhcp-range", …
	Value string
	Err   error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s %q: %v", e.Flag, e.Value, e.Err)
}

// Unwrap returns the underlying error.
func (e *ConfigError) Unwrap() error { return e.Err }

// Server is the netboot service. It is a nbdserver.Companion.
type Server struct {
	cfg   Config
	cat   *Catalog
	log   *log.Logger
	http  *http.Server
	tftp  *tftp.Server
	nbdMu sync.Mutex
	nbd   []*net.TCPAddr

	full     *FullDHCP
	serverIP net.IP // the DHCP interface's address
	httpPort int
	tftpIP   net.IP

	lns    []net.Listener
	udps   []*net.UDPConn
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

var _ nbdserver.Companion = (*Server)(nil)

// New checks a configuration; nothing listens before Start.
func New(cfg Config) (*Server, error) {
	if cfg.Loader == "" {
		cfg.Loader = LoaderIPXE
	}
	if cfg.IPXEDir == "" {
		cfg.IPXEDir = DefaultIPXEDir
	}
	if cfg.DHCPLease == 0 {
		cfg.DHCPLease = time.Hour
	}
	s := &Server{cfg: cfg, log: cfg.Log, cat: &Catalog{TTL: cfg.TTL, Sources: cfg.Sources}}
	if s.log == nil {
		s.log = log.New(discard{}, "", 0)
	}
	if cfg.HTTP != "" {
		if _, port, err := net.SplitHostPort(cfg.HTTP); err != nil || port == "" {
			return nil, &ConfigError{"--http", cfg.HTTP, errors.New("want ADDR:PORT")}
		}
	}
	if cfg.TFTP != "" {
		if _, err := tftpAddr(cfg.TFTP); err != nil {
			return nil, &ConfigError{"--tftp", cfg.TFTP, err}
		}
	}
	switch cfg.Loader {
	case LoaderIPXE, LoaderPXELinux:
	default:
		return nil, &ConfigError{"--pxe-loader", cfg.Loader, errors.New("want ipxe or pxelinux")}
	}
	if cfg.NBDServer != "" {
		h, p, err := net.SplitHostPort(cfg.NBDServer)
		if n, perr := strconv.Atoi(p); err != nil || h == "" || perr != nil || n < 1 || n > 65535 {
			return nil, &ConfigError{"--boot-nbd", cfg.NBDServer, errors.New("want HOST:PORT")}
		}
	}
	if cfg.BootURL != "" {
		u, err := url.Parse(cfg.BootURL)
		if err != nil || u.Scheme != "http" || u.Host == "" || strings.Trim(u.Path, "/") != "" {
			return nil, &ConfigError{"--boot-url", cfg.BootURL, errors.New("want http://HOST[:PORT]")}
		}
	}
	if err := CheckExportName(cfg.BootExport); err != nil {
		return nil, &ConfigError{"--boot-export", cfg.BootExport, err}
	}
	for name, src := range cfg.Sources {
		if _, err := os.Stat(src); err != nil {
			return nil, &ConfigError{"--boot-source", name + "=" + src, err}
		}
	}
	if cfg.DHCP != "" {
		if err := s.checkDHCP(); err != nil {
			return nil, err
		}
	} else if cfg.DHCPInterface != "" || cfg.DHCPRange != "" {
		return nil, &ConfigError{"--dhcp-interface", cfg.DHCPInterface, errors.New("needs --dhcp proxy or --dhcp full")}
	}
	return s, nil
}

// checkDHCP checks what DHCP needs: an interface, TFTP for the ROMs, HTTP for iPXE, the
// chain files, and in full mode a range inside the interface's network.
func (s *Server) checkDHCP() error {
	c := &s.cfg
	switch c.DHCP {
	case DHCPProxy, DHCPFull:
	default:
		return &ConfigError{"--dhcp", c.DHCP, errors.New("want proxy or full")}
	}
	if c.DHCPInterface == "" {
		return &ConfigError{"--dhcp", c.DHCP, errors.New("needs --dhcp-interface IFACE (the network the clients boot on)")}
	}
	if c.TFTP == "" {
		return &ConfigError{"--dhcp", c.DHCP, errors.New("needs --tftp: boot ROMs load their first file over TFTP")}
	}
	if c.Loader == LoaderIPXE && c.HTTP == "" && c.BootURL == "" {
		return &ConfigError{"--dhcp", c.DHCP, errors.New("needs --http: iPXE fetches its boot script over HTTP")}
	}
	need := []string{filepath.Join(c.IPXEDir, fileUndionly), filepath.Join(c.IPXEDir, fileSNPOnly)}
	if c.Loader == LoaderPXELinux {
		need = need[1:]
		for _, f := range []string{filePXELinux, fileLDLinux} {
			p, err := s.pxelinuxFile(f)
			if err != nil {
				return &ConfigError{"--pxelinux-dir", c.PXELinuxDir, err}
			}
			need = append(need, p)
		}
	}
	for _, p := range need {
		if _, err := os.Stat(p); err != nil {
			return &ConfigError{"--ipxe-dir", c.IPXEDir, fmt.Errorf("%w (install Debian's ipxe package)", err)}
		}
	}
	if c.DHCP == DHCPFull {
		if c.DHCPRange == "" {
			return &ConfigError{"--dhcp", c.DHCP, errors.New("full mode needs --dhcp-range FIRST-LAST")}
		}
		first, last, ok := strings.Cut(c.DHCPRange, "-")
		a, b := net.ParseIP(strings.TrimSpace(first)).To4(), net.ParseIP(strings.TrimSpace(last)).To4()
		if !ok || a == nil || b == nil || ip4(a) > ip4(b) || ip4(b)-ip4(a) >= 1<<16 {
			return &ConfigError{"--dhcp-range", c.DHCPRange, errors.New("want FIRST-LAST, IPv4, at most 65536 addresses")}
		}
		s.full = &FullDHCP{Pool: &LeasePool{First: a, Last: b, Lease: c.DHCPLease}}
		if c.DHCPRouter != "" {
			if s.full.Router = net.ParseIP(c.DHCPRouter).To4(); s.full.Router == nil {
				return &ConfigError{"--dhcp-router", c.DHCPRouter, errors.New("want an IPv4 address")}
			}
		}
		for _, d := range c.DHCPDNS {
			ip := net.ParseIP(d).To4()
			if ip == nil {
				return &ConfigError{"--dhcp-dns", d, errors.New("want an IPv4 address")}
			}
			s.full.DNS = append(s.full.DNS, ip)
		}
	}
	return nil
}

// pxelinuxFile finds pxelinux.0 or ldlinux.c32.
func (s *Server) pxelinuxFile(name string) (string, error) {
	dirs := DefaultPXELinuxDirs
	if s.cfg.PXELinuxDir != "" {
		dirs = []string{s.cfg.PXELinuxDir}
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found in %s (install Debian's pxelinux and syslinux-common)", name, strings.Join(dirs, ", "))
}

// tftpAddr parses host[:port] with port 69 by default.
func tftpAddr(a string) (*net.UDPAddr, error) {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		host, port = strings.Trim(a, "[]"), "69"
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return nil, errors.New("want ADDR[:PORT]")
	}
	var ip net.IP
	if host != "" {
		if ip = net.ParseIP(host); ip == nil {
			return nil, errors.New("want an IP address")
		}
	}
	return &net.UDPAddr{IP: ip, Port: n}, nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func (s *Server) logf(format string, args ...any) { s.log.Printf(format, args...) }

// Catalog is the server's export catalog.
func (s *Server) Catalog() *Catalog { return s.cat }

// Start opens the configured sockets and serves until Close. exports are the NBD server's,
// nbd its listeners.
func (s *Server) Start(exports []nbdserver.Export, nbd []net.Listener) error {
	s.Reload(exports)
	for _, ln := range nbd {
		if a, ok := ln.Addr().(*net.TCPAddr); ok {
			s.nbd = append(s.nbd, a)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	if err := s.listen(ctx); err != nil {
		s.Close()
		return err
	}
	return nil
}

func (s *Server) listen(ctx context.Context) error {
	if s.cfg.HTTP != "" {
		ln, err := net.Listen("tcp", s.cfg.HTTP)
		if err != nil {
			return &ConfigError{"--http", s.cfg.HTTP, err}
		}
		s.lns = append(s.lns, ln)
		s.httpPort = ln.Addr().(*net.TCPAddr).Port
		s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second, ErrorLog: s.log}
		s.logf("netboot: HTTP boot scripts at http://%s/EXPORT/%s", ln.Addr(), ScriptFile)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				s.logf("netboot: HTTP server stopped: %v", err)
			}
		}()
	}
	if s.cfg.TFTP != "" {
		a, _ := tftpAddr(s.cfg.TFTP)
		conn, err := net.ListenUDP("udp", a)
		if err != nil {
			return &ConfigError{"--tftp", s.cfg.TFTP, err}
		}
		s.udps = append(s.udps, conn)
		s.tftpIP = a.IP
		s.tftp = &tftp.Server{Handler: s.openTFTP, Log: log.New(s.log.Writer(), "netboot: ", 0)}
		s.logf("netboot: TFTP on %s", conn.LocalAddr())
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := s.tftp.Serve(ctx, conn); err != nil {
				s.logf("netboot: TFTP server stopped: %v", err)
			}
		}()
	}
	if s.cfg.DHCP != "" {
		if err := s.listenDHCP(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Reload replaces the exports.
func (s *Server) Reload(exports []nbdserver.Export) {
	s.cat.SetExports(exports)
	for _, e := range exports {
		if err := CheckExportName(e.Name); err != nil {
			s.logf("netboot: %v", err)
		}
	}
	for name := range s.cfg.Sources {
		found := false
		for _, e := range exports {
			found = found || e.Name == name
		}
		if !found {
			s.logf("netboot: --boot-source names export %q, which is not configured", name)
		}
	}
}

// Close stops every server and waits for them.
func (s *Server) Close() error {
	if s.cancel != nil {
		s.cancel()
	}
	if s.http != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.http.Shutdown(ctx)
		cancel()
	}
	for _, ln := range s.lns {
		ln.Close()
	}
	for _, c := range s.udps {
		c.Close()
	}
	s.wg.Wait()
	return nil
}

// nbdAddress is the NBD server a client's command line names: NBDServer if configured,
// else host (the address the client reached us at) with the port of the NBD listener on
// local (the local address it reached), or of a wildcard listener, or the first.
func (s *Server) nbdAddress(host string, local net.IP) (string, int, error) {
	if s.cfg.NBDServer != "" {
		h, p, _ := net.SplitHostPort(s.cfg.NBDServer)
		n, _ := strconv.Atoi(p)
		return h, n, nil
	}
	var pick *net.TCPAddr
	for _, a := range s.nbd {
		if local != nil && a.IP.Equal(local) {
			pick = a
			break
		}
	}
	for _, a := range s.nbd {
		if pick == nil && (a.IP == nil || a.IP.IsUnspecified()) {
			pick = a
		}
	}
	if pick == nil && len(s.nbd) > 0 {
		pick = s.nbd[0]
	}
	if pick == nil {
		return "", 0, errors.New("the NBD server has no TCP listener: give --boot-nbd HOST:PORT")
	}
	return host, pick.Port, nil
}

// cmdline is the command line booting b for a client that reached us at host/local.
func (s *Server) cmdline(b *Boot, host string, local net.IP) (Cmdline, error) {
	h, p, err := s.nbdAddress(host, local)
	if err != nil {
		return Cmdline{}, err
	}
	return Cmdline{Host: h, Port: p, Export: exportOf(b), Root: b.Root, Append: s.cfg.Append}, nil
}
