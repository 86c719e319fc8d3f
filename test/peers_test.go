package test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// needPeer finds a peer NBD server binary; missing ones fail under NBDROOT_REQUIRE_PEERS=1.
func needPeer(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if vm.RequirePeers() {
			t.Fatalf("%s is not installed (NBDROOT_REQUIRE_PEERS=1)", name)
		}
		t.Skipf("%s is not installed", name)
	}
	return p
}

// freeLoopbackPort listens on port 0 and closes: the port is free unless someone takes it
// meanwhile, which startPeer notices and retries.
func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// listening waits until something accepts on port, or gone is closed (the server exited).
func listening(port int, gone <-chan struct{}) bool {
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(port), time.Second); err == nil {
			c.Close()
			return true
		}
		select {
		case <-gone:
			return false
		case <-time.After(50 * time.Millisecond):
		}
	}
	return false
}

// startPeer serves img as export "root" with another NBD server on a free loopback port
// and returns the port. extra are lines of nbd-server's [generic] section, or nbdkit
// options before its plugin. The test's cleanup stops it.
func startPeer(t *testing.T, kind, img string, extra ...string) int {
	t.Helper()
	bin := needPeer(t, kind)
	for try := 0; try < 5; try++ {
		port := freeLoopbackPort(t)
		var out bytes.Buffer
		var cmd *exec.Cmd
		switch kind {
		case "nbd-server":
			// As a daemon it serves many clients (-d serves one and exits); it writes its
			// pid for the cleanup.
			dir := t.TempDir()
			cfg := filepath.Join(dir, "config")
			conf := fmt.Sprintf("[generic]\nport = %d\nlistenaddr = 127.0.0.1\n%s[root]\nexportname = %s\nflush = true\nfua = true\n",
				port, strings.Join(append(extra, ""), "\n"), img)
			if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
				t.Fatal(err)
			}
			pidfile := filepath.Join(dir, "pid")
			if b, err := exec.Command(bin, "-C", cfg, "-p", pidfile).CombinedOutput(); err != nil {
				t.Fatalf("nbd-server: %v\n%s", err, b)
			}
			var pid int
			for i := 0; i < 200 && pid == 0; i++ {
				b, _ := os.ReadFile(pidfile)
				if pid, _ = strconv.Atoi(strings.TrimSpace(string(b))); pid == 0 {
					time.Sleep(25 * time.Millisecond)
				}
			}
			if pid == 0 {
				continue
			}
			gone := make(chan struct{})
			go func() {
				for syscall.Kill(pid, 0) == nil {
					time.Sleep(100 * time.Millisecond)
				}
				close(gone)
			}()
			t.Cleanup(func() { syscall.Kill(pid, syscall.SIGTERM) })
			if listening(port, gone) {
				return port
			}
			continue
		case "nbdkit":
			args := append([]string{"-f", "-i", "127.0.0.1", "-p", strconv.Itoa(port)}, extra...)
			cmd = exec.Command(bin, append(args, "file", img)...)
		case "qemu-nbd":
			cmd = exec.Command(bin, "-t", "-b", "127.0.0.1", "-p", strconv.Itoa(port), "-x", "root", "-f", "raw",
				"--shared=8", "--cache=writeback", img)
		default:
			t.Fatalf("unknown peer %s", kind)
		}
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		gone := make(chan struct{})
		go func() { cmd.Wait(); close(gone) }()
		t.Cleanup(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-gone:
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-gone
			}
			if t.Failed() {
				t.Logf("%s output:\n%s", kind, out.String())
			}
		})
		if listening(port, gone) {
			return port
		}
	}
	t.Fatalf("%s: no free port after 5 tries", kind)
	return 0
}

// TestBootFromPeers boots the same root image served by nbd-server, nbdkit and qemu-nbd
// (nbdroot serve is TestDirectBoot).
func TestBootFromPeers(t *testing.T) {
	e := needEnv(t)
	for _, kind := range []string{"nbd-server", "nbdkit", "qemu-nbd"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			img := e.RootImage(t, vm.RootOptions{})
			port := startPeer(t, kind, img)
			v := vm.Start(t, vm.Options{
				Kernel:   e.Vmlinuz(),
				Initrd:   e.Initramfs(t, seedHooks),
				Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 nbd_export=root root=/dev/nbd0 console=ttyS0",
				Forwards: map[int]int{10809: port},
				Timeout:  bootTimeout + time.Minute,
			})
			assertRootMounted(t, v, "/dev/nbd0", "ext4")
			v.Expect(`keeper: pid \d+ keeps /dev/nbd0`, 10*time.Second)
			if err := v.Wait(30 * time.Second); err != nil {
				t.Errorf("guest did not power off cleanly: %v", err)
			}
		})
	}
}

