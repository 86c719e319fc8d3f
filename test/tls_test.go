package test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/pki"
	"github.com/nbdroot/nbdroot/test/vm"
)

// TLS boots (docs/tls.md): the image carries the CA and the client's certificate, the
// server requires TLS and client certificates, the init negotiates TLS and hands the
// records to the kernel (kernel TLS) or to the keeper's relay; the keeper's reconnect after
// a server restart negotiates TLS again; and a capture of the forwarded connection holds
// not one byte of the root's data in clear text.

// canary is written to the root by the guest and must never cross the wire in clear text.
const canary = "TLS-CANARY-7f3a9c41e2d04b68"

// tlsPKI is a CA with a server certificate for the guests' server address and a client
// certificate named after the guests' MAC address.
func tlsPKI(t *testing.T) *pki.Set {
	return pki.New(t, "52:54:00:12:34:56", net.ParseIP(vm.GuestServerIP))
}

// tlsInitramfs is the seed's image with the client's TLS material (the init with TLS).
func tlsInitramfs(t *testing.T, e *vm.Env, p *pki.Set) string {
	return e.Initramfs(t, seedHooks, "--init", e.Tool("nbdroot-init-tls"),
		"--tls-ca", p.File, "--tls-cert", p.Client.CertFile, "--tls-key", p.Client.KeyFile)
}

// tlsServerArgs make nbdroot serve require TLS and a client certificate of p's CA.
func tlsServerArgs(p *pki.Set) []string {
	return []string{"--tls", "require", "--tls-cert", p.Server.CertFile, "--tls-key", p.Server.KeyFile, "--tls-ca", p.File}
}

// canaryScript writes the canary through the root and reads it back past the page cache.
const canaryScript = `ip link set lo up
i=0; while [ $i -lt 2000 ]; do echo "` + canary + `"; i=$((i+1)); done > /canary
sync; echo 3 > /proc/sys/vm/drop_caches
echo "CANARY-LINES $(grep -c ` + canary + ` /canary)"
`

var (
	ktlsTestOnce sync.Once
	ktlsTestPath string
	ktlsTestErr  error
)

// ktlsTestBinary is package ktls's test binary, static, for the guest: its kernel tests
// check the crypto_info layout against the guest kernel's TLS.
func ktlsTestBinary(t *testing.T, e *vm.Env) string {
	t.Helper()
	ktlsTestOnce.Do(func() {
		ktlsTestPath = filepath.Join(e.Work, "ktls.test")
		cmd := exec.Command("go", "test", "-c", "-o", ktlsTestPath, "github.com/nbdroot/nbdroot/nbdclient/ktls")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			ktlsTestErr = fmt.Errorf("go test -c: %v\n%s", err, out)
		}
	})
	if ktlsTestErr != nil {
		t.Fatal(ktlsTestErr)
	}
	return ktlsTestPath
}

// rootWith makes a root image whose /sbin/init is script, with extra files in /bin.
func rootWith(t *testing.T, script string, sizeMB int, bins map[string]string) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree")
	if err := vm.RootTree(tree, vm.RootOptions{Init: script}); err != nil {
		t.Fatal(err)
	}
	for name, src := range bins {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tree, "bin", name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	img := filepath.Join(t.TempDir(), "root.img")
	if err := vm.MkfsExt4(img, tree, sizeMB, 0); err != nil {
		t.Fatal(err)
	}
	return img
}

// assertNoPlaintext checks a capture: the NBD greeting (sent before STARTTLS) is there, so
// the capture saw the connection; the canary and the root's own marker are not, in either
// direction.
func assertNoPlaintext(t *testing.T, toServer, fromServer []byte) {
	t.Helper()
	t.Logf("capture: %d bytes to the server, %d from it", len(toServer), len(fromServer))
	if !bytes.Contains(fromServer, []byte("NBDMAGIC")) {
		t.Errorf("the capture does not hold the server's greeting: it did not see the connection")
	}
	for _, s := range []string{canary, vm.Marker} {
		for dir, b := range map[string][]byte{"to the server": toServer, "from the server": fromServer} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%q crossed the wire in clear text %s", s, dir)
			}
		}
	}
	if len(toServer) < 2000*len(canary) {
		t.Errorf("only %d bytes went to the server: the canary cannot have been written through it", len(toServer))
	}
}

