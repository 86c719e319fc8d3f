//go:build linux

package test

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// The lease test's scale: a lease of leaseTime, the root's init ticking every leaseTick for
// leaseTicks ticks, the DHCP server leaving at tick leaseServerGone: the 30-s lease
// with the root running 3 minutes (six lease times of renewals), then an expiry with ticks
// after it (the lease ends at most leaseTime after the server left, three ticks before the
// last). The guest mostly sleeps: the test shares the machine with the other boots.
const (
	leaseTime       = 30 * time.Second
	leaseTick       = 10 * time.Second
	leaseServerGone = 18
	leaseTicks      = leaseServerGone + int(leaseTime/leaseTick) + 3
)

// leaseInit is the root's init for the lease test: every leaseTick it shows the interface's
// addresses and reads a file of the root past the page cache (an NBD request), for
// leaseTicks ticks, then prints the keeper's lines of the kernel log.

var leaseInit = `echo "` + vm.Marker + ` init=$0 pid=$$"
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- uptime $(cat /proc/uptime)"
# 4: no kernel message for each drop_caches below (it would land inside the tick lines).
echo 4 > /proc/sys/vm/drop_caches
i=0
while [ $i -lt ` + strconv.Itoa(leaseTicks) + ` ]; do
	sleep ` + strconv.Itoa(int(leaseTick/time.Second)) + `
	i=$((i+1))
	echo 3 > /proc/sys/vm/drop_caches
	echo "=== tick $i up $(cut -d' ' -f1 /proc/uptime) root=$(cat /etc/hostname) $(ip -4 addr show dev eth0 | grep -o 'inet [0-9./]*')"
done
echo "=== dmesg"
dmesg | grep nbdroot-keeper
echo "=== end"
poweroff -f
`

// TestNetLeaseRenewal: a 30-second lease on a lab network. The keeper renews it at every T1
// for 3 minutes (each renewal in the kernel log, each reaching the lab's
// server); then the DHCP server goes away: the lease expires with a loud kernel-log line, and
// the address — and the root behind it — stay.
func TestNetLeaseRenewal(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	netlab.Need(t)
	lab := netlab.New(t)
	img := e.RootImage(t, vm.RootOptions{Init: leaseInit})
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{LeaseTime: leaseTime, Router: net.ParseIP(netlab.ServerIP)})
	tap := lab.AddTap(t)
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, seedHooks),
		Append:  "ip=dhcp nbd_server=" + srv.Addr + " root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: netlab.NIC("n0", tap, macA),
		Timeout: bootTimeout + time.Duration(leaseTicks)*leaseTick + 2*time.Minute,
	})
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	v.Expect(`keeper: renews the DHCP lease of eth0 \(10\.77\.0\.100/24, `+leaseTime.String()+`\)`, time.Second)

	// The client runs for more than four lease times of renewals, then its DHCP server goes
	// away.
	tick := regexp.MustCompile(`=== tick (\d+) up ([0-9.]+) root=(\S*) (.*?)\r?\n`)
	m := v.Expect(`=== tick `+strconv.Itoa(leaseServerGone)+` up ([0-9.]+) root=`, leaseServerGone*leaseTick+2*time.Minute)
	firstRoot, _ := strconv.ParseFloat(v.Expect(`=== tick 1 up ([0-9.]+) root=`, time.Second)[1], 64)
	last, _ := strconv.ParseFloat(m[1], 64)
	if ran := last - firstRoot + leaseTick.Seconds(); ran < (3 * time.Minute).Seconds() {
		t.Errorf("the root ran %.0f s before the server left, want 3 minutes (%.0f lease times)", ran, (3*time.Minute).Seconds()/leaseTime.Seconds())
	}
	dhcp.Close()
	renewals := 0
	for _, r := range dhcp.Requests() {
		if r.Type == dhcpv4.MessageTypeRequest && r.ClientIP != nil && r.ClientIP.Equal(net.IPv4(10, 77, 0, 100)) {
			renewals++
		}
	}
	v.Expect(`=== end`, 3*time.Minute)
	live, dmesg, _ := strings.Cut(v.Console(), "=== dmesg")
	logged := len(regexp.MustCompile(`nbdroot-keeper\[\d+\]: dhcp: eth0: lease of 10\.77\.0\.100 renewed by 10\.77\.0\.1 for `+leaseTime.String()).FindAllString(dmesg, -1))
	// From the lease (about 5 s after boot) to the server's end, one renewal at every T1.
	want := int((last - 5) / (leaseTime.Seconds() / 2))
	// A renewal racing the server's shutdown may reach it unanswered: one apart at most.
	if renewals < want-1 || logged < renewals-1 || logged > renewals {
		t.Errorf("%d renewals reached the server, %d in the kernel log, want about %d (one per %v)", renewals, logged, want, leaseTime/2)
	}
	expiry := regexp.MustCompile(`nbdroot-keeper\[\d+\]: dhcp: eth0: DHCP LEASE OF 10\.77\.0\.100 EXPIRED`)
	if n := len(expiry.FindAllString(dmesg, -1)); n != 1 {
		t.Errorf("the expiry is in the kernel log %d times, want once", n)
	}
	// Loud: on the console too (a critical line passes any console log level but 0-2).
	at := expiry.FindStringIndex(live)
	if at == nil {
		t.Fatal("the expiry line is not on the console")
	}
	// Every tick, before and after the expiry, saw the address and read the root.
	ticks := tick.FindAllStringSubmatchIndex(live, -1)
	if len(ticks) != leaseTicks {
		t.Fatalf("%d ticks, want %d", len(ticks), leaseTicks)
	}
	afterExpiry := 0
	for _, ix := range ticks {
		n, root, addrs := live[ix[2]:ix[3]], live[ix[6]:ix[7]], live[ix[8]:ix[9]]
		if root != "nbdroot-test" || !strings.Contains(addrs, "inet 10.77.0.100/24") {
			t.Errorf("tick %s: root %q, addresses %q: want the root readable and 10.77.0.100/24 kept", n, root, addrs)
		}
		if ix[0] > at[0] {
			afterExpiry++
		}
	}
	if afterExpiry < 2 {
		t.Errorf("only %d ticks after the expiry", afterExpiry)
	}
	t.Logf("%d renewals in %.0f s of root, then expiry; the keeper's kernel log:%s", renewals, last-firstRoot+leaseTick.Seconds(), dmesg)
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}
