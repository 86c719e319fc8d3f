package nbdserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbd"
)

// Tests against real NBD clients from Debian (libnbd-bin, python3-libnbd, fio, qemu-utils).
// They skip when a tool is missing, unless NBDROOT_REQUIRE_PEERS=1 (as `make test` sets),
// in which case a missing tool is a failure.

func needPeer(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
				t.Fatalf("%s not installed (NBDROOT_REQUIRE_PEERS=1; `make deps` installs it)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
}

// peer runs a client tool with a bounded time; Debian's libnbd python module lives with
// /usr/bin/python3, so that comes first on PATH.
func peer(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/bin:/bin:"+os.Getenv("PATH"), "LIBNBD_DEBUG=0")
	cmd.Dir = t.TempDir() // fio leaves state files in its working directory
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

func randomFile(t *testing.T, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	for i := 0; i < n; i += 8 {
		v := rng.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	// Leave a few zero runs so sparse paths are exercised.
	clear(b[n/4 : n/4+(1<<20)])
	p := filepath.Join(t.TempDir(), "random.bin")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func TestPeerNbdinfo(t *testing.T) {
	needPeer(t, "nbdinfo")
	img1, img2 := makeImage(t, testSize), makeImage(t, 3*testSize)
	s := startServer(t, Config{Exports: []Export{
		{Name: "root", Path: img1, Default: true, Description: "thin client root"},
		{Name: "ro", Path: img2, ReadOnly: true, Rotational: true},
	}})
	type info struct {
		Protocol   string `json:"protocol"`
		Structured bool   `json:"structured"`
		Exports    []struct {
			Name        string   `json:"export-name"`
			Description string   `json:"description"`
			Size        int64    `json:"export-size"`
			Contexts    []string `json:"contexts"`
			ReadOnly    bool     `json:"is_read_only"`
			Rotational  bool     `json:"is_rotational"`
			Cache       bool     `json:"can_cache"`
			DF          bool     `json:"can_df"`
			FastZero    bool     `json:"can_fast_zero"`
			Flush       bool     `json:"can_flush"`
			FUA         bool     `json:"can_fua"`
			MultiConn   bool     `json:"can_multi_conn"`
			Trim        bool     `json:"can_trim"`
			Zero        bool     `json:"can_zero"`
			MinBlock    int      `json:"block_size_minimum"`
			PrefBlock   int      `json:"block_size_preferred"`
			MaxBlock    int      `json:"block_size_maximum"`
		} `json:"exports"`
	}
	parse := func(out string) info {
		var i info
		if err := json.Unmarshal([]byte(out), &i); err != nil {
			t.Fatalf("nbdinfo --json: %v\n%s", err, out)
		}
		return i
	}
	rw := parse(peer(t, "nbdinfo", "--json", "nbd://"+s.addr+"/root"))
	if rw.Protocol != "newstyle-fixed" || !rw.Structured || len(rw.Exports) != 1 {
		t.Fatalf("nbdinfo: %+v", rw)
	}
	e := rw.Exports[0]
	if e.Size != testSize || e.ReadOnly || e.Rotational || !e.Cache || !e.DF || !e.FastZero || !e.Flush || !e.FUA ||
		!e.MultiConn || !e.Trim || !e.Zero || e.MinBlock != 1 || e.PrefBlock != 4096 || e.MaxBlock != 32<<20 ||
		!slices.Contains(e.Contexts, "base:allocation") {
		t.Errorf("read-write export as nbdinfo sees it: %+v", e)
	}
	ro := parse(peer(t, "nbdinfo", "--json", "nbd://"+s.addr+"/ro")).Exports[0]
	if ro.Size != 3*testSize || !ro.ReadOnly || !ro.Rotational || ro.Trim || ro.Zero || !ro.Flush {
		t.Errorf("read-only export as nbdinfo sees it: %+v", ro)
	}
	// The empty name is the default export.
	if def := parse(peer(t, "nbdinfo", "--json", "nbd://"+s.addr)).Exports[0]; def.Size != testSize {
		t.Errorf("default export: %+v", def)
	}
	list := parse(peer(t, "nbdinfo", "--json", "--list", "nbd://"+s.addr))
	var names []string
	for _, e := range list.Exports {
		names = append(names, e.Name+":"+e.Description)
	}
	slices.Sort(names)
	if diff := cmp.Diff([]string{"ro:", "root:thin client root"}, names); diff != "" {
		t.Errorf("nbdinfo --list (-want +got):\n%s", diff)
	}
}

func TestPeerNbdcopyRoundTrip(t *testing.T) {
	needPeer(t, "nbdcopy")
	const size = 48 << 20
	src, data := randomFile(t, size)
	for _, tt := range []struct {
		name string
		opt  string
		args []string
	}{
		{"plain multi-conn", "", nil},
		{"plain one connection", "", []string{"--connections=1", "--request-size=4194304"}},
		{"cow", ",cow", nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.img")
			if err := os.Truncate(img, 0); err != nil {
				os.WriteFile(img, nil, 0o600)
			}
			os.Truncate(img, size)
			e, err := ParseExport("root=" + img + tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, Config{Exports: []Export{e}})
			// Keep a connection open so a cow overlay outlives the two nbdcopy runs.
			hold := connectTest(t, s.addr, "root", false)
			defer hold.disconnect()
			uri := "nbd://" + s.addr + "/root"
			peer(t, "nbdcopy", append(append([]string{}, tt.args...), "--flush", src, uri)...)
			out := filepath.Join(t.TempDir(), "out.bin")
			peer(t, "nbdcopy", append(append([]string{}, tt.args...), uri, out)...)
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if sha256.Sum256(got) != sha256.Sum256(data) {
				t.Fatal("nbdcopy round trip: checksums differ")
			}
			file, _ := os.ReadFile(img)
			if tt.opt == "" && sha256.Sum256(file) != sha256.Sum256(data) {
				t.Error("the image does not hold what was copied")
			}
			if tt.opt == ",cow" && !bytes.Equal(file, make([]byte, size)) {
				t.Error("a cow export changed its image")
			}
		})
	}
}

func TestPeerNbdshTrimZeroFlushBlockStatus(t *testing.T) {
	needPeer(t, "nbdsh")
	s := startServer(t, oneExport(t))
	script := `
import nbd
assert h.can_trim() and h.can_zero() and h.can_flush() and h.can_fua() and h.can_fast_zero()
h.pwrite(b"\xaa" * 65536, 0)
h.pwrite(b"\xbb" * 4096, 65536, nbd.CMD_FLAG_FUA)
h.flush()
assert h.pread(65536, 0) == b"\xaa" * 65536

def status(off, n):
    ext = []
    def cb(meta, o, entries, err):
        assert meta == nbd.CONTEXT_BASE_ALLOCATION
        ext.extend(zip(entries[0::2], entries[1::2]))
    h.block_status(n, off, cb)
    return ext

h.trim(1 << 20, 1 << 20)
h.zero(1 << 20, 2 << 20)
assert h.pread(1 << 20, 2 << 20) == bytes(1 << 20)
h.zero(65536, 3 << 20, nbd.CMD_FLAG_NO_HOLE)
assert h.pread(65536, 3 << 20) == bytes(65536)
h.zero(4096, 100, nbd.CMD_FLAG_FAST_ZERO)
assert h.pread(100, 0) == b"\xaa" * 100
assert h.pread(4096, 100) == bytes(4096)
h.cache(1 << 20, 0)
st = status(1 << 20, 3 << 20)
# Trimmed and zeroed: a hole reading as zeroes (a NO_HOLE range may be reported as a hole
# too: file systems report unwritten extents that way).
assert st[0][0] >= 2 << 20 and st[0][1] == nbd.STATE_HOLE | nbd.STATE_ZERO, st
assert sum(n for n, _ in st) == 3 << 20, st
st = status(0, 65536)
assert st == [(65536, 0)], st
h.flush()
h.shutdown()
print("ok")
`
	out := peer(t, "nbdsh", "--base-allocation", "-u", "nbd://"+s.addr+"/root", "-c", script)
	if strings.TrimSpace(out) != "ok" {
		t.Fatalf("nbdsh: %q", out)
	}
}

func TestPeerFioVerify(t *testing.T) {
	needPeer(t, "fio")
	for _, tt := range []struct{ name, opt string }{{"plain", ""}, {"cow", ",cow"}} {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseExport("root=" + makeImage(t, 32<<20) + tt.opt)
			if err != nil {
				t.Fatal(err)
			}
			s := startServer(t, Config{Exports: []Export{e}})
			out := peer(t, "fio", "--name=verify", "--ioengine=nbd", "--uri=nbd://"+s.addr+"/root",
				"--rw=randwrite", "--bsrange=512-256k", "--iodepth=32", "--size=32M",
				"--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--output-format=json")
			var res struct {
				Jobs []struct {
					Error int `json:"error"`
					Write struct {
						IOBytes int64 `json:"io_bytes"`
					} `json:"write"`
					Read struct {
						IOBytes int64 `json:"io_bytes"`
					} `json:"read"`
				} `json:"jobs"`
			}
			if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil {
				t.Fatalf("fio output: %v\n%s", err, out)
			}
			if len(res.Jobs) != 1 || res.Jobs[0].Error != 0 || res.Jobs[0].Write.IOBytes < 32<<20 || res.Jobs[0].Read.IOBytes == 0 {
				t.Fatalf("fio verify: %+v", res.Jobs)
			}
		})
	}
}

func TestPeerQemuImgCompare(t *testing.T) {
	needPeer(t, "qemu-img", "nbdcopy")
	src, _ := randomFile(t, 16<<20)
	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, 16<<20)
	s := startServer(t, Config{Exports: []Export{{Name: "root", Path: img}}})
	uri := "nbd://" + s.addr + "/root"
	peer(t, "nbdcopy", src, uri)
	out := peer(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	if !strings.Contains(out, "Images are identical") {
		t.Fatalf("qemu-img compare: %s", out)
	}
	// And a difference is noticed.
	c := connectTest(t, s.addr, "root", false)
	c.pwrite(12345, []byte("different"), nbd.CmdFlagFUA)
	c.disconnect()
	cmd := exec.Command("qemu-img", "compare", "-f", "raw", "-F", "raw", src, uri)
	if err := cmd.Run(); err == nil {
		t.Fatal("qemu-img compare did not notice a changed byte")
	}
}

func TestPeerTLS(t *testing.T) {
	needPeer(t, "nbdinfo")
	needPeer(t, "nbdcopy")
	pki := newTestPKI(t)
	// libnbd's certificate directory: ca-cert.pem, client-cert.pem, client-key.pem.
	const size = 8 << 20
	img := filepath.Join(t.TempDir(), "disk.img")
	os.WriteFile(img, nil, 0o600)
	os.Truncate(img, size)
	cfg := Config{Exports: []Export{{Name: "root", Path: img}}}
	cfg.TLSMode, cfg.TLS = TLSRequire, pki.serverConfig(t, true)
	s := startServer(t, cfg)
	_, port, _ := strings.Cut(s.addr, ":")
	uri := "nbds://localhost:" + port + "/root?tls-certificates=" + pki.dir
	out := peer(t, "nbdinfo", "--json", uri)
	if !strings.Contains(out, `"TLS": true`) || !strings.Contains(out, `"export-size": `+strconv.Itoa(size)) {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	// nbdcopy both ways through nbds://, with its several connections.
	src, data := randomFile(t, size)
	peer(t, "nbdcopy", "--flush", src, uri)
	back := filepath.Join(t.TempDir(), "back.bin")
	peer(t, "nbdcopy", uri, back)
	got, _ := os.ReadFile(back)
	if sha256.Sum256(got) != sha256.Sum256(data) {
		t.Fatal("nbdcopy round trip over TLS: checksums differ")
	}
	if !strings.Contains(s.logs.String(), "TLS up, client certificate CN=client: client identity client") {
		t.Errorf("libnbd's client certificate was not taken as the identity:\n%s", s.logs)
	}
}
