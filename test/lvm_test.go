package test

import (
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// lvmHooks is the seed's encrypted line with mkinitcpio's lvm2 hook after encrypt.
const lvmHooks = "base udev net nbd encrypt lvm2 filesystems"

// TestLVMRoot boots roots on LVM2 logical volumes made by the real lvm2 tools: striped over
// two partitions of the NBD device, and inside a LUKS container on it. The init reads the
// LVM metadata itself and loads the striped, linear and crypt tables. The plain case —
// linear root and swap volumes on the whole NBD device, root=/dev/VG/LV — is
// TestSwapOnNBD's boot.
func TestLVMRoot(t *testing.T) {
	e := needEnv(t)
	tests := []struct {
		name   string
		lvm    vm.LVMOptions
		append string
		mount  string // the root as /proc/mounts names it
		table  string // what the lvm2 stage reports
	}{
		{name: "striped over two partitions", lvm: vm.LVMOptions{Striped: true},
			append: "root=/dev/mapper/nbd--vg-root rd.lvm.lv=nbd-vg/root", mount: "/dev/mapper/nbd--vg-root",
			table: `stage lvm2 .*/dev/mapper/nbd--vg-root active`},
		{name: "inside LUKS", lvm: vm.LVMOptions{LUKS: &vm.LUKSOptions{}},
			append: "cryptdevice=/dev/nbd0:nbdcrypt root=/dev/nbd-vg/root", mount: "/dev/nbd-vg/root",
			table: `stage lvm2 .*/dev/mapper/nbd--vg-root active`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			img := e.LVMRootImage(t, tt.lvm)
			srv := e.StartServer(t, 0, "--export", "root="+img)
			v := vm.Start(t, vm.Options{
				Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, lvmHooks),
				Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 " + tt.append + " console=ttyS0",
				Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + time.Minute,
			})
			off := 0
			if tt.lvm.LUKS != nil {
				_, off = v.ExpectAfter(0, prompt, bootTimeout)
				v.Send("nbdroot-test\n")
			}
			if tt.lvm.Striped {
				v.Expect(`nbd0: p1 p2`, bootTimeout)
			}
			v.ExpectAfter(off, tt.table, bootTimeout)
			assertRootMounted(t, v, tt.mount, "ext4")
			if err := v.Wait(30 * time.Second); err != nil {
				t.Errorf("guest did not power off cleanly: %v", err)
			}
		})
	}
}

// swapScript fills a tmpfs with more random data than the guest has memory, so the kernel
// must swap to a logical volume on the NBD device, reads it back and compares checksums,
// and checks that the keeper of the root's NBD device lived through it, its memory locked.
const swapScript = `echo "` + vm.Marker + `"
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- uptime $(cat /proc/uptime)"
mkswap /dev/nbd-vg/swap >/dev/null && swapon /dev/nbd-vg/swap || echo SWAPON-FAILED
# Swapped-out tmpfs pages come back in clusters of 2^6 pages: one NBD round trip each.
echo 6 > /proc/sys/vm/page-cluster
for p in /proc/[0-9]*; do
	case "$(tr '\0' ' ' < $p/cmdline 2>/dev/null)" in "@nbdroot-keeper"*) kp=${p#/proc/}; break;; esac
done
echo "KEEPER pid=$kp $(grep -E '^(VmLck|VmRSS)' /proc/$kp/status | tr -s ' \t\n' ' ')oom_score_adj=$(cat /proc/$kp/oom_score_adj)"
mkdir -p /mnt/big && mount -t tmpfs -o size=1g tmpfs /mnt/big
mem=$(awk '/^MemTotal/ {print int($2/1024)}' /proc/meminfo)
n=$((mem + 8))
echo "FILL ${n} MiB into tmpfs with ${mem} MiB of RAM at $(cut -d' ' -f1 /proc/uptime)"
# 1 MiB of random bytes, each copy followed by its number: no two pages alike.
dd if=/dev/urandom of=/tmp/seed bs=1M count=1 2>/dev/null
sum1=$(for i in $(seq $n); do cat /tmp/seed; echo $i; done | tee /mnt/big/data | md5sum | cut -d' ' -f1)
echo "SWAP-USED-KB $(awk '/^SwapTotal/ {t=$2} /^SwapFree/ {f=$2} END {print t-f}' /proc/meminfo) at $(cut -d' ' -f1 /proc/uptime)"
sum2=$(md5sum /mnt/big/data | cut -d' ' -f1)
echo "READ BACK at $(cut -d' ' -f1 /proc/uptime): $(grep -E '^(pswpin|pswpout) ' /proc/vmstat | tr '\n' ' ')"
[ "$sum1" = "$sum2" ] && echo "DATA-INTACT $sum1" || echo "DATA-CORRUPT $sum1 $sum2"
[ -d /proc/$kp ] && echo "KEEPER-ALIVE pid=$kp $(grep -E '^(VmLck|VmRSS)' /proc/$kp/status | tr -s ' \t\n' ' ')"
rm /mnt/big/data
swapoff /dev/nbd-vg/swap && echo SWAPOFF-OK
sync
poweroff -f
`

