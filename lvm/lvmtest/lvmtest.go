// Package lvmtest runs the real lvm2 tools on loop devices for tests: an isolated lvm2
// (its own LVM_SYSTEM_DIR, seeing only the test's loop devices, writing no backups) that
// creates physical volumes, volume groups and logical volumes without device-mapper
// (--driverloaded n: metadata only), and writes data into a logical volume's extents where
// lvm2's own reports say they are. The lvm package's tests compare our reading with lvm2's;
// the boot tests build LVM root images with it.
package lvmtest

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// TB is what the tools need of a test.
type TB interface {
	Helper()
	Fatalf(format string, args ...any)
	Skipf(format string, args ...any)
	Cleanup(func())
	TempDir() string
}

// Tools is an isolated lvm2 over some loop devices.
type Tools struct {
	t   TB
	env []string
	// Loops are the loop devices, in the order of Images.
	Loops []string
	// Images are the image files behind the loop devices.
	Images []string
}

// skip skips the test, or fails it under NBDROOT_REQUIRE_PEERS=1 (make test).
func skip(t TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// New makes n sparse images of size bytes, attaches them to loop devices (with partition
// scanning, so that partitions made on them appear as loopNpM) and returns the tools, or
// skips the test without root, lvm2 or loop devices. The loop devices are detached at the
// test's end.
func New(t TB, n int, size int64) *Tools {
	t.Helper()
	if os.Geteuid() != 0 {
		skip(t, "needs root for loop devices")
	}
	for _, tool := range []string{"lvm", "losetup"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip(t, "%s not installed (scripts/deps.sh installs lvm2): %v", tool, err)
		}
	}
	dir := t.TempDir()
	l := &Tools{t: t}
	for i := 0; i < n; i++ {
		img := filepath.Join(dir, fmt.Sprintf("pv%d.img", i))
		if err := os.WriteFile(img, nil, 0o600); err != nil {
			t.Fatalf("%v", err)
		}
		if err := os.Truncate(img, size); err != nil {
			t.Fatalf("%v", err)
		}
		out, err := exec.Command("losetup", "-f", "-P", "--show", img).CombinedOutput()
		if err != nil {
			skip(t, "losetup: %v: %s", err, out)
		}
		loop := strings.TrimSpace(string(out))
		l.Loops = append(l.Loops, loop)
		l.Images = append(l.Images, img)
		t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	}
	l.filter(l.Loops)
	return l
}

// filter writes the lvm.conf that shows lvm2 only devs.
func (l *Tools) filter(devs []string) {
	var accept []string
	for _, d := range devs {
		accept = append(accept, fmt.Sprintf(`"a|^%s$|"`, regexp.QuoteMeta(d)))
	}
	conf := fmt.Sprintf(`devices {
	filter = [ %s, "r|.*|" ]
	global_filter = [ %s, "r|.*|" ]
	obtain_device_list_from_udev = 0
	use_devicesfile = 0
}
backup {
	backup = 0
	archive = 0
}
activation {
	udev_sync = 0
	udev_rules = 0
}
`, strings.Join(accept, ", "), strings.Join(accept, ", "))
	sys := filepath.Join(l.t.TempDir(), "lvm")
	if err := os.MkdirAll(sys, 0o755); err != nil {
		l.t.Fatalf("%v", err)
	}
	if err := os.WriteFile(filepath.Join(sys, "lvm.conf"), []byte(conf), 0o644); err != nil {
		l.t.Fatalf("%v", err)
	}
	l.env = append(os.Environ(), "LVM_SYSTEM_DIR="+sys, "LVM_SUPPRESS_FD_WARNINGS=1")
}

// Partition splits loop device i into n equal GPT partitions (sgdisk-free: sfdisk, from
// util-linux) and returns their devices (loopNp1…); lvm2 sees those instead of the disk.
func (l *Tools) Partition(i, n int) []string {
	l.t.Helper()
	var script strings.Builder
	script.WriteString("label: gpt\n")
	st, err := os.Stat(l.Images[i])
	if err != nil {
		l.t.Fatalf("%v", err)
	}
	// GPT keeps 34 sectors at each end; 1 MiB alignment like every partitioner.
	usable := (st.Size()/512 - 2048 - 34) / int64(n)
	usable -= usable % 2048
	for p := 0; p < n; p++ {
		fmt.Fprintf(&script, "start=%d, size=%d, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n", 2048+int64(p)*usable, usable)
	}
	cmd := exec.Command("sfdisk", "-q", l.Loops[i])
	cmd.Stdin = strings.NewReader(script.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		skip(l.t, "sfdisk: %v: %s", err, out)
	}
	exec.Command("partx", "-u", l.Loops[i]).Run()
	var parts []string
	for p := 1; p <= n; p++ {
		dev := fmt.Sprintf("%sp%d", l.Loops[i], p)
		if _, err := os.Stat(dev); err != nil {
			skip(l.t, "partition %s did not appear (loop partition scanning): %v", dev, err)
		}
		parts = append(parts, dev)
	}
	devs := append(append([]string{}, l.Loops...), parts...)
	l.filter(devs)
	return parts
}

