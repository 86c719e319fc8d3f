package test

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// overlayHooks is the seed's hook line with the client-side overlay.
const overlayHooks = seedHooks + " overlay"

// fleetInit is the root init of the client-side overlay test. Each client (named by
// FLEETNAME= on its command line, which the kernel hands to init as an environment
// variable) writes a marker file to / and syncs (FLEET-WROTE), waits for a line on the
// console (all clients have written, and the server restarted meanwhile), then reads a file
// of the read-only lower layer past the page cache (the keeper must have reconnected it),
// and reports the markers it sees at / and in the lower layer, its mounts, and what the
// overlay's disk holds when it has one.
const fleetInit = `echo "` + vm.Marker + ` init=$0"
n=$FLEETNAME
if echo "$n" > /marker-$n && sync; then echo "FLEET-WROTE $n"; else echo "FLEET-WRITE-FAILED $n"; fi
read -r go
if dd if=/run/nbdroot/lower/bin/busybox of=/dev/null bs=64k iflag=direct 2>/run/err; then echo "FLEET-LOWER-READ $n ok"; else echo "FLEET-LOWER-READ $n $(cat /run/err)"; fi
echo "FLEET-SEES $n: $(ls / | grep marker- | tr '\n' ' ')"
echo "FLEET-LOWER $n: $(ls /run/nbdroot/lower | grep marker- | tr '\n' ' ')"
grep -E ' / |/run/nbdroot' /proc/mounts | while read -r l; do echo "FLEET-MOUNT $n $l"; done
if [ -e /run/nbdroot/overlay/keep-me ]; then echo "FLEET-DISK $n keep-me=$(cat /run/nbdroot/overlay/keep-me) stale=$(ls /stale 2>/dev/null)"; fi
echo "FLEET-DONE $n"
poweroff -f
`

