package bootparam

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// lookup follows a dotted path ("nbd.host", "ip.0.mode") through decoded JSON.
func lookup(v any, path string) (any, bool) {
	for _, k := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[k]; !ok {
				return nil, false
			}
		case []any:
			i := int(k[0] - '0')
			if len(k) != 1 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// TestJSONKeys checks the keys issue 3 requires, with their values, on the seed's encrypted
// command line plus a static ip=.
func TestJSONKeys(t *testing.T) {
	p, err := Parse("ip=10.0.0.5::10.0.0.1:255.255.255.0:thin01:eth0:off nbd_server=192.168.0.1:10809 " +
		"cryptdevice=/dev/nbd0:nbdcrypt:allow-discards root=/dev/mapper/nbdcrypt rootfstype=ext4 rootflags=noatime rw init=/lib/systemd/systemd")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"nbd.host":      "192.168.0.1",
		"nbd.port":      float64(10809),
		"nbd.export":    "",
		"nbd.device":    "/dev/nbd0",
		"ip.0.mode":     "static",
		"ip.0.address":  "10.0.0.5",
		"ip.0.netmask":  "255.255.255.0",
		"ip.0.gateway":  "10.0.0.1",
		"ip.0.hostname": "thin01",
		"ip.0.device":   "eth0",
		"crypt.device":  "/dev/nbd0",
		"crypt.name":    "nbdcrypt",
		"crypt.options": []any{"allow-discards"},
		"root.device":   "/dev/mapper/nbdcrypt",
		"root.fstype":   "ext4",
		"root.flags":    "noatime",
		"root.rw":       true,
		"init":          "/lib/systemd/systemd",
	}
	for path, w := range want {
		got, ok := lookup(doc, path)
		if !ok {
			t.Errorf("JSON has no key %s:\n%s", path, b)
			continue
		}
		if diff := cmp.Diff(w, got); diff != "" {
			t.Errorf("JSON %s (-want +got):\n%s", path, diff)
		}
	}
}

// TestJSONAlwaysPresent checks that the keys a script reads exist even when empty/false.
func TestJSONAlwaysPresent(t *testing.T) {
	p, err := Parse("ip=dhcp root=/dev/nbd0")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p)
	var doc any
	json.Unmarshal(b, &doc)
	for _, path := range []string{"nbd.host", "nbd.port", "nbd.export", "nbd.device", "nbd.from_dhcp", "ip.0.mode", "root.device", "root.rw", "init"} {
		if _, ok := lookup(doc, path); !ok {
			t.Errorf("JSON has no key %s:\n%s", path, b)
		}
	}
}

func TestJSONRoundTrip(t *testing.T) {
	p, err := Parse("ip=eth0:dhcp ip=10.0.0.5:::24::eth1:off:1500 BOOTIF=01-52-54-00-12-34-56 " +
		"root=nbd:10.0.0.1:root:ext4:rw:bs=4096,timeout=30 nbdroot.connections=4 nbdroot.deadconn=90s " +
		"cryptdevice=UUID=x:c cryptkey=/dev/nbd0p1:1:64 rootdelay=3 rd.break nbdroot.debug -- a b")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{`"timeout": "30s"`, `"dead_conn_timeout": "1m30s"`, `"rootdelay": "3s"`} {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("JSON lacks %s:\n%s", s, b)
		}
	}
	var back Plan
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if diff := cmp.Diff(p, &back); diff != "" {
		t.Errorf("round trip (-parsed +decoded):\n%s", diff)
	}
	if back.NBD.Timeout != 30*time.Second || back.RootDelay != 3*time.Second {
		t.Errorf("durations did not survive: %v %v", back.NBD.Timeout, back.RootDelay)
	}
}

func TestJSONBadDuration(t *testing.T) {
	var p Plan
	if err := json.Unmarshal([]byte(`{"rootdelay": "soon"}`), &p); err == nil {
		t.Error("a bad duration decoded without error")
	}
	if err := json.Unmarshal([]byte(`{"nbd": {"timeout": 5}}`), &p); err == nil {
		t.Error("a numeric duration decoded without error")
	}
}