// Run runs an lvm command without device-mapper and returns its standard output.
func (l *Tools) Run(cmd string, args ...string) string {
	l.t.Helper()
	c := exec.Command("lvm", append([]string{cmd, "--driverloaded", "n"}, args...)...)
	c.Env = l.env
	var stderr strings.Builder
	c.Stderr = &stderr
	out, err := c.Output()
	if err != nil {
		l.t.Fatalf("lvm %s %s: %v\n%s", cmd, strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// Report runs an lvm reporting command with JSON output (sizes in sectors) and returns
// the rows of its report key (pv, vg, lv, seg).
func (l *Tools) Report(cmd, key string, args ...string) []map[string]string {
	l.t.Helper()
	out := l.Run(cmd, append([]string{"--reportformat", "json", "--units", "s", "--nosuffix"}, args...)...)
	var r struct {
		Report []map[string][]map[string]string `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		l.t.Fatalf("lvm %s report: %v\n%s", cmd, err, out)
	}
	if len(r.Report) != 1 {
		l.t.Fatalf("lvm %s report: %d reports", cmd, len(r.Report))
	}
	return r.Report[0][key]
}

// Uint parses a number of an lvm report.
func (l *Tools) Uint(s string) uint64 {
	l.t.Helper()
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		l.t.Fatalf("lvm report number %q: %v", s, err)
	}
	return n
}

// Extent is where a stretch of a logical volume lies: Length bytes at byte Offset of
// Device (a loop device or partition).
type Extent struct {
	Device         string
	Offset, Length uint64
}

// Chunks maps logical volume lv of vg onto its devices as lvm2 reports it (lvs --segments,
// pvs pe_start, vgs extent size — none of nbdroot's code): the LV's bytes in order, one
// Extent per stripe chunk (striped) or per segment (linear).
func (l *Tools) Chunks(vg, lv string) []Extent {
	l.t.Helper()
	peStart := map[string]uint64{}
	for _, r := range l.Report("pvs", "pv", "-o", "pv_name,pe_start") {
		peStart[r["pv_name"]] = l.Uint(r["pe_start"]) * 512
	}
	extent := l.Uint(l.Report("vgs", "vg", "-o", "vg_extent_size", vg)[0]["vg_extent_size"]) * 512
	devRe := regexp.MustCompile(`^(.+)\((\d+)\)$`)
	var out []Extent
	for _, r := range l.Report("lvs", "seg", "--segments", "-o", "lv_name,seg_size,segtype,stripes,stripe_size,devices", vg+"/"+lv) {
		size := l.Uint(r["seg_size"]) * 512
		var starts []Extent
		for _, d := range strings.Split(r["devices"], ",") {
			m := devRe.FindStringSubmatch(d)
			if m == nil {
				l.t.Fatalf("lvs devices %q", r["devices"])
			}
			starts = append(starts, Extent{Device: m[1], Offset: peStart[m[1]] + l.Uint(m[2])*extent})
		}
		switch r["segtype"] {
		case "linear":
			starts[0].Length = size
			out = append(out, starts[0])
		case "striped":
			chunk := l.Uint(r["stripe_size"]) * 512
			n := uint64(len(starts))
			for i := uint64(0); i*chunk < size; i++ {
				s := starts[i%n]
				out = append(out, Extent{Device: s.Device, Offset: s.Offset + (i/n)*chunk, Length: min(chunk, size-i*chunk)})
			}
		default:
			l.t.Fatalf("%s/%s: segment type %s", vg, lv, r["segtype"])
		}
	}
	return out
}

// WriteLV writes data (at most the LV's size) into logical volume lv of vg, chunk by chunk
// where lvm2 says the LV's bytes are: what writing to /dev/VG/LV would do, without
// device-mapper.
func (l *Tools) WriteLV(vg, lv string, data io.ReaderAt, size int64) {
	l.t.Helper()
	var done int64
	files := map[string]*os.File{}
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	buf := make([]byte, 1<<20)
	for _, c := range l.Chunks(vg, lv) {
		if done >= size {
			break
		}
		f := files[c.Device]
		if f == nil {
			var err error
			if f, err = os.OpenFile(c.Device, os.O_WRONLY, 0); err != nil {
				l.t.Fatalf("%v", err)
			}
			files[c.Device] = f
		}
		for off := uint64(0); off < c.Length && done < size; {
			n := min(uint64(len(buf)), c.Length-off, uint64(size-done))
			if _, err := data.ReadAt(buf[:n], done); err != nil && err != io.EOF {
				l.t.Fatalf("read LV data: %v", err)
			}
			if _, err := f.WriteAt(buf[:n], int64(c.Offset+off)); err != nil {
				l.t.Fatalf("write %s: %v", c.Device, err)
			}
			off += n
			done += int64(n)
		}
	}
	if done < size {
		l.t.Fatalf("%s/%s holds %d bytes, %d to write", vg, lv, done, size)
	}
	for _, f := range files {
		if err := f.Sync(); err != nil {
			l.t.Fatalf("%v", err)
		}
	}
}
