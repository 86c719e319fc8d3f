//go:build linux

package test

// The network boot tests: `nbdroot serve` boots clients from nothing but their NIC's boot
// ROM (QEMU's iPXE). The kernel and initramfs live in the root image's /boot, where
// `nbdroot serve` reads them without mounting anything.
//
//   - HTTP: QEMU's user network hands iPXE an http:// boot file (slirp's DHCP); iPXE reaches
//     our --http listener through a forwarded port and boots the script we wrote.
//   - ProxyDHCP and TFTP in a lab: the lab's own DHCP server gives the address, our
//     proxyDHCP the boot file; pxelinux loads the kernel over TFTP (the seed's way), or iPXE
//     fetches the script over HTTP.
//   - Full DHCP: we are the lab's only DHCP server.

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// bootImage builds a busybox root whose /boot holds the test kernel and an nbdroot
// initramfs as /boot/vmlinuz-VERSION and /boot/nbdroot.img-VERSION (what `nbdroot install`
// kernel hooks write). The test gets its own copy.
func bootImage(t *testing.T, e *vm.Env) (img, version string) {
	t.Helper()
	return bootImageWith(t, e, vm.RootOptions{})
}

// bootImageWith is bootImage with the root's options (its init script).
func bootImageWith(t *testing.T, e *vm.Env, o vm.RootOptions) (img, version string) {
	t.Helper()
	real, err := filepath.EvalSymlinks(e.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	version = filepath.Base(real)
	tree := filepath.Join(t.TempDir(), "tree")
	if err := vm.RootTree(tree, o); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(tree, "boot"), 0o755)
	for src, dst := range map[string]string{e.Vmlinuz(): "vmlinuz-" + version, e.Initramfs(t, seedHooks): "nbdroot.img-" + version} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, "boot", dst), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img = filepath.Join(t.TempDir(), "root.img")
	if err := vm.MkfsExt4(img, tree, 128, 0); err != nil {
		t.Fatal(err)
	}
	return img, version
}

var httpLine = regexp.MustCompile(`netboot: HTTP boot scripts at http://(\S+)/EXPORT/boot\.ipxe`)

// httpPort is the port of the server's --http listener, from its log.
func httpPort(t *testing.T, srv *vm.Server) int {
	t.Helper()
	m := httpLine.FindStringSubmatch(srv.Log())
	if m == nil {
		t.Fatalf("no HTTP line in the server log:\n%s", srv.Log())
	}
	_, p, _ := net.SplitHostPort(m[1])
	n, _ := strconv.Atoi(p)
	return n
}

// expectNetboot checks that the kernel ran with the command line our script or
// configuration wrote (as the init's parser reads it: the NBD server's port, the export,
// the root, BOOTIF from iPXE or pxelinux), then that the root is the NBD device.
func expectNetboot(t *testing.T, v *vm.VM, version, export string, port int) {
	t.Helper()
	expectNetbootRoot(t, v, version, export, port, "/dev/nbd0")
}

// expectNetbootRoot is expectNetboot with the root on dev.
func expectNetbootRoot(t *testing.T, v *vm.VM, version, export string, port int, dev string) {
	t.Helper()
	m := v.Expect(`Command line: (.*initrd=\S*nbdroot\.img-`+regexp.QuoteMeta(version)+`.*)\r?\n`, bootTimeout)
	plan, err := bootparam.Parse(m[1])
	if err != nil {
		t.Fatalf("the kernel's command line %q: %v", m[1], err)
	}
	if plan.NBD.Port != port || plan.NBD.Export != export || plan.Root.Device != dev || !strings.HasPrefix(plan.BootIF, "52:54:00:4e:42:0") {
		t.Errorf("command line %q: server port %d, export %q, root %s, BOOTIF %q; want port %d, export %q, root %s", m[1],
			plan.NBD.Port, plan.NBD.Export, plan.Root.Device, plan.BootIF, port, export, dev)
	}
	assertRootMounted(t, v, dev, "ext4")
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}

