package netboot

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/nbdserver"
	"github.com/nbdroot/nbdroot/netboot/tftp"
)

// testServer is a Server with exports: "root" (the default; the ext4 package's test image,
// whose /boot has 6.1.0-18-amd64), "broken" (a corrupt image), "noboot" (an ext4 image
// without kernels), and its NBD listener at 127.0.0.1:10809.
func testServer(t *testing.T, cfg Config) (*Server, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	imgs := map[string]string{}
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name+".img")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		imgs[name] = p
	}
	root := gunzip(t, "ext4/testdata/ext4-1k.img.gz")
	write("root", root)
	broken := bytes.Clone(root)
	binary.LittleEndian.PutUint32(broken[1024+0x28:], 0) // no inodes per group
	write("broken", broken)
	noboot := gunzip(t, "ext4/testdata/fuzz.img.gz") // its /boot pair is vmlinuz-1; remove it from view:
	idx := bytes.Index(noboot, []byte("nbdroot.img-1"))
	copy(noboot[idx:], "nbdroot.img-X")
	write("noboot", noboot)
	if cfg.Log == nil {
		cfg.Log = log.New(io.Discard, "", 0)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.Reload([]nbdserver.Export{
		{Name: "root", Path: imgs["root"], Default: true},
		{Name: "broken", Path: imgs["broken"]},
		{Name: "noboot", Path: imgs["noboot"]},
	})
	s.nbd = []*net.TCPAddr{{IP: net.IPv4(127, 0, 0, 1), Port: 10809}}
	return s, imgs
}

func get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTP: scripts name the address the client used and the NBD listener's port; kernels
// come out of the image; bad paths and bad exports fail alone.
func TestHTTP(t *testing.T) {
	var logs bytes.Buffer
	s, _ := testServer(t, Config{HTTP: "127.0.0.1:0", Append: "console=ttyS0", Log: log.New(&logs, "", 0)})
	srv := httptest.NewServer(s)
	defer srv.Close()
	tests := []struct {
		name, path, host string
		wantCode         int
		wantBody         []string
	}{
		{name: "script through port forwarding", path: "/root/boot.ipxe", host: "10.0.2.100:8080", wantCode: 200, wantBody: []string{
			"#!ipxe\n",
			"kernel http://10.0.2.100:8080/root/vmlinuz-6.1.0-18-amd64 initrd=nbdroot.img-6.1.0-18-amd64 ip=::::::dhcp BOOTIF=01-${netX/mac:hexhyp} nbd_server=10.0.2.100:10809 nbd_export=root root=/dev/nbd0 console=ttyS0\n",
			"initrd http://10.0.2.100:8080/root/nbdroot.img-6.1.0-18-amd64\n",
			"boot\n"}},
		{name: "default export", path: "/boot.ipxe", host: "nbd.lab.test", wantCode: 200, wantBody: []string{
			"kernel http://nbd.lab.test/vmlinuz-6.1.0-18-amd64 initrd=nbdroot.img-6.1.0-18-amd64 ip=::::::dhcp BOOTIF=01-${netX/mac:hexhyp} nbd_server=nbd.lab.test:10809 root=/dev/nbd0 console=ttyS0\n"}},
		{name: "IPv6 host", path: "/root/boot.ipxe", host: "[fd00::1]:8080", wantCode: 200, wantBody: []string{"nbd_server=[fd00::1]:10809 ", "http://[fd00::1]:8080/root/"}},
		{name: "kernel", path: "/root/vmlinuz-6.1.0-18-amd64", wantCode: 200, wantBody: []string{"kernel 6.1\n"}},
		{name: "initramfs of the default export", path: "/nbdroot.img-6.1.0-18-amd64", wantCode: 200, wantBody: []string{"initramfs 6.1\n"}},
		{name: "vmlinuz alias", path: "/root/vmlinuz", wantCode: 200, wantBody: []string{"kernel 6.1\n"}},
		{name: "initrd alias", path: "/root/initrd", wantCode: 200, wantBody: []string{"initramfs 6.1\n"}},
		{name: "other file of the image", path: "/root/hello.txt", wantCode: 404, wantBody: []string{"has no boot file \"hello.txt\""}},
		{name: "dot-dot", path: "/root/../root/boot.ipxe", wantCode: 400, wantBody: []string{`".." segment`}},
		{name: "escaped dot-dot", path: "/%2e%2e/etc/passwd", wantCode: 400, wantBody: []string{`".." segment`}},
		{name: "double slash", path: "/root//boot.ipxe", wantCode: 400, wantBody: []string{"empty path segment"}},
		{name: "unknown export", path: "/nope/boot.ipxe", wantCode: 404, wantBody: []string{`export "nope": no such export`}},
		{name: "corrupt image", path: "/broken/boot.ipxe", wantCode: 500, wantBody: []string{`export "broken"`, "s_inodes_per_group"}},
		{name: "no kernel", path: "/noboot/boot.ipxe", wantCode: 500, wantBody: []string{`export "noboot"`, "no kernel with a matching nbdroot initramfs", "vmlinuz-1 has no nbdroot.img-1"}},
		{name: "bad Host header", path: "/root/boot.ipxe", host: "a_b:80", wantCode: 400, wantBody: []string{"Host header"}},
		{name: "still serving after all that", path: "/root/boot.ipxe", wantCode: 200, wantBody: []string{"nbd_server=127.0.0.1:10809"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, body := get(t, srv.URL+tt.path, tt.host)
			if code != tt.wantCode {
				t.Errorf("status %d, want %d: %s", code, tt.wantCode, body)
			}
			for _, w := range tt.wantBody {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
		})
	}
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/root/boot.ipxe", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 405 {
		t.Errorf("POST: %v %v", resp, err)
	}
	if !strings.Contains(logs.String(), `netboot: http 127.0.0.1 /broken/boot.ipxe: export "broken"`) {
		t.Errorf("log lacks the broken export's line:\n%s", logs.String())
	}
}