// TestTLSBoot boots with kernel TLS: the guest kernel's TLS passes the RFC 8448 vectors
// (package ktls's kernel tests, run in the guest), the root is read and written over TLS
// with the nbd driver on the socket, the server is killed and restarted under a
// write-verify loop and the keeper negotiates TLS again, and the capture holds no plaintext.
func TestTLSBoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	p := tlsPKI(t)
	script := canaryScript + `NBDROOT_KTLS_REQUIRED=1 /bin/ktls.test -test.run Kernel -test.v
echo "KTLS-EXIT $?"
` + checksumLoop(6)
	img := rootWith(t, script, 96, map[string]string{"ktls.test": ktlsTestBinary(t, e)})
	args := append([]string{"--export", "root=" + img}, tlsServerArgs(p)...)
	srv := e.StartServer(t, 0, args...)
	capture := vm.StartCapture(t, srv.Port)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   tlsInitramfs(t, e, p),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw console=ttyS0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + 3*time.Minute,
	})
	v.Expect(`nbd: TLS 1\.3 TLS_\w+, kernel TLS`, bootTimeout)
	v.Expect(keeperLine(`keeping /dev/nbd0 connected to \S+ \(netlink, 1 connection\(s\), TLS,`), 30*time.Second)
	v.Expect(`CANARY-LINES 2000`, bootTimeout)
	v.Expect(`KTLS-EXIT 0`, 2*time.Minute)
	for _, test := range []string{"TestKernelRFC8448", "TestKernelControlRecord", "TestKernelSuites/TLS_AES_128_GCM_SHA256", "TestKernelSuites/TLS_AES_256_GCM_SHA384", "TestKernelSuites/TLS_CHACHA20_POLY1305_SHA256"} {
		v.Expect(`--- PASS: `+regexp.QuoteMeta(test)+` `, time.Second)
	}
	_, off := v.ExpectAfter(0, `KEEPER-ITER 3\b`, 2*time.Minute)
	srv.Kill()
	_, off = v.ExpectAfter(off, keeperLine(`nbd0: .*reconnecting to`), 60*time.Second)
	time.Sleep(3 * time.Second)
	srv = e.StartServer(t, srv.Port, args...)
	m, _ := v.ExpectAfter(off, keeperLine(`nbd0: reconnected to \S+ after (\S+)`), 90*time.Second)
	t.Logf("keeper: reconnected over TLS after %s", m[1])
	done, _ := v.ExpectAfter(off, `KEEPER-DONE errors=(\d+) mismatches=(\d+)`, 3*time.Minute)
	if done[1] != "0" || done[2] != "0" {
		t.Errorf("write-verify loop across the restart: %s I/O error(s), %s mismatch(es)", done[1], done[2])
	}
	out := v.Console()
	if strings.Contains(out, "I/O error") {
		t.Errorf("the kernel reported I/O errors:\n%s", grepLines(out, "error"))
	}
	t.Logf("timeline:\n%s", timeline(out))
	t.Logf("kernel and keeper lines:\n%s", grepLines(out, "nbd0", "keeper", "TLS"))
	if err := v.Wait(60 * time.Second); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
	if !strings.Contains(srv.Log(), "TLS") {
		t.Errorf("the server did not log a TLS client:\n%s", srv.Log())
	}
	toServer, fromServer := capture.Stop(t)
	assertNoPlaintext(t, toServer, fromServer)
}

// TestTLSRelayBoot boots with nbdroot.ktls=0: the keeper relays the records (as on a
// kernel without CONFIG_TLS), says so on the timeline, restarts its relays after a server
// restart, and nothing crosses the wire in clear text either.
func TestTLSRelayBoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	p := tlsPKI(t)
	img := rootWith(t, canaryScript+checksumLoop(6), 64, nil)
	args := append([]string{"--export", "root=" + img}, tlsServerArgs(p)...)
	srv := e.StartServer(t, 0, args...)
	capture := vm.StartCapture(t, srv.Port)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   tlsInitramfs(t, e, p),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rw nbdroot.ktls=0 nbdroot.connections=2 console=ttyS0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + 3*time.Minute,
	})
	v.Expect(`nbd: TLS 1\.3 TLS_\w+, relayed by the keeper \(nbdroot\.ktls=0\)`, bootTimeout)
	v.Expect(`nbd +\d+\.\d+s +/dev/nbd0 ← \S+ \(.*, 2 connection\(s\), TLS relayed by the keeper\)`, 30*time.Second)
	v.Expect(keeperLine(`keeping /dev/nbd0 connected to \S+ \(netlink, 2 connection\(s\), relaying TLS for 2,`), 30*time.Second)
	v.Expect(`CANARY-LINES 2000`, bootTimeout)
	_, off := v.ExpectAfter(0, `KEEPER-ITER 3\b`, 2*time.Minute)
	srv.Kill()
	_, off = v.ExpectAfter(off, keeperLine(`nbd0: .*reconnecting to`), 60*time.Second)
	time.Sleep(3 * time.Second)
	srv = e.StartServer(t, srv.Port, args...)
	m, _ := v.ExpectAfter(off, keeperLine(`nbd0: reconnected to \S+ after (\S+) \(\d+ attempt\(s\), (\d+) socket`), 90*time.Second)
	t.Logf("keeper: reconnected after %s, %s socket(s) through new relays", m[1], m[2])
	done, _ := v.ExpectAfter(off, `KEEPER-DONE errors=(\d+) mismatches=(\d+)`, 3*time.Minute)
	if done[1] != "0" || done[2] != "0" {
		t.Errorf("write-verify loop across the restart: %s I/O error(s), %s mismatch(es)", done[1], done[2])
	}
	out := v.Console()
	t.Logf("timeline:\n%s", timeline(out))
	t.Logf("kernel and keeper lines:\n%s", grepLines(out, "nbd0", "keeper", "TLS"))
	if err := v.Wait(60 * time.Second); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
	toServer, fromServer := capture.Stop(t)
	assertNoPlaintext(t, toServer, fromServer)
}

