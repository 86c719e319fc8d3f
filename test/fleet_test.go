//go:build linux

package test

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// docBlock returns the first code block after marker in a file of the checkout.
func docBlock(t *testing.T, file, marker string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo(t), file))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), marker)
	if !ok {
		t.Fatalf("%s has no %q", file, marker)
	}
	_, rest, ok = strings.Cut(rest, "```\n")
	block, _, closed := strings.Cut(rest, "\n```")
	if !ok || !closed {
		t.Fatalf("%s: no code block after %q", file, marker)
	}
	return block + "\n"
}

// TestFleetDnsmasq: docs/fleet.md's dnsmasq configuration, as the network's DHCP server,
// boots its example client: dnsmasq tells QEMU's iPXE ROM (user class iPXE) the client's
// own script URL, nbdroot serve --http boots that client's export, and the initramfs's DHCP
// gets the client's fixed address and host name (option 12), which becomes the machine's
// host name. Only the addresses change: the lab's 10.77.0.0/24 for the example's
// 10.0.0.0/24; dnsmasq gets the harness's own flags (no DNS, its lease file, the lab's
// bridge).
func TestFleetDnsmasq(t *testing.T) {
	e := needEnv(t)
	netlab.Need(t)
	needTools(t, "dnsmasq")
	t.Parallel()
	conf := strings.ReplaceAll(docBlock(t, "docs/fleet.md", "**dnsmasq**"), "10.0.0.", "10.77.0.")
	m := regexp.MustCompile(`(?m)^dhcp-host=([0-9a-f:]{17}),set:(\w+),([0-9.]+),(\w+)$`).FindStringSubmatch(conf)
	if m == nil {
		t.Fatalf("the dnsmasq example has no dhcp-host line for a client:\n%s", conf)
	}
	mac, export, addr, hostname := m[1], m[2], m[3], m[4]
	dir := t.TempDir()
	confFile := filepath.Join(dir, "dnsmasq.conf")
	if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}

	img, version := bootImageWith(t, e, vm.RootOptions{Init: `echo "` + vm.Marker + `"
echo "HOSTNAME=$(hostname)"
echo "ADDRESSES=$(ip -4 -o addr show | grep -o 'inet [0-9.]*' | tr '\n' ' ')"
sync
# poweroff -f does not wait for the console to drain: give the lines above time to leave.
sleep 2
poweroff -f
`})
	// The client's own export: its own copy of the image (one image, one writer).
	own := filepath.Join(dir, export+".img")
	command(t, "", "cp", "--sparse=always", img, own)
	lab := netlab.New(t)
	lab.StartRouterAdvertiser(t)
	dnsmasq := startLogged(t, `DHCP, IP range`, "ip", "netns", "exec", lab.Name, "dnsmasq", "--keep-in-foreground", "--conf-file="+confFile,
		"--port=0", "--interface="+netlab.Bridge, "--bind-interfaces", "--dhcp-leasefile="+filepath.Join(dir, "leases"),
		"--pid-file="+filepath.Join(dir, "pid"), "--user=root", "--log-dhcp", "--log-facility=-")
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img, "--export", export+"="+own,
		"--http", netlab.ServerIP+":8080", "--tftp", netlab.ServerIP, "--boot-append", "console=ttyS0")
	tap := lab.AddTap(t)
	v := vm.Start(t, vm.Options{
		PXE: true, NoNet: true, Wrapper: lab.Wrapper(),
		ExtraArgs: netlab.PXENIC("n0", tap, mac),
		Timeout:   bootTimeout + 2*time.Minute,
	})
	v.Expect(`Command line: .*initrd=nbdroot\.img-`+regexp.QuoteMeta(version)+` .*nbd_export=`+export+` `, bootTimeout)
	v.Expect(vm.Marker, bootTimeout)
	got := v.Expect(`HOSTNAME=(\S*)\r?\nADDRESSES=([^\r\n]*)\r?\n`, time.Minute)
	if got[1] != hostname || !strings.Contains(got[2], "inet "+addr+" ") {
		t.Errorf("the client is %q with %q; want %q with %s (dnsmasq's dhcp-host)\ndnsmasq:\n%s", got[1], got[2], hostname, addr, dnsmasq.String())
	}
	if !strings.Contains(srv.Log(), "/"+export+"/boot.ipxe") {
		t.Errorf("the client did not fetch its own script /%s/boot.ipxe:\n%s", export, srv.Log())
	}
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off: %v", err)
	}
}

// logBuffer collects a process's output.
type logBuffer struct {
	mu  chan struct{}
	buf strings.Builder
}

func (l *logBuffer) String() string {
	l.mu <- struct{}{}
	defer func() { <-l.mu }()
	return l.buf.String()
}

// startLogged runs a daemon until the test ends and waits until its output matches ready.
func startLogged(t *testing.T, ready string, argv ...string) *logBuffer {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", argv[0], err)
	}
	log := &logBuffer{mu: make(chan struct{}, 1)}
	seen := make(chan struct{})
	done := make(chan struct{})
	re := regexp.MustCompile(ready)
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		found := false
		for sc.Scan() {
			log.mu <- struct{}{}
			log.buf.WriteString(sc.Text() + "\n")
			<-log.mu
			if !found && re.MatchString(sc.Text()) {
				found = true
				close(seen)
			}
		}
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s", strings.Join(argv, " "), log.String())
		}
	})
	select {
	case <-seen:
	case <-done:
		t.Fatalf("%s exited:\n%s", strings.Join(argv, " "), log.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("%s not ready within 20s:\n%s", strings.Join(argv, " "), log.String())
	}
	return log
}