// TestNBDAddress picks the NBD listener on the address the client reached, or --boot-nbd.
func TestNBDAddress(t *testing.T) {
	s := &Server{nbd: []*net.TCPAddr{{IP: net.IPv4(10, 0, 0, 1), Port: 1001}, {IP: net.IPv4zero, Port: 1002}, {IP: net.IPv4(10, 0, 0, 2), Port: 1003}}}
	for _, c := range []struct {
		local net.IP
		want  int
	}{{net.IPv4(10, 0, 0, 2), 1003}, {net.IPv4(10, 0, 0, 1), 1001}, {net.IPv4(192, 168, 1, 1), 1002}, {nil, 1002}} {
		if _, p, _ := s.nbdAddress("h", c.local); p != c.want {
			t.Errorf("local %v: port %d, want %d", c.local, p, c.want)
		}
	}
	s.cfg.NBDServer = "nbd.example:20000"
	if h, p, _ := s.nbdAddress("h", nil); h != "nbd.example" || p != 20000 {
		t.Errorf("--boot-nbd: %s:%d", h, p)
	}
	if _, _, err := (&Server{}).nbdAddress("h", nil); err == nil {
		t.Error("no TCP listener and no --boot-nbd: no error")
	}
}

// TestTFTPNamespace serves the chain files, pxelinux.cfg and kernels over TFTP and refuses
// everything else.
func TestTFTPNamespace(t *testing.T) {
	ipxe := t.TempDir()
	os.WriteFile(filepath.Join(ipxe, "undionly.kpxe"), []byte("undionly"), 0o644)
	os.WriteFile(filepath.Join(ipxe, "snponly.efi"), []byte("snponly"), 0o644)
	plx := t.TempDir()
	os.WriteFile(filepath.Join(plx, "pxelinux.0"), []byte("pxelinux"), 0o644)
	os.WriteFile(filepath.Join(plx, "ldlinux.c32"), []byte("ldlinux"), 0o644)
	os.WriteFile(filepath.Join(plx, "secret"), []byte("not served"), 0o644)
	s, _ := testServer(t, Config{TFTP: "127.0.0.1:0", IPXEDir: ipxe, PXELinuxDir: plx, Append: "console=ttyS0"})
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts := &tftp.Server{Handler: s.openTFTP, Timeout: 500 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ts.Serve(ctx, conn); close(done) }()
	defer func() { cancel(); <-done }()
	addr := conn.LocalAddr().(*net.UDPAddr)

	tests := []struct {
		file     string
		want     string // content (prefix for generated files)
		wantCode uint16 // error code instead
	}{
		{file: "undionly.kpxe", want: "undionly"},
		{file: "/snponly.efi", want: "snponly"},
		{file: "pxelinux.0", want: "pxelinux"},
		{file: "ldlinux.c32", want: "ldlinux"},
		{file: "pxelinux.cfg/01-52-54-00-12-34-56", want: "# nbdroot: the default export (\"root\")"},
		{file: "pxelinux.cfg/default", want: "# nbdroot"},
		{file: "root/vmlinuz-6.1.0-18-amd64", want: "kernel 6.1\n"},
		{file: "nbdroot.img-6.1.0-18-amd64", want: "initramfs 6.1\n"},
		{file: "secret", wantCode: tftp.ErrNotFound},
		{file: "../../etc/passwd", wantCode: tftp.ErrAccess},
		{file: "root/../../etc/passwd", wantCode: tftp.ErrAccess},
		{file: "root\\..\\x", wantCode: tftp.ErrAccess},
		{file: "root/hello.txt", wantCode: tftp.ErrNotFound},
		{file: "noboot/vmlinuz-1", wantCode: tftp.ErrUndefined},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := tftpGet(t, addr, tt.file)
			if tt.wantCode != 0 || err != nil {
				var te *tftp.Error
				if !errors.As(err, &te) || te.Code != tt.wantCode {
					t.Fatalf("%q: %v, want TFTP error %d", got, err, tt.wantCode)
				}
				return
			}
			if !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	cfg, _ := tftpGet(t, addr, "pxelinux.cfg/default")
	if !strings.Contains(cfg, "append initrd=nbdroot.img-6.1.0-18-amd64 ip=::::::dhcp nbd_server=127.0.0.1:10809 root=/dev/nbd0 console=ttyS0\n") {
		t.Errorf("pxelinux.cfg:\n%s", cfg)
	}
}

// tftpGet fetches a file with a minimal client (blksize 1428).
func tftpGet(t *testing.T, server *net.UDPAddr, name string) (string, error) {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := append([]byte{0, 1}, name+"\x00octet\x00blksize\x001428\x00"...)
	c.WriteToUDP(req, server)
	var out []byte
	buf := make([]byte, 2000)
	for {
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			return string(out), err
		}
		p := buf[:n]
		switch binary.BigEndian.Uint16(p) {
		case 5:
			return string(out), &tftp.Error{Code: binary.BigEndian.Uint16(p[2:]), Message: string(p[4:])}
		case 6:
			c.WriteToUDP([]byte{0, 4, 0, 0}, from)
		case 3:
			out = append(out, p[4:]...)
			c.WriteToUDP([]byte{0, 4, p[2], p[3]}, from)
			if n-4 < 1428 {
				return string(out), nil
			}
		}
	}
}

func TestNewConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg      Config
		wantFlag string
	}{
		{Config{HTTP: "8080"}, "--http"},
		{Config{TFTP: "not-an-ip"}, "--tftp"},
		{Config{Loader: "grub"}, "--pxe-loader"},
		{Config{NBDServer: "host"}, "--boot-nbd"},
		{Config{BootURL: "ftp://x"}, "--boot-url"},
		{Config{BootExport: "a b"}, "--boot-export"},
		{Config{Sources: map[string]string{"root": "/nonexistent"}}, "--boot-source"},
		{Config{DHCP: "maybe", DHCPInterface: "lo"}, "--dhcp"},
		{Config{DHCP: DHCPProxy, TFTP: ":69", HTTP: ":80"}, "--dhcp"},
		{Config{DHCP: DHCPProxy, DHCPInterface: "lo", HTTP: ":80"}, "--dhcp"},
		{Config{DHCP: DHCPProxy, DHCPInterface: "lo", TFTP: ":69"}, "--dhcp"},
		{Config{DHCP: DHCPProxy, DHCPInterface: "lo", TFTP: ":69", HTTP: ":80", IPXEDir: "/nonexistent"}, "--ipxe-dir"},
		{Config{DHCPInterface: "lo"}, "--dhcp-interface"},
	} {
		_, err := New(tt.cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Flag != tt.wantFlag {
			t.Errorf("New(%+v) = %v, want an error naming %s", tt.cfg, err, tt.wantFlag)
		}
	}
}

// lockedBuffer is a log both the server and the test touch.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestWithNBDServer runs netboot as the NBD server's companion (nbdserver.Run, as
// `nbdroot serve` does): the script names the NBD listener's real port, and everything
// stops with the server.
func TestWithNBDServer(t *testing.T) {
	img := filepath.Join(t.TempDir(), "root.img")
	os.WriteFile(img, gunzip(t, "ext4/testdata/ext4-1k.img.gz"), 0o644)
	var logs lockedBuffer
	nb, err := New(Config{HTTP: "127.0.0.1:0", TFTP: "127.0.0.1:0", Log: log.New(&logs, "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- nbdserver.Run(ctx, nbdserver.Options{Listen: []string{"127.0.0.1:0"}, Exports: []string{"root=" + img}, Log: &logs, Companion: nb}, nil)
	}()
	nbdRe := regexp.MustCompile(`listening on 127\.0\.0\.1:(\d+)`)
	httpRe := regexp.MustCompile(`HTTP boot scripts at http://(\S+)/EXPORT`)
	var nbdPort, httpAddr string
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && nbdPort == ""; time.Sleep(10 * time.Millisecond) {
		if m := nbdRe.FindStringSubmatch(logs.String()); m != nil {
			nbdPort = m[1]
			httpAddr = httpRe.FindStringSubmatch(logs.String())[1]
		}
	}
	if nbdPort == "" {
		cancel()
		t.Fatalf("the server did not start:\n%s", logs.String())
	}
	code, body := get(t, "http://"+httpAddr+"/root/boot.ipxe", "")
	if code != 200 || !strings.Contains(body, "nbd_server=127.0.0.1:"+nbdPort+" ") {
		t.Errorf("script (%d) does not name the NBD listener's port %s:\n%s", code, nbdPort, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + httpAddr + "/root/boot.ipxe"); err == nil {
		t.Error("the HTTP server still answers after the NBD server stopped")
	}
}