// TestMultiConnBoot boots with nbdroot.connections=4: the server sees four connections of
// the root export and the nbd stage says so.
func TestMultiConnBoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 nbdroot.connections=4 console=ttyS0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + time.Minute,
	})
	v.Expect(`stage nbd .*/dev/nbd0 ← \S+ \(64\.0 MiB, 4 connection\(s\)\)`, bootTimeout)
	v.Expect(keeperLine(`keeping /dev/nbd0 connected to \S+ \(netlink, 4 connection\(s\)`), 30*time.Second)
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
	conns := regexp.MustCompile(`(?m)^(?:\S+ \S+ )?conn \S+: NBD_OPT_GO export "root"`).FindAllString(srv.Log(), -1)
	if len(conns) != 4 {
		t.Errorf("the server saw %d connection(s) of the root, want 4:\n%s", len(conns), srv.Log())
	}
}

// mbrImage wraps a filesystem image into a disk with an MBR partition table: one Linux
// partition (type 0x83) starting at 1 MiB.
func mbrImage(t *testing.T, fs string) string {
	t.Helper()
	data, err := os.ReadFile(fs)
	if err != nil {
		t.Fatal(err)
	}
	const start = 2048 // sectors: 1 MiB, as fdisk aligns
	sectors := uint32(len(data) / 512)
	mbr := make([]byte, 512)
	binary.LittleEndian.PutUint32(mbr[440:], 0x6e626472) // disk signature
	p := mbr[446:462]
	p[0] = 0x00                            // not bootable
	copy(p[1:4], []byte{0xfe, 0xff, 0xff}) // CHS unused (LBA addressing)
	p[4] = 0x83                            // Linux
	copy(p[5:8], []byte{0xfe, 0xff, 0xff}) // CHS unused
	binary.LittleEndian.PutUint32(p[8:], start)
	binary.LittleEndian.PutUint32(p[12:], sectors)
	mbr[510], mbr[511] = 0x55, 0xaa
	disk := filepath.Join(t.TempDir(), "disk.img")
	out := append(append(mbr, make([]byte, start*512-512)...), data...)
	// A little room after the partition, as real disks have.
	out = append(out, make([]byte, 1<<20)...)
	if err := os.WriteFile(disk, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return disk
}

// TestPartitionedRoot boots a root on the first partition of the export (root=/dev/nbd0p1):
// the nbd stage has the kernel read the partition table (nbd#99).
func TestPartitionedRoot(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	disk := mbrImage(t, e.RootImage(t, vm.RootOptions{}))
	srv := e.StartServer(t, 0, "--export", "root="+disk)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0p1 console=ttyS0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + time.Minute,
	})
	v.Expect(`nbd0: p1`, bootTimeout)
	assertRootMounted(t, v, "/dev/nbd0p1", "ext4")
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}

// attachScript is a root init that uses `nbdroot attach` on the running system: the data
// export through netlink with a keeper, then through the ioctl interface, reading it
// whole each time, with status and detach in between.
const attachScript = `echo "` + vm.Marker + `"
show() { echo "== $*"; "$@" 2>&1; echo "== rc=$?"; }
for p in /proc/[0-9]*; do
	case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in "@nbdroot-keeper"*) kp=${p#/proc/}; break;; esac
done
echo "ROOT-KEEPER pid=$kp cmdline=$(tr '\0' ' ' < /proc/$kp/cmdline)"
ls -l /proc/$kp/exe /proc/$kp/root /proc/$kp/cwd
echo "KEEPER-MEM $(grep -E '^(VmRSS|VmHWM|VmLck)' /proc/$kp/status | tr -s ' \t\n' ' ')"
echo "KEEPER-OOM $(cat /proc/$kp/oom_score_adj)"
for sig in TERM HUP INT QUIT USR1 PIPE; do kill -$sig $kp; done
sleep 1
[ -d /proc/$kp ] && echo "KEEPER-SURVIVED-SIGNALS"
show nbdroot attach ` + vm.GuestServerIP + `:10809 --export data --keep --json
dev=$(nbdroot status --json | grep -o '"/dev/nbd[1-9][0-9]*"' | head -1 | tr -d '"')
echo "DEV=$dev"
echo "DATA-MD5 netlink $(md5sum < $dev)"
show nbdroot status
show nbdroot detach $dev
show nbdroot status --all $dev
show nbdroot attach ` + vm.GuestServerIP + `:10809 --export data --ioctl --device /dev/nbd5
echo "DATA-MD5 ioctl $(md5sum < /dev/nbd5)"
ls /dev/nbd5p1 >/dev/null 2>&1 && echo "IOCTL-PARTITION /dev/nbd5p1"
show nbdroot status /dev/nbd5
show nbdroot detach /dev/nbd5
sleep 1
show nbdroot status --all /dev/nbd5
show nbdroot attach ` + vm.GuestServerIP + `:10809 --export nope
echo ATTACH-SCRIPT-DONE
sync
poweroff -f
`