// TestHTTPBoot: QEMU's iPXE gets http://10.0.2.100:PORT/root/boot.ipxe from slirp's DHCP,
// reaches our HTTP listener through a forwarded port, and boots the kernel and initramfs
// read from the image's /boot with a command line naming the address it used.
func TestHTTPBoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img, version := bootImage(t, e)
	srv := e.StartServer(t, 0, "--export", "root="+img, "--http", "127.0.0.1:0", "--boot-append", "console=ttyS0")
	port := httpPort(t, srv)
	v := vm.Start(t, vm.Options{
		PXE: true, BootFile: fmt.Sprintf("http://%s:%d/root/boot.ipxe", vm.GuestServerIP, port),
		MACs:     []string{"52:54:00:4e:42:01"},
		Forwards: map[int]int{port: port, srv.Port: srv.Port},
		Timeout:  bootTimeout + 2*time.Minute,
	})
	expectNetboot(t, v, version, "root", srv.Port)
	if !strings.Contains(srv.Log(), "netboot: http 127.0.0.1 /root/vmlinuz-"+version) {
		t.Errorf("the kernel did not come from our HTTP server:\n%s", srv.Log())
	}
}

// TestHTTPBootPartition: the root file system (with its /boot) is partition 1 of an MBR
// disk image; the script says root=/dev/nbd0p1.
func TestHTTPBootPartition(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	fsImg, version := bootImage(t, e)
	fsys, err := os.ReadFile(fsImg)
	if err != nil {
		t.Fatal(err)
	}
	const start = 1 << 20
	disk := make([]byte, start+len(fsys))
	copy(disk[start:], fsys)
	entry := disk[446:462] // partition 1: Linux, from 1 MiB to the end
	entry[4] = 0x83
	binary.LittleEndian.PutUint32(entry[8:], start/512)
	binary.LittleEndian.PutUint32(entry[12:], uint32(len(fsys)/512))
	disk[510], disk[511] = 0x55, 0xAA
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, disk, 0o644); err != nil {
		t.Fatal(err)
	}
	srv := e.StartServer(t, 0, "--export", "root="+img, "--http", "127.0.0.1:0", "--boot-append", "console=ttyS0")
	port := httpPort(t, srv)
	v := vm.Start(t, vm.Options{
		PXE: true, BootFile: fmt.Sprintf("http://%s:%d/boot.ipxe", vm.GuestServerIP, port),
		MACs:     []string{"52:54:00:4e:42:04"},
		Forwards: map[int]int{port: port, srv.Port: srv.Port},
		Timeout:  bootTimeout + 2*time.Minute,
	})
	expectNetbootRoot(t, v, version, "", srv.Port, "/dev/nbd0p1")
}

// labBoot runs a PXE guest in a lab where our server answers DHCP with args.
func labBoot(t *testing.T, e *vm.Env, dhcpServer bool, args ...string) (*vm.Server, *vm.VM, string) {
	t.Helper()
	netlab.Need(t)
	img, version := bootImage(t, e)
	lab := netlab.New(t)
	lab.StartRouterAdvertiser(t)
	if dhcpServer {
		// The network's own DHCP server: addresses only, no boot file.
		lab.StartDHCP(t, netlab.DHCPConfig{Router: net.ParseIP(netlab.ServerIP)})
	}
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), append([]string{"--export", "root=" + img, "--boot-append", "console=ttyS0",
		"--tftp", netlab.ServerIP, "--dhcp-interface", netlab.Bridge}, args...)...)
	tap := lab.AddTap(t)
	v := vm.Start(t, vm.Options{
		PXE: true, NoNet: true, Wrapper: lab.Wrapper(),
		ExtraArgs: netlab.PXENIC("n0", tap, "52:54:00:4e:42:02"),
		Timeout:   bootTimeout + 2*time.Minute,
	})
	return srv, v, version
}

