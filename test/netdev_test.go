//go:build linux

package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// netdevHooks is the seed's hooks with the VLAN, bond and bridge drivers.
const netdevHooks = "base udev net netdev nbd filesystems"

// tickInit is a root init that, every 3 s for ticks times, reads the root past the page
// cache and prints "=== tick N root=HOSTNAME" and the output of report (a shell command
// line), then powers off.
func tickInit(ticks int, report string) string {
	return `echo "` + vm.Marker + ` init=$0 pid=$$"
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- uptime $(cat /proc/uptime)"
# 4: no kernel message for each drop_caches below (it would land inside the tick lines).
echo 4 > /proc/sys/vm/drop_caches
i=0
while [ $i -lt ` + fmt.Sprint(ticks) + ` ]; do
	sleep 3
	i=$((i+1))
	echo 3 > /proc/sys/vm/drop_caches
	echo "=== tick $i root=$(cat /etc/hostname) $( (` + report + `) | tr '\n' ' ')"
done
echo "=== end"
poweroff -f
`
}

// TestNetVLAN: the guest's only way to the lab is VLAN 42 of an 802.1Q trunk: vlan=
// makes eth0.42, DHCP runs on it, the root comes through it.
func TestNetVLAN(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	netlab.Need(t)
	lab := netlab.New(t)
	img := e.RootImage(t, vm.RootOptions{Init: tickInit(2, `ip -4 addr show dev eth0.42 | grep -o 'inet [0-9./]*'; ip -4 addr show dev eth0 | grep -c inet`)})
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{Router: net.ParseIP(netlab.ServerIP)})
	port, nic := lab.AddVLANPort(t, "n0", macA, 42)
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, netdevHooks),
		Append:  "vlan=eth0.42:eth0 ip=eth0.42:dhcp nbd_server=" + srv.Addr + " root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: nic, Timeout: bootTimeout + time.Minute,
	})
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	m := v.Expect(`=== tick 2 root=(\S*) (.*?)\r?\n`, time.Minute)
	lease := dhcp.Leases()[macA]
	if lease == nil || m[1] != "nbdroot-test" || !strings.Contains(m[2], "inet "+lease.String()+"/24") {
		t.Errorf("tick: root %q, %q; want the root read through eth0.42 with the lease %v", m[1], m[2], lease)
	}
	if !strings.HasSuffix(strings.TrimSpace(m[2]), "/24 0") {
		t.Errorf("eth0 itself has an IPv4 address: %q", m[2])
	}
	v.Expect(`stage net .* eth0\.42 `+regexp.QuoteMeta(lease.String())+`/24 via dhcp`, time.Second)
	if port.Tagged() == 0 {
		t.Error("no frame of VLAN 42 came from the guest")
	}
	t.Logf("VLAN port: %d tagged frames from the guest, %d others dropped", port.Tagged(), port.Dropped())
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}

// TestNetBond: two NICs bonded in active-backup; the root runs over bond0, and keeps
// running when the active NIC loses its link (QEMU's set_link): the bond moves to eth1.
func TestNetBond(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	netlab.Need(t)
	lab := netlab.New(t)
	img := e.RootImage(t, vm.RootOptions{Init: tickInit(12,
		`grep 'Currently Active Slave' /proc/net/bonding/bond0 | tr -d ' '; grep -c 'Slave Interface' /proc/net/bonding/bond0; ip -4 addr show dev bond0 | grep -o 'inet [0-9./]*'`)})
	srv := lab.StartNBDServer(t, e.Tool("nbdroot"), "--export", "root="+img)
	dhcp := lab.StartDHCP(t, netlab.DHCPConfig{Router: net.ParseIP(netlab.ServerIP)})
	qmp := filepath.Join(t.TempDir(), "qmp.sock")
	extra := append(netlab.NIC("n0", lab.AddTap(t), macA), netlab.NIC("n1", lab.AddTap(t), macB)...)
	extra = append(extra, "-qmp", "unix:"+qmp+",server=on,wait=off")
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, netdevHooks),
		Append:  "bond=bond0:eth0,eth1:mode=active-backup,miimon=100 ip=bond0:dhcp nbd_server=" + srv.Addr + " root=/dev/nbd0",
		Wrapper: lab.Wrapper(), NoNet: true, ExtraArgs: extra, Timeout: bootTimeout + 2*time.Minute,
	})
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	// The bond has eth0's MAC: the lease is eth0's.
	lease := dhcp.Leases()[macA]
	m := v.Expect(`=== tick 2 root=(\S*) (.*?)\r?\n`, time.Minute)
	if lease == nil || m[1] != "nbdroot-test" || !strings.Contains(m[2], "CurrentlyActiveSlave:eth0 2 inet "+lease.String()+"/24 ") {
		t.Fatalf("tick 2: root %q, %q; want eth0 active of 2 slaves, the lease %v on bond0", m[1], m[2], lease)
	}
	qmpCommand(t, qmp, `{"execute":"set_link","arguments":{"name":"n0","up":false}}`)
	m = v.Expect(`=== tick 12 root=(\S*) (.*?)\r?\n`, time.Minute)
	if m[1] != "nbdroot-test" || !strings.Contains(m[2], "CurrentlyActiveSlave:eth1 2 inet "+lease.String()+"/24 ") {
		t.Errorf("after eth0 lost its link: root %q, %q; want the root readable with eth1 active", m[1], m[2])
	}
	v.Expect(`bond0: \(slave eth0\): link status definitely down`, time.Second)
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}

// qmpCommand runs one command on QEMU's QMP socket and fails the test on an error reply.
func qmpCommand(t *testing.T, path, cmd string) {
	t.Helper()
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		t.Fatalf("QMP: %v", err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	read := func() map[string]any {
		line, err := r.ReadBytes('\n')
		if err != nil {
			t.Fatalf("QMP: %v", err)
		}
		var m map[string]any
		json.Unmarshal(line, &m)
		return m
	}
	read() // greeting
	for _, cmd := range []string{`{"execute":"qmp_capabilities"}`, cmd} {
		fmt.Fprintln(c, cmd)
		for {
			m := read()
			if e, ok := m["error"]; ok {
				t.Fatalf("QMP %s: %v", cmd, e)
			}
			if _, ok := m["return"]; ok {
				break
			}
		}
	}
}
