package test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// TestDistroOverlay boots stock Debian 12 and 13 systemd roots from a read-only export with
// a client-side overlay (nbdroot.overlay=tmpfs:256m): systemd comes up on a writable
// overlayfs /, whose lower layer is the read-only NBD device, what the client writes lives
// in its tmpfs only, and the server's image does not change.
func TestDistroOverlay(t *testing.T) {
	e := needDistro(t)
	for _, suite := range vm.DebianSuites {
		t.Run(suite, func(t *testing.T) {
			img := e.DebianImage(t, suite, vm.DebianImageOptions{})
			before := fileSum(t, img)
			srv := e.StartServer(t, 0, "--export", "root="+img+",readonly")
			v := bootDebianHooks(t, e, suite, overlayHooks, srv, "nbdroot.overlay=tmpfs:256m")
			mounts := shell(t, v, "cat /proc/mounts", time.Minute)
			for _, want := range []string{
				`(?m)^overlay / overlay rw,.*lowerdir=/run/nbdroot/lower,upperdir=/run/nbdroot/overlay/upper`,
				`(?m)^/dev/nbd0 /run/nbdroot/lower ext4 ro[, ]`,
				`(?m)^tmpfs /run/nbdroot/overlay tmpfs rw,.*size=262144k`,
			} {
				if !regexp.MustCompile(want).MatchString(mounts) {
					t.Errorf("/proc/mounts lacks %s:\n%s", want, mounts)
				}
			}
			out := shell(t, v, "echo written-by-the-client > /etc/overlay-check && cat /etc/overlay-check && ls /run/nbdroot/overlay/upper/etc/ && test ! -e /run/nbdroot/lower/etc/overlay-check && echo LOWER-CLEAN", time.Minute)
			if !strings.Contains(out, "written-by-the-client") || !strings.Contains(out, "overlay-check") || !strings.Contains(out, "LOWER-CLEAN") {
				t.Errorf("writing to the overlay root:\n%s", out)
			}
			if out := shell(t, v, "systemctl is-system-running --wait || true", 3*time.Minute); !strings.Contains(out, "running") && !strings.Contains(out, "degraded") {
				t.Errorf("systemd state: %s", out)
			}
			t.Logf("timeline:\n%s", timeline(v.Console()))
			v.Send("poweroff\n")
			if err := v.Wait(2 * time.Minute); err != nil {
				t.Fatalf("guest did not power off: %v", err)
			}
			if strings.Contains(v.Console(), "Kernel panic") {
				t.Fatal("kernel panic on the console")
			}
			srv.Stop()
			if after := fileSum(t, img); after != before {
				t.Error("the read-only export's image changed")
			}
		})
	}
}

// TestDistroCowRestart runs the copy-on-write restart of TestCowServerRestart (a synced file
// intact across a killed server; a removed overlay failing I/O with EIO at once) with the
// kernels of Debian 12 and 13: NBD_CMD_DISCONNECT must wake the requests waiting for a
// reconnect on 6.12 as on 6.1.
func TestDistroCowRestart(t *testing.T) {
	e := needDistro(t)
	for _, suite := range vm.DebianSuites {
		for _, tc := range []cowCase{cowCases[0], cowCases[3]} {
			t.Run(suite+"/"+tc.name, func(t *testing.T) {
				root := vm.DebianRoot(t, suite)
				_, vmlinuz := vm.DebianKernel(t, root)
				cowRestart(t, e, tc, vmlinuz, e.InitramfsFromRoot(t, root, seedHooks))
			})
		}
	}
}
