package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/vm"
)

// The nbd project's own protocol suite (tests/run in NetworkBlockDevice/nbd): each test that
// exercises a server runs nbd-tester-client against `nbdroot serve` with the configuration
// tests/run gives nbd-server. Not run here, and why (docs/server.md "nbd's test suite"):
//   - inetd: nbd-server -d serving one client on standard input (we take systemd socket
//     activation instead);
//   - connstatus, nlconnect, persist: tests of nbd-client against a mocked netlink, no server;
//   - list: its nbd-client -l half is nbd-client's; the tester half runs here.
//
// The suite is built from nbd's source by scripts/nbd-tests.sh into
// $NBDROOT_CACHE/nbd-tests (nbd-tester-client, the two .tr traces, certs/); `make deps`
// (scripts/deps.sh nbdtests) does it from Debian's pinned upstream tarball. Without it the
// test skips, and fails under NBDROOT_REQUIRE_PEERS=1.
func TestNBDSuite(t *testing.T) {
	dir := nbdTestsDir()
	tester := filepath.Join(dir, "nbd-tester-client")
	if _, err := os.Stat(tester); err != nil {
		if vm.RequirePeers() {
			t.Fatalf("no nbd-tester-client in %s (scripts/deps.sh nbdtests builds it) and NBDROOT_REQUIRE_PEERS=1", dir)
		}
		t.Skipf("no nbd-tester-client in %s (scripts/deps.sh nbdtests builds it)", dir)
	}
	bin := nbdrootBinary(t)
	certs := filepath.Join(dir, "certs")
	tls := "\tcertfile = " + filepath.Join(certs, "server-cert.pem") + "\n\tkeyfile = " + filepath.Join(certs, "server-key.pem") +
		"\n\tcacertfile = " + filepath.Join(certs, "ca-cert.pem") + "\n"
	const integrity = "\tflush = true\n\tfua = true\n\trotational = true\n\tfilesize = 52428800\n\ttemporary = true\n"
	clientCert := []string{"-C", filepath.Join(certs, "client-cert.pem"), "-K", filepath.Join(certs, "client-key.pem"), "-A", filepath.Join(certs, "ca-cert.pem")}
	trace := func(name string) []string { return []string{"-t", filepath.Join(dir, name)} }
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	// generic and export are tests/run's configuration, with IMG for the 4 MiB image and
	// DIR for the test's directory; runs are the tester's arguments, one run per slice.
	tests := []struct {
		name, generic, export string
		runs                  [][]string
	}{
		{name: "cfg1", export: "[export]\n\texportname = IMG\n", runs: [][]string{{"-N", "export"}}},
		{name: "cfgsize", export: "[export]\n\texportname = IMG\n", runs: [][]string{{"-o", "-N", "export"}}},
		{name: "cfgmulti", export: "[export1]\n\texportname = IMG\n\tcopyonwrite = true\n\tlistenaddr = 127.0.0.1\n[export2]\n\texportname = IMG\n\treadonly = true\n\tlistenaddr = 127.0.0.1\n",
			runs: [][]string{{"-N", "export1"}, {"-N", "export2"}}},
		{name: "cfgnew", export: "[export1]\n\texportname = IMG\n", runs: [][]string{{"-N", "export1"}}},
		{name: "write", export: "[export1]\n\texportname = IMG\n", runs: [][]string{{"-N", "export1", "-w"}}},
		{name: "flush", export: "[export1]\n\texportname = IMG\n\tflush = true\n\tfua = true\n\trotational = true\n", runs: [][]string{{"-N", "export1", "-w", "-f"}}},
		{name: "dirconfig", generic: "\tincludedir = DIR/confdir\n", runs: [][]string{{"-N", "export1"}}},
		{name: "integrity", export: "[export1]\n\texportname = IMG\n" + integrity, runs: [][]string{cat([]string{"-N", "export1", "-i"}, trace("integrity-test.tr"))}},
		{name: "integrityhuge", export: "[export1]\n\texportname = IMG\n" + integrity, runs: [][]string{cat([]string{"-N", "export1", "-i"}, trace("integrityhuge-test.tr"))}},
		{name: "list", generic: "\tlistenaddr = 127.0.0.1\n\tallowlist = true\n", export: "[export1]\n\texportname = IMG\n\treadonly = true\n", runs: [][]string{{"-N", "export1"}}},
		{name: "rowrite", generic: "\tlistenaddr = 127.0.0.1\n", export: "[export1]\n\texportname = IMG\n\treadonly = true\n", runs: [][]string{{"-N", "export1", "-w", "-F"}}},
		{name: "unix", generic: "\tunixsock = DIR/unix.sock\n\tlistenaddr = 127.0.0.1\n", export: "[export1]\n\texportname = IMG\n", runs: [][]string{{"-N", "export1", "-u", "DIR/unix.sock"}}},
		{name: "tree", export: "[export1]\n\texportname = DIR/nbd.tree\n\ttreefiles = true\n\tfilesize = 4194304\n", runs: [][]string{{"-N", "export1", "-w"}}},
		{name: "rotree", export: "[export1]\n\texportname = DIR/nbd.tree\n\ttreefiles = true\n\tfilesize = 4194304\n\treadonly = true\n",
			runs: [][]string{{"-N", "export1", "-w", "-F"}}},
		// Ours, not in tests/run: the integrity trace (reads checked against what was
		// written, flushes and FUA) on a tree export, where tree only checks that writes
		// are answered.
		{name: "treeintegrity", export: "[export1]\n\texportname = DIR/nbd.tree\n\ttreefiles = true\n\tflush = true\n\tfua = true\n\tfilesize = 52428800\n",
			runs: [][]string{cat([]string{"-N", "export1", "-i"}, trace("integrity-test.tr"))}},
		{name: "handshake", export: "[export1]\n\texportname = IMG\n", runs: [][]string{{"-h", "-N", "export1"}}},
		{name: "tls", generic: tls, export: "[export1]\n\texportname = IMG\n" + integrity, runs: [][]string{cat([]string{"-N", "export1", "-i"}, trace("integrity-test.tr"), clientCert)}},
		{name: "tlshuge", generic: tls, export: "[export1]\n\texportname = IMG\n" + integrity, runs: [][]string{cat([]string{"-N", "export1", "-i"}, trace("integrityhuge-test.tr"), clientCert, []string{"-H", "localhost"})}},
		{name: "tlswrongcert", generic: tls, export: "[export1]\n\texportname = IMG\n" + integrity,
			runs: [][]string{cat([]string{"-N", "export1"}, trace("integrity-test.tr"), []string{"-C", filepath.Join(certs, "selfsigned-cert.pem"), "-K", filepath.Join(certs, "selfsigned-key.pem"), "-F"})}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The huge traces take most of the time, each mostly waiting on the other
			// process: side by side on two cores they take little longer than alone.
			t.Parallel()
			work := t.TempDir()
			img := filepath.Join(work, "nbd.dd")
			if err := os.WriteFile(img, make([]byte, 4<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			expand := strings.NewReplacer("IMG", img, "DIR", work).Replace
			if tt.name == "dirconfig" {
				os.Mkdir(filepath.Join(work, "confdir"), 0o755)
				if err := os.WriteFile(filepath.Join(work, "confdir", "exp1.conf"), []byte(expand("[export1]\n\texportname = IMG\n")), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			conf := filepath.Join(work, "nbd.conf")
			if err := os.WriteFile(conf, []byte(expand("[generic]\n"+tt.generic+tt.export)), 0o600); err != nil {
				t.Fatal(err)
			}
			// The file's listeners, on a free port: --listen would replace them all.
			port := freeLoopbackPort(t)
			argv := []string{bin, "serve", "-C", conf, "--listen", "127.0.0.1:" + strconv.Itoa(port), "--state-dir", filepath.Join(work, "state")}
			if strings.Contains(tt.generic, "unixsock") {
				argv = append(argv, "--unix", filepath.Join(work, "unix.sock"))
			}
			vm.StartServerCommand(t, argv)
			for _, run := range tt.runs {
				args := strings.Split(expand(strings.Join(run, "\x00")), "\x00")
				if !strings.Contains(tt.generic, "unixsock") {
					// As tests/run: the host is named where the certificate is checked
					// against it (server-cert.pem is for localhost).
					host := "127.0.0.1"
					if strings.Contains(tt.generic, "certfile") && !strings.Contains(strings.Join(run, " "), "-H") {
						host = "localhost"
					}
					args = append(args, host, strconv.Itoa(port))
				}
				start := time.Now()
				cmd := exec.Command(tester, args...)
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("nbd-tester-client %s: %v\n%s", strings.Join(args, " "), err, out)
				}
				t.Logf("nbd-tester-client %s: ok in %v", strings.Join(run, " "), time.Since(start).Round(time.Millisecond))
			}
		})
	}
}

// nbdTestsDir is where scripts/nbd-tests.sh puts the suite: $NBDROOT_CACHE/nbd-tests.
func nbdTestsDir() string {
	cache := os.Getenv("NBDROOT_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "nbdroot")
	}
	return filepath.Join(cache, "nbd-tests")
}

// nbdrootBinary is $NBDROOT_BUILD/nbdroot, else one built for the test.
func nbdrootBinary(t *testing.T) string {
	t.Helper()
	if b := os.Getenv("NBDROOT_BUILD"); b != "" {
		return filepath.Join(b, "nbdroot")
	}
	bin := filepath.Join(t.TempDir(), "nbdroot")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/nbdroot/nbdroot/cmd/nbdroot").CombinedOutput(); err != nil {
		t.Fatalf("build nbdroot: %v\n%s", err, out)
	}
	return bin
}