// TestTLSBootFromPeers boots from nbd-server and nbdkit requiring TLS with client
// certificates (GnuTLS on the server side, its session tickets included), with kernel TLS.
func TestTLSBootFromPeers(t *testing.T) {
	e := needEnv(t)
	for _, kind := range []string{"nbd-server", "nbdkit"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			p := tlsPKI(t)
			img := e.RootImage(t, vm.RootOptions{})
			var port int
			switch kind {
			case "nbd-server":
				port = startPeer(t, kind, img, "force_tls = true", "certfile = "+p.Server.CertFile,
					"keyfile = "+p.Server.KeyFile, "cacertfile = "+p.File)
			case "nbdkit":
				port = startPeer(t, kind, img, "--tls=require", "--tls-certificates", p.Dir, "--tls-verify-peer")
			}
			v := vm.Start(t, vm.Options{
				Kernel:   e.Vmlinuz(),
				Initrd:   tlsInitramfs(t, e, p),
				Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 nbd_export=root root=/dev/nbd0 console=ttyS0",
				Forwards: map[int]int{10809: port},
				Timeout:  bootTimeout + time.Minute,
			})
			v.Expect(`nbd: TLS 1\.3 TLS_\w+, kernel TLS`, bootTimeout)
			assertRootMounted(t, v, "/dev/nbd0", "ext4")
			if err := v.Wait(30 * time.Second); err != nil {
				t.Errorf("guest did not power off cleanly: %v", err)
			}
		})
	}
}

// TestTLSFailures: a wrong CA, a server certificate without the guests' server address or
// outside its validity, and a server that refuses STARTTLS (nbdroot serve without TLS
// answers NBD_REP_ERR_POLICY) each stop the boot in the rescue shell with a line that
// names the server, the reason and the parameter or file to check — never a clear-text
// root. The image requires TLS because it carries a CA (no nbdroot.tls= given).
func TestTLSFailures(t *testing.T) {
	e := needEnv(t)
	guest := net.ParseIP(vm.GuestServerIP)
	// One CA and one image for all cases: the servers' certificates make the difference.
	p := tlsPKI(t)
	initrd := tlsInitramfs(t, e, p)
	const server = `NBD server 10\.0\.2\.100:10809, the default export: TLS: `
	for _, tc := range []struct {
		name   string
		server func(t *testing.T, p *pki.Set) []string // nil: no TLS
		append string
		want   string
		param  string
	}{
		{"wrong CA", func(t *testing.T, p *pki.Set) []string { return tlsServerArgs(tlsPKI(t)) }, "",
			server + `the server's certificate is not signed by the configured CA`,
			`the image's CA /etc/nbdroot/tls/ca\.pem \(nbdroot initramfs --tls-ca\)`},
		{"wrong name", func(t *testing.T, p *pki.Set) []string {
			c := p.Issue(t, "localhost", pki.Localhost)
			return []string{"--tls", "require", "--tls-cert", c.CertFile, "--tls-key", c.KeyFile, "--tls-ca", p.File}
		}, "nbdroot.tlsname=nbd.lab",
			server + `the server's certificate is not for "nbd\.lab" \(it names localhost, 127\.0\.0\.1, ::1\)`,
			`nbdroot\.tlsname=nbd\.lab`},
		{"expired", func(t *testing.T, p *pki.Set) []string {
			c := p.Issue(t, "expired", pki.Options{CommonName: "expired", IPs: []net.IP{guest},
				NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
			return []string{"--tls", "require", "--tls-cert", c.CertFile, "--tls-key", c.KeyFile, "--tls-ca", p.File}
		}, "",
			server + `the server's certificate is valid from .* to .*, and this client's clock says`,
			`nbdroot\.tls \(unset: required, the image carries a CA\)`},
		{"STARTTLS refused", nil, "",
			server + `the server does not do TLS: NBD_REP_ERR_POLICY .*nbdroot never goes on in clear text`,
			`nbdroot\.tls \(unset: required, the image carries a CA\)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			img := e.RootImage(t, vm.RootOptions{})
			args := []string{"--export", "root=" + img}
			if tc.server != nil {
				args = append(args, tc.server(t, p)...)
			}
			srv := e.StartServer(t, 0, args...)
			v := vm.Start(t, vm.Options{
				Kernel:   e.Vmlinuz(),
				Initrd:   initrd,
				Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 nbdroot.connect=8 console=ttyS0 " + tc.append,
				Forwards: map[int]int{10809: srv.Port},
				Timeout:  bootTimeout + time.Minute,
			})
			expectRescue(t, v, "nbd", tc.want, `parameter: `+tc.param)
			if vm.Match(v.Console(), vm.Marker) {
				t.Error("the root was mounted")
			}
			if strings.Contains(srv.Log(), `closed export "root"`) {
				t.Errorf("the server served the export:\n%s", srv.Log())
			}
			v.Kill()
		})
	}
}