// TestSwapOnNBD boots a 128 MiB guest whose root and swap are logical volumes on the NBD
// device, and makes it use the swap: 8 MiB more than its memory goes into a tmpfs (about 60
// MiB of it ends up in swap; at least 32 MiB must) and comes back intact, and the keeper
// (mlocked, out of the OOM killer's reach) keeps running.
func TestSwapOnNBD(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	// 160 MiB of swap holds the ~60 MiB pushed out with room to spare; every MiB of the
	// image is copied per run.
	img := e.LVMRootImage(t, vm.LVMOptions{SwapMB: 160, Root: vm.RootOptions{Init: swapScript}})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	// The less memory, the less data to push through swap under TCG; 96 MiB is too little
	// for the kernel to unpack the initramfs (it panics, deadlocked on memory).
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, lvmHooks), MemoryMB: 128,
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd-vg/root rw console=ttyS0",
		Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + 5*time.Minute,
	})
	// This boot is also the plain LVM case: linear root and swap volumes on the whole NBD
	// device, both activated, the root mounted as root= names it.
	v.Expect(`stage lvm2 .*/dev/mapper/nbd--vg-root /dev/mapper/nbd--vg-swap active`, bootTimeout)
	assertRootMounted(t, v, "/dev/nbd-vg/root", "ext4")
	keeper := v.Expect(`KEEPER pid=(\d+) VmLck: +(\d+) kB VmRSS: +(\d+) kB oom_score_adj=(-?\d+)`, time.Minute)
	if lck, _ := strconv.Atoi(keeper[2]); lck == 0 {
		t.Errorf("the keeper has no locked memory: %s", keeper[0])
	}
	if keeper[4] != "-1000" {
		t.Errorf("the keeper is within the OOM killer's reach: %s", keeper[0])
	}
	used := v.Expect(`SWAP-USED-KB (\d+) at`, 5*time.Minute)
	if kb, _ := strconv.Atoi(used[1]); kb < 32<<10 {
		t.Errorf("only %s KiB of swap in use: the test did not push the guest into swap", used[1])
	}
	v.Expect(`DATA-INTACT [0-9a-f]{32}`, 5*time.Minute)
	v.Expect(`KEEPER-ALIVE pid=`+regexp.QuoteMeta(keeper[1]), time.Minute)
	v.Expect(`SWAPOFF-OK`, 3*time.Minute)
	if m := regexp.MustCompile(`DATA-CORRUPT|SWAPON-FAILED|Out of memory|Kernel panic`).FindString(v.Console()); m != "" {
		t.Errorf("console shows %q", m)
	}
	for _, re := range []string{`FILL .*`, `SWAP-USED-KB .*`, `READ BACK .*`} {
		t.Logf("%s", v.Expect(re, time.Second)[0])
	}
	if err := v.Wait(time.Minute); err != nil {
		t.Errorf("guest did not power off cleanly: %v", err)
	}
}