// TestAttachCLIInGuest runs nbdroot attach, status and detach inside a booted guest against
// a second export, with the netlink interface and a keeper, then the ioctl interface.
func TestAttachCLIInGuest(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	// The root carries the static nbdroot binary.
	tree := filepath.Join(t.TempDir(), "tree")
	if err := vm.RootTree(tree, vm.RootOptions{Init: attachScript}); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(e.Tool("nbdroot"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tree, "bin/nbdroot"), bin, 0o755); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(t.TempDir(), "root.img")
	if err := vm.MkfsExt4(root, tree, 96, 0); err != nil {
		t.Fatal(err)
	}
	// The data export: a partitioned disk of known content.
	data := mbrImage(t, e.RootImage(t, vm.RootOptions{SizeMB: 8}))
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	sum := md5.Sum(b)
	want := hex.EncodeToString(sum[:])

	srv := e.StartServer(t, 0, "--export", "root="+root+",readonly", "--export", "data="+data)
	v := vm.Start(t, vm.Options{
		Kernel:   e.Vmlinuz(),
		Initrd:   e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 nbd_export=root root=/dev/nbd0 console=ttyS0",
		Forwards: map[int]int{10809: srv.Port},
		Timeout:  bootTimeout + time.Minute,
	})
	v.Expect(vm.Marker, bootTimeout)
	v.Expect(`ATTACH-SCRIPT-DONE`, 2*time.Minute)
	out := v.Console()
	t.Logf("guest:\n%s", grepLines(out, "==", "DEV=", "DATA-MD5", "nbd", "keeper", "IOCTL"))
	if m := regexp.MustCompile(`KEEPER-MEM (.*)`).FindStringSubmatch(out); m != nil {
		t.Logf("root keeper memory: %s", strings.TrimSpace(m[1]))
	}
	for _, re := range []string{
		// the root's keeper: '@' name, binary and root from the deleted initramfs, never
		// chosen by the OOM killer, deaf to the signals that end ordinary processes
		`ROOT-KEEPER pid=\d+ cmdline=@nbdroot-keeper `,
		`/proc/\d+/exe -> /init \(deleted\)`,
		`KEEPER-MEM .*VmLck:\s+[1-9]\d* kB`,
		`KEEPER-OOM -1000`,
		`KEEPER-SURVIVED-SIGNALS`,
		// netlink with a keeper, on the first free device
		`"interface": "netlink"`, `"keeper_pid": \d+`, `DEV=/dev/nbd1\b`,
		`DATA-MD5 netlink ` + want,
		`/dev/nbd1\s+connected\s+10\.0 MiB\s+512\s+10\.0\.2\.100:10809/data\s+\d+\s+pid \d+, watching via 10\.0\.2\.100:10809, 0 reconnect\(s\)`,
		keeperLine(`keeping /dev/nbd1 connected to 10\.0\.2\.100:10809 \(netlink`),
		`== nbdroot detach /dev/nbd1\r?\n(?:.*\r?\n)*?== rc=0`,
		keeperLine(`asked to stop: /dev/nbd1 is no longer kept`),
		`/dev/nbd1\s+free`,
		// the ioctl interface, held by its keeper
		`== nbdroot attach \S+ --export data --ioctl --device /dev/nbd5\r?\n(?:.*\r?\n)*?/dev/nbd5\r?\n(?:.*\r?\n)*?== rc=0`,
		`DATA-MD5 ioctl ` + want,
		`IOCTL-PARTITION /dev/nbd5p1`,
		keeperLine(`keeping /dev/nbd5 connected to 10\.0\.2\.100:10809 \(ioctl`),
		`== nbdroot detach /dev/nbd5\r?\n(?:.*\r?\n)*?== rc=0`,
		keeperLine(`nbd5 was disconnected; the keeper exits`),
		`/dev/nbd5\s+free`,
		// a clear error
		`NBD server 10\.0\.2\.100:10809, export "nope": server refused NBD_OPT_GO: NBD_REP_ERR_UNKNOWN .*\(the server offers: .*"data"`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("guest output does not match %s", re)
		}
	}
	// Both detaches were clean: the kernel told the server (NBD_CMD_DISC) before the
	// sockets went.
	if strings.Contains(out, "Send disconnect failed") {
		t.Errorf("a detach shut the sockets before the disconnect:\n%s", grepLines(out, "nbd"))
	}
	if err := v.Wait(30 * time.Second); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}