func TestExplain(t *testing.T) {
	p, err := Parse("ip=::::::dhcp BOOTIF=01-52-54-00-12-34-56 nbd_server=192.168.0.1:10809,[fd00::1]:10810 " +
		"cryptdevice=/dev/nbd0:nbdcrypt:allow-discards cryptkey=rootfs:/k root=/dev/mapper/nbdcrypt nbdroot=10.0.0.1,x " +
		"nbdroot.connections=2 nbdroot.timeout=30 rootdelay=2 rd.break=pre-mount -- single")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := p.Explain(&out); err != nil {
		t.Fatal(err)
	}
	text := out.String()
	for _, want := range []string{
		"  ip[0]        DHCP on the interface with MAC 52:54:00:12:34:56 (BOOTIF)  (from ip=::::::dhcp)\n",
		"  boot NIC     52:54:00:12:34:56",
		"  server       192.168.0.1:10809  (from nbd_server=192.168.0.1:10809,[fd00::1]:10810)\n",
		"  failover     [fd00::1]:10810\n",
		`  export       ""  (default: no export name, the server's default export)` + "\n",
		"  device       /dev/nbd0  (from cryptdevice=/dev/nbd0:nbdcrypt:allow-discards)\n",
		"  connections  2  (from nbdroot.connections=2)\n",
		"  timeout      30s per request  (from nbdroot.timeout=30)\n",
		"  unlock       /dev/nbd0 as /dev/mapper/nbdcrypt",
		"  key          key file /k inside the initramfs  (from cryptkey=rootfs:/k)\n",
		"  mode         read-only  (default: the kernel mounts the root read-only unless rw)\n",
		"  delay        2s before looking for the root  (from rootdelay=2)\n",
		"  arguments    single  (after --)\n",
		"  break        rescue shell before filesystems  (from rd.break=pre-mount)\n",
		"  client id    52:54:00:12:34:56 (the server keys overlays and its writer lock by it)  (default: the boot NIC's MAC address, from BOOTIF=01-52-54-00-12-34-56)\n",
		"  - nbdroot=10.0.0.1,x is ignored: nbd_server=192.168.0.1:10809,[fd00::1]:10810 takes precedence",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("Explain output lacks %q:\n%s", want, text)
		}
	}
	// The fleet knobs: an identity, a client-side overlay that overrides rw.
	p, err = Parse("nbd_server=10.0.0.1 root=/dev/nbd0 rw nbdroot.id=pc-7 nbdroot.overlay=tmpfs:1g")
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	p.Explain(&out)
	for _, want := range []string{
		"  client id    pc-7 (the server keys overlays and its writer lock by it)  (from nbdroot.id=pc-7)\n",
		"  mode         read-only, under a writable overlay  (from nbdroot.overlay=tmpfs:1g)\n",
		"  overlay      tmpfs of 1g (the writes live in memory and are gone at the next boot)  (from nbdroot.overlay=tmpfs:1g)\n",
		"  - nbdroot.overlay=tmpfs:1g mounts the NBD root read-only: rw does not make it writable",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("Explain output lacks %q:\n%s", want, out.String())
		}
	}
	p, _ = Parse("nbd_server=10.0.0.1 root=/dev/nbd0 nbdroot.overlay=/dev/vda")
	out.Reset()
	p.Explain(&out)
	if want := "  overlay      on /dev/vda (its file system keeps the writes in /nbdroot-overlay, emptied at every boot)  (from nbdroot.overlay=/dev/vda)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("Explain output lacks %q:\n%s", want, out.String())
	}
	if want := "  client id    the NIC's MAC address (the server keys overlays and its writer lock by it)  (default: the MAC address of the NIC the net stage configures)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("Explain output lacks %q:\n%s", want, out.String())
	}
	// A plan waiting for DHCP says so.
	p, _ = Parse("ip=eth0:dhcp nbdroot=,root root=/dev/nbd0")
	out.Reset()
	p.Explain(&out)
	if !strings.Contains(out.String(), "server       from the DHCP root-path (option 17), else the DHCP server  (from nbdroot=,root (server from DHCP))") {
		t.Errorf("Explain of a DHCP plan:\n%s", out.String())
	}
}