// TestOverlayFleet boots four clients at once from one read-only export with client-side
// overlays (nbdroot.overlay=): three on a tmpfs (one of them asking for rw, which the
// overlay overrides) and one on a local disk whose file system holds a file of its own and
// the writes of an earlier boot. Each writes a marker to its writable /, and sees its own
// marker only; the server's image does not change; the overlay disk keeps its own file but
// not the earlier boot's writes. Meanwhile the server restarts: the keepers reconnect the
// read-only lower devices.
func TestOverlayFleet(t *testing.T) {
	e := needEnv(t)
	t.Parallel()
	img := e.RootImage(t, vm.RootOptions{Init: fleetInit})
	before := fileSum(t, img)
	// The local disk of the fourth client: ext4 with a file of its own, and what an earlier
	// boot left in the overlay directory.
	tree := t.TempDir()
	for path, content := range map[string]string{"keep-me": "kept\n", "nbdroot-overlay/upper/stale": "old\n"} {
		p := filepath.Join(tree, path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := vm.MkfsExt4(disk, tree, 32, 4096); err != nil {
		t.Fatal(err)
	}
	args := []string{"--export", "root=" + img + ",readonly"}
	srv := e.StartServer(t, 0, args...)
	port := srv.Port
	clients := []struct {
		name, overlay, extra string
		disk                 bool
	}{
		{"pc1", "tmpfs", "", false},
		{"pc2", "tmpfs:64m", "rw", false},
		{"pc3", "tmpfs", "", false},
		{"pc4", "/dev/vda", "", true},
	}
	vms := make([]*vm.VM, len(clients))
	for i, c := range clients {
		o := vm.Options{
			Kernel: e.Vmlinuz(),
			Initrd: e.Initramfs(t, overlayHooks),
			Append: fmt.Sprintf("ip=::::::dhcp nbd_server=%s:10809 root=/dev/nbd0 %s nbdroot.overlay=%s FLEETNAME=%s console=ttyS0",
				vm.GuestServerIP, c.extra, c.overlay, c.name),
			Forwards: map[int]int{10809: port},
			MACs:     []string{fmt.Sprintf("52:54:00:00:00:%02x", i+1)},
			Timeout:  2*bootTimeout + 2*time.Minute,
		}
		if c.disk {
			o.ExtraArgs = []string{"-drive", "file=" + disk + ",format=raw,if=virtio"}
		}
		vms[i] = vm.Start(t, o)
	}
	var wg sync.WaitGroup
	offs := make([]int, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, offs[i] = vms[i].ExpectAfter(0, `FLEET-(WROTE|WRITE-FAILED) `+c.name, 2*bootTimeout)
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for i, c := range clients {
		out := vms[i].Console()
		if !strings.Contains(out, "FLEET-WROTE "+c.name) {
			t.Errorf("%s could not write to its root", c.name)
		}
		// Read-only under the overlay, also for pc2, which asked for rw.
		if !regexp.MustCompile(`stage filesystems\s+\S+\s+/dev/nbd0 on /newroot \(ro\)`).MatchString(out) {
			t.Errorf("%s: the root was not mounted read-only:\n%s", c.name, timeline(out))
		}
		if !regexp.MustCompile(`stage overlay\s+\S+\s+/ = overlay of /dev/nbd0 \(read-only\) and `).MatchString(out) {
			t.Errorf("%s: no overlay stage line:\n%s", c.name, timeline(out))
		}
	}
	// All have written. The server restarts under them: their keepers reconnect the lower
	// devices, and the reads below wait for that.
	srv.Kill()
	time.Sleep(2 * time.Second)
	srv = e.StartServer(t, port, args...)
	for i := range clients {
		vms[i].Send("go\n")
	}
	for i, c := range clients {
		v := vms[i]
		v.ExpectAfter(offs[i], `FLEET-DONE `+c.name, 2*time.Minute)
		out := v.Console()[offs[i]:]
		expect := func(re string) []string {
			t.Helper()
			m := regexp.MustCompile(re).FindStringSubmatch(out)
			if m == nil {
				t.Errorf("%s: no %q in:\n%s", c.name, re, out)
			}
			return m
		}
		expect(`FLEET-LOWER-READ ` + c.name + ` ok`)
		expect(keeperLine(`nbd0: reconnected to`))
		if m := expect(`FLEET-SEES ` + c.name + `: ([^\r\n]*)`); m != nil && strings.TrimSpace(m[1]) != "marker-"+c.name {
			t.Errorf("%s sees the markers %q, want its own only", c.name, m[1])
		}
		if m := expect(`FLEET-LOWER ` + c.name + `: ([^\r\n]*)`); m != nil && strings.TrimSpace(m[1]) != "" {
			t.Errorf("%s: the read-only lower layer has markers %q", c.name, m[1])
		}
		expect(`FLEET-MOUNT ` + c.name + ` overlay / overlay rw,[^\r\n]*lowerdir=/run/nbdroot/lower`)
		expect(`FLEET-MOUNT ` + c.name + ` /dev/nbd0 /run/nbdroot/lower ext4 ro[,\s]`)
		if c.disk {
			expect(`FLEET-MOUNT ` + c.name + ` /dev/vda /run/nbdroot/overlay ext4 rw`)
			if m := expect(`FLEET-DISK ` + c.name + ` keep-me=(\S*) stale=([^\r\n]*)`); m != nil && (m[1] != "kept" || m[2] != "") {
				t.Errorf("%s: the overlay disk holds keep-me=%q (want kept) and the earlier boot's /stale=%q (want none)", c.name, m[1], m[2])
			}
		} else {
			expect(`FLEET-MOUNT ` + c.name + ` tmpfs /run/nbdroot/overlay tmpfs rw`)
		}
		t.Logf("%s:\n%s", c.name, grepLines(v.Console(), "FLEET-", "stage overlay"))
		if err := v.Wait(60 * time.Second); err != nil {
			t.Errorf("%s did not power off: %v", c.name, err)
		}
	}
	// One read-only export served them all, each under its own identity, and nothing wrote to it.
	log := srv.Log()
	for i := range clients {
		if id := fmt.Sprintf("client 52:54:00:00:00:%02x", i+1); !strings.Contains(log, id) {
			t.Errorf("the restarted server did not see %s:\n%s", id, log)
		}
	}
	if after := fileSum(t, img); after != before {
		t.Errorf("the read-only export's image changed")
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
