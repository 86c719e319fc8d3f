// Command demo is `make demo`: it builds the initramfs, serves a small root filesystem with
// `nbdroot serve` on loopback, boots a diskless QEMU client from it with the seed's command
// line, shows the boot timeline and the root's marker, and cleans up.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

func main() {
	build := flag.String("build", "build", "directory with the nbdroot binaries")
	all := flag.Bool("all", false, "show the whole console, kernel messages included")
	flag.Parse()
	os.Setenv("NBDROOT_BUILD", *build)

	r := vm.NewRunner("demo")
	code := run(r, *all)
	r.Close()
	os.Exit(code)
}

const demoInit = `echo
echo "=================================================================="
echo " ` + vm.Marker + `: the diskless client runs its root's init"
echo " root filesystem: $(grep ' / ' /proc/mounts)"
echo " uptime: $(cut -d' ' -f1 /proc/uptime) s, hostname: $(hostname)"
echo "=================================================================="
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- uptime $(cat /proc/uptime)"
sync
poweroff -f
`

func run(r *vm.Runner, all bool) (code int) {
	defer func() {
		if p := recover(); p != nil {
			fmt.Fprintf(os.Stderr, "demo: %v\n", p)
			code = 1
		}
	}()
	start := time.Now()
	e, err := vm.NewEnv()
	if err != nil || e == nil {
		r.Fatalf("no test kernel (%v): run `scripts/deps.sh kernel` and set NBDROOT_KERNEL", err)
	}
	r.Cleanup(e.Close)
	step := func(s string) { fmt.Printf("demo: %s\n", s) }

	step("building kernel26.img with `nbdroot initramfs` (hooks: base udev net nbd filesystems)")
	initrd := e.Initramfs(r, "base udev net nbd filesystems")
	step("making a busybox root filesystem image (mkfs.ext4 -d)")
	img := e.RootImage(r, vm.RootOptions{Init: demoInit})
	step("serving it: nbdroot serve --listen 127.0.0.1:0 --export root=" + img)
	srv := e.StartServer(r, 0, "--export", "root="+img)
	app := "ip=::::::dhcp nbd_server=" + vm.GuestServerIP + ":10809 root=/dev/nbd0 console=ttyS0"
	step("booting a diskless QEMU client (TCG): " + app)
	fmt.Println()
	v := vm.Start(r, vm.Options{
		Kernel: e.Vmlinuz(), Initrd: initrd, Append: app,
		Forwards: map[int]int{10809: srv.Port}, Timeout: 3 * time.Minute,
	})

	show := regexp.MustCompile(`^(nbdroot: |=====| ` + vm.Marker + `| root filesystem| uptime)`)
	printed := 0
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out := v.Console()
		if i := strings.LastIndexByte(out, '\n'); i >= printed {
			for _, l := range strings.Split(out[printed:i], "\n") {
				l = strings.TrimRight(l, "\r")
				if all || show.MatchString(l) {
					fmt.Println(l)
				}
			}
			printed = i + 1
		}
		if strings.Contains(out, "reboot: Power down") || v.Wait(0) == nil {
			break
		}
		if time.Now().After(deadline) {
			r.Fatalf("the client did not finish booting within 3 minutes")
		}
		time.Sleep(100 * time.Millisecond)
	}
	fmt.Println()
	if !strings.Contains(v.Console(), vm.Marker) {
		r.Fatalf("the client never reached its root's init; console log:\n%s", v.Console())
	}
	step(fmt.Sprintf("the client booted from NBD and powered off; whole demo %.1fs", time.Since(start).Seconds()))
	return 0
}