// TestProxyDHCPPXELinux: beside the lab's DHCP server, our proxyDHCP sends the BIOS ROM to
// pxelinux.0 over TFTP; pxelinux reads our generated configuration and loads the kernel and
// initramfs over TFTP from the image's /boot — the seed's flow, with nothing copied by hand.
func TestProxyDHCPPXELinux(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	srv, v, version := labBoot(t, e, true, "--dhcp", "proxy", "--pxe-loader", "pxelinux")
	v.Expect(`BOOT_IMAGE=vmlinuz-`+regexp.QuoteMeta(version), bootTimeout)
	expectNetboot(t, v, version, "", srv.Port)
	for _, want := range []string{`dhcp 52:54:00:4e:42:02 (BIOS, iPXE) DISCOVER → OFFER (no address) file "pxelinux.0"`,
		`tftp 10.77.0.`, `"pxelinux.0": sent`, `"vmlinuz-` + version + `": sent`} {
		if !strings.Contains(srv.Log(), want) {
			t.Errorf("server log lacks %q:\n%s", want, srv.Log())
		}
	}
}

// TestProxyDHCPIPXE: beside the lab's DHCP server, our proxyDHCP (offer on 67, ack on
// 4011) hands the iPXE ROM the HTTP script URL.
func TestProxyDHCPIPXE(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	srv, v, version := labBoot(t, e, true, "--dhcp", "proxy", "--http", netlab.ServerIP+":0")
	expectNetboot(t, v, version, "", srv.Port)
	if !regexp.MustCompile(`dhcp 52:54:00:4e:42:02 \(BIOS, iPXE\) DISCOVER → OFFER \(no address\) file "http://10\.77\.0\.1:\d+/boot\.ipxe"`).MatchString(srv.Log()) {
		t.Errorf("no proxy offer with the script URL in the log:\n%s", srv.Log())
	}
}

// TestFullDHCP: in a lab without another DHCP server, ours hands out the address too, to
// the ROM and then to the init.
func TestFullDHCP(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	srv, v, version := labBoot(t, e, false, "--dhcp", "full", "--dhcp-range", "10.77.0.150-10.77.0.160", "--http", netlab.ServerIP+":0")
	expectNetboot(t, v, version, "", srv.Port)
	if !strings.Contains(srv.Log(), "DISCOVER → OFFER 10.77.0.150") {
		t.Errorf("no full-mode offer in the log:\n%s", srv.Log())
	}
}

// ovmf is Debian's OVMF firmware image (x86-64 UEFI).
const ovmf = "/usr/share/ovmf/OVMF.fd"

// TestUEFIHTTPBoot: the same HTTP boot under UEFI firmware (OVMF): QEMU's EFI iPXE (client
// architecture 7) fetches the script, and the kernel boots through its EFI stub with the
// initramfs iPXE registered (initrd=NAME on the command line).
func TestUEFIHTTPBoot(t *testing.T) {
	e := needEnv(t)
	if _, err := os.Stat(ovmf); err != nil {
		if vm.RequirePeers() {
			t.Fatalf("%s: %v (scripts/deps.sh installs ovmf)", ovmf, err)
		}
		t.Skipf("no UEFI firmware: %v", err)
	}
	t.Parallel()
	img, version := bootImage(t, e)
	srv := e.StartServer(t, 0, "--export", "root="+img, "--http", "127.0.0.1:0", "--boot-append", "console=ttyS0")
	port := httpPort(t, srv)
	v := vm.Start(t, vm.Options{
		PXE: true, BootFile: fmt.Sprintf("http://%s:%d/root/boot.ipxe", vm.GuestServerIP, port),
		MACs:      []string{"52:54:00:4e:42:03"},
		Forwards:  map[int]int{port: port, srv.Port: srv.Port},
		ExtraArgs: []string{"-bios", ovmf},
		Timeout:   bootTimeout + 2*time.Minute,
	})
	v.Expect(`EFI v\d`, bootTimeout)
	expectNetboot(t, v, version, "root", srv.Port)
}
