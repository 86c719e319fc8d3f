package kernelcfg

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const (
	synthConfig  = "testdata/synthetic.config"
	synthModules = "testdata/modules/6.1.0-synth"
)

// testKernel returns the dir of the unpacked test kernel (config, modules) that
// scripts/deps.sh fetches: $NBDROOT_KERNEL, else ~/.cache/nbdroot/kernel/current. It skips
// the test when there is none, and fails it when NBDROOT_REQUIRE_PEERS=1 (make test).
func testKernel(t *testing.T) (config, modules string) {
	t.Helper()
	dir := os.Getenv("NBDROOT_KERNEL")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "nbdroot", "kernel", "current")
	}
	config, modules = filepath.Join(dir, "config"), filepath.Join(dir, "modules")
	if _, err := os.Stat(config); err != nil {
		if os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" {
			t.Fatalf("test kernel: %v (run scripts/deps.sh kernel)", err)
		}
		t.Skipf("no test kernel (%v); scripts/deps.sh kernel fetches it", err)
	}
	return config, modules
}

// edit returns config text with each symbol in set given the value (a "" value deletes the
// symbol's line, "n" writes "# CONFIG_X is not set").
func edit(t *testing.T, text string, set map[string]string) string {
	t.Helper()
	for name, v := range set {
		re := regexp.MustCompile(`(?m)^(CONFIG_` + name + `=.*|# CONFIG_` + name + ` is not set)\n`)
		line := ""
		switch v {
		case "":
		case "n":
			line = "# CONFIG_" + name + " is not set\n"
		default:
			line = "CONFIG_" + name + "=" + v + "\n"
		}
		if re.MatchString(text) {
			text = re.ReplaceAllLiteralString(text, line)
		} else {
			text += line
		}
	}
	return text
}

// readFile returns the content of a file, failing the test when it cannot.
func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// mustParse parses config text, failing the test on error.
func mustParse(t *testing.T, text string) *Config {
	t.Helper()
	c, err := Parse(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// byOption indexes findings by Name().
func byOption(r *Report) map[string]Finding {
	m := map[string]Finding{}
	for _, f := range r.Findings {
		m[f.Name()] = f
	}
	return m
}

// names returns the Name() of each finding.
func names(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Name())
	}
	return out
}