// measureScript times reads and writes of the root device from inside the guest: the whole
// device read sequentially, the same read by four readers in parallel, and a file written
// with fsync. It prints "MEASURE name start end" lines in /proc/uptime seconds.
const measureScript = `echo "` + vm.Marker + `"
t() { read t0 _ < /proc/uptime; "$@"; read t1 _ < /proc/uptime; echo "MEASURE $name $t0 $t1"; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
seqread() { dd if=/dev/nbd0 of=/dev/null bs=1M 2>/dev/null; }
parread() { for i in 0 1 2 3; do dd if=/dev/nbd0 of=/dev/null bs=1M skip=$((i*64)) count=64 2>/dev/null & done; wait; }
write() { dd if=/dev/zero of=/bench bs=1M count=64 conv=fsync 2>/dev/null; }
for round in 1 2 3; do
	drop; name=seqread t seqread
	drop; name=parread t parread
	rm -f /bench; drop; name=write t write
done
echo MEASURE-DONE
poweroff -f
`

// TestMeasureMultiConn measures 1, 2 and 4 connections (NBDROOT_MEASURE=1 runs it; it
// decides nbdroot.connections' default, documented in docs/client.md).
func TestMeasureMultiConn(t *testing.T) {
	if os.Getenv("NBDROOT_MEASURE") != "1" {
		t.Skip("set NBDROOT_MEASURE=1 to measure")
	}
	e := needEnv(t)
	img := e.RootImage(t, vm.RootOptions{Init: measureScript, SizeMB: 256})
	re := regexp.MustCompile(`MEASURE (\w+) ([\d.]+) ([\d.]+)`)
	var table strings.Builder
	fmt.Fprintf(&table, "%-5s %-6s %-28s %-28s %-28s\n", "vCPUs", "conns", "seq read 256 MiB (MiB/s)", "4 readers 256 MiB (MiB/s)", "write 64 MiB+fsync (MiB/s)")
	for _, cpus := range []int{1, 2} {
		for _, conns := range []int{1, 2, 4} {
			srv := e.StartServer(t, 0, "--export", "root="+img)
			v := vm.Start(t, vm.Options{
				Kernel: e.Vmlinuz(),
				Initrd: e.Initramfs(t, seedHooks),
				Append: fmt.Sprintf("ip=::::::dhcp nbd_server=%s:10809 root=/dev/nbd0 rw nbdroot.connections=%d console=ttyS0",
					vm.GuestServerIP, conns),
				Forwards:  map[int]int{10809: srv.Port},
				ExtraArgs: []string{"-smp", strconv.Itoa(cpus)},
				Timeout:   10 * time.Minute,
			})
			v.Expect(`MEASURE-DONE`, 9*time.Minute)
			rates := map[string][]float64{}
			for _, m := range re.FindAllStringSubmatch(v.Console(), -1) {
				t0, _ := strconv.ParseFloat(m[2], 64)
				t1, _ := strconv.ParseFloat(m[3], 64)
				mib := 256.0
				if m[1] == "write" {
					mib = 64
				}
				rates[m[1]] = append(rates[m[1]], mib/(t1-t0))
			}
			cell := func(name string) string {
				r := rates[name]
				if len(r) == 0 {
					return "-"
				}
				lo, hi, sum := r[0], r[0], 0.0
				for _, x := range r {
					lo, hi, sum = min(lo, x), max(hi, x), sum+x
				}
				return fmt.Sprintf("%.1f (%.1f-%.1f)", sum/float64(len(r)), lo, hi)
			}
			fmt.Fprintf(&table, "%-5d %-6d %-28s %-28s %-28s\n", cpus, conns, cell("seqread"), cell("parread"), cell("write"))
			v.Wait(time.Minute)
			v.Kill()
			srv.Stop()
		}
	}
	t.Logf("mean (min-max) of 3 rounds:\n%s", table.String())
}
