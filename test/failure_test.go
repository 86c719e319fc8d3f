package test

import (
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// rescuePrompt is what the rescue shell prints when it waits for a command.
const rescuePrompt = `nbdroot# `

// expectRescue checks that a failed boot explains itself, reaches the rescue shell and that
// the shell runs commands, and that the kernel never panicked.
func expectRescue(t *testing.T, v *vm.VM, stage string, causes ...string) {
	t.Helper()
	_, off := v.ExpectAfter(0, `BOOT FAILED in the `+stage+` stage`, bootTimeout)
	for _, c := range causes {
		v.ExpectAfter(off, c, 10*time.Second)
	}
	_, off = v.ExpectAfter(off, rescuePrompt, 30*time.Second)
	v.Send("echo rescue-$((6*7)); ls /dev/console\n")
	v.ExpectAfter(off, `rescue-42`, 30*time.Second)
	v.ExpectAfter(off, `/dev/console`, 10*time.Second)
	if strings.Contains(v.Console(), "Kernel panic") {
		t.Fatal("kernel panic on the console")
	}
	t.Logf("timeline:\n%s", timeline(v.Console()))
}

func TestFailures(t *testing.T) {
	e := needEnv(t)
	srvImg := e.RootImage(t, vm.RootOptions{})
	srv := e.StartServer(t, 0, "--export", "root="+srvImg)
	initrd := e.Initramfs(t, seedHooks)
	tests := []struct {
		name   string
		append string
		fwd    map[int]int
		stage  string
		causes []string
	}{
		{
			name:   "unparsable nbd_server",
			append: "ip=::::::dhcp nbd_server=10.0.2.100:notaport root=/dev/nbd0",
			stage:  "cmdline",
			causes: []string{`nbd_server="10.0.2.100:notaport"`, `not a number`},
		},
		{
			name:   "missing root",
			append: "ip=::::::dhcp nbd_server=10.0.2.100:10809",
			stage:  "cmdline",
			causes: []string{`root= is missing`},
		},
		{
			name:   "no server anywhere",
			append: "ip=::::::dhcp root=/dev/nbd0 nbdroot.connect=3",
			stage:  "nbd",
			causes: []string{`no NBD server on the command line`, `10\.0\.2\.2:10809`},
		},
		{
			name:   "unreachable server",
			append: "ip=::::::dhcp nbd_server=10.0.2.100:10809 root=/dev/nbd0 nbdroot.connect=3",
			stage:  "nbd",
			causes: []string{`NBD server 10\.0\.2\.100:10809`, `parameter: nbd_server=10\.0\.2\.100:10809`},
		},
		{
			name:   "unknown export",
			append: "ip=::::::dhcp nbd_server=10.0.2.100:10809 nbd_export=nope root=/dev/nbd0 nbdroot.connect=3",
			fwd:    map[int]int{10809: srv.Port},
			stage:  "nbd",
			causes: []string{`export "nope"`},
		},
		{
			name:   "missing root device",
			append: "ip=::::::dhcp nbd_server=10.0.2.100:10809 root=/dev/nbd0p3 rootdelay=2",
			fwd:    map[int]int{10809: srv.Port},
			stage:  "filesystems",
			causes: []string{`/dev/nbd0p3 did not appear`, `parameter: root=/dev/nbd0p3`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			v := vm.Start(t, vm.Options{
				Kernel: e.Vmlinuz(), Initrd: initrd, Append: tt.append + " console=ttyS0",
				Forwards: tt.fwd, Timeout: bootTimeout + time.Minute,
			})
			expectRescue(t, v, tt.stage, tt.causes...)
		})
	}
}

// TestBreak stops before switch_root on purpose (rd.break), then resumes the boot when the
// shell is left.
func TestBreak(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{})
	srv := e.StartServer(t, 0, "--export", "root="+img)
	v := vm.Start(t, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: e.Initramfs(t, seedHooks),
		Append:   "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 rd.break console=ttyS0",
		Forwards: map[int]int{10809: srv.Port}, Timeout: bootTimeout + time.Minute,
	})
	_, off := v.ExpectAfter(0, `stopped before the switch_root stage`, bootTimeout)
	_, off = v.ExpectAfter(off, rescuePrompt, 30*time.Second)
	if strings.Contains(v.Console(), vm.Marker) {
		t.Fatal("the root's init ran before the shell")
	}
	v.Send("ls /newroot/sbin; cat /proc/mounts\n")
	v.ExpectAfter(off, `(?m)^init\r?$`, 30*time.Second)
	v.ExpectAfter(off, `/dev/nbd0 /newroot ext4`, 10*time.Second)
	v.Send("exit\n")
	assertRootMounted(t, v, "/dev/nbd0", "ext4")
}
