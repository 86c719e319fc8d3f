package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/bootparam"
)

// runC runs `nbdroot cmdline ARGS…` in-process and returns its exit status and outputs.
func runC(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"cmdline"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestCmdlineJSON(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // JSON, compared after decoding (sources and notes left out)
	}{
		{"seed", []string{"--json", "ip=::::::dhcp nbd_server=192.168.0.1:10809 root=/dev/nbd0"}, `{
			"ip": [{"mode": "dhcp", "autoconf": "dhcp"}],
			"nbd": {"host": "192.168.0.1", "port": 10809, "servers": [{"host": "192.168.0.1", "port": 10809}],
			        "export": "", "device": "/dev/nbd0"},
			"root": {"device": "/dev/nbd0", "rw": false},
			"init": "/sbin/init"}`},
		{"seed encrypted, words as separate arguments", []string{"--json", "ip=::::::dhcp", "nbd_server=192.168.0.1:10809",
			"cryptdevice=/dev/nbd0:nbdcrypt", "root=/dev/mapper/nbdcrypt"}, `{
			"ip": [{"mode": "dhcp", "autoconf": "dhcp"}],
			"nbd": {"host": "192.168.0.1", "port": 10809, "servers": [{"host": "192.168.0.1", "port": 10809}],
			        "export": "", "device": "/dev/nbd0"},
			"crypt": {"device": "/dev/nbd0", "name": "nbdcrypt"},
			"root": {"device": "/dev/mapper/nbdcrypt", "rw": false},
			"init": "/sbin/init"}`},
		{"dracut", []string{"--json", "root=nbd:10.0.0.1:root:ext4:rw:timeout=30 ip=eth0:dhcp"}, `{
			"ip": [{"mode": "dhcp", "device": "eth0", "autoconf": "dhcp"}],
			"nbd": {"host": "10.0.0.1", "port": 10809, "servers": [{"host": "10.0.0.1", "port": 10809}],
			        "export": "root", "device": "/dev/nbd0", "timeout": "30s"},
			"root": {"device": "/dev/nbd0", "fstype": "ext4", "rw": true},
			"init": "/sbin/init"}`},
		{"debian from DHCP, static ip", []string{"--json", "ip=10.0.0.5:10.0.0.1:10.0.0.254:255.255.255.0:thin:eth0:off nbdroot=,root,nbd1"}, `{
			"ip": [{"mode": "static", "address": "10.0.0.5", "netmask": "255.255.255.0", "gateway": "10.0.0.254",
			        "server": "10.0.0.1", "hostname": "thin", "device": "eth0", "autoconf": "off"}],
			"nbd": {"host": "10.0.0.1", "port": 10809, "servers": [{"host": "10.0.0.1", "port": 10809}],
			        "export": "root", "device": "/dev/nbd1"},
			"root": {"device": "/dev/nbd1", "rw": false},
			"init": "/sbin/init"}`},
		{"mkinitcpio-nbd waiting for nothing", []string{"--json", "nbd_host=nbd.lan nbd_name=root nbd_port=10900 root=LABEL=root rw"}, `{
			"ip": [{"mode": "dhcp"}],
			"nbd": {"host": "nbd.lan", "port": 10900, "servers": [{"host": "nbd.lan", "port": 10900}],
			        "export": "root", "device": "/dev/nbd0"},
			"root": {"device": "LABEL=root", "rw": true},
			"init": "/sbin/init"}`},
		{"server from DHCP", []string{"--json", "ip=dhcp nbdroot=dhcp root=/dev/nbd0 -- single"}, `{
			"ip": [{"mode": "dhcp", "autoconf": "dhcp"}],
			"nbd": {"host": "", "port": 10809, "export": "", "device": "/dev/nbd0", "from_dhcp": true},
			"root": {"device": "/dev/nbd0", "rw": false},
			"init": "/sbin/init",
			"init_args": ["single"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runC(tt.args...)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q", code, stderr)
			}
			var got, want map[string]any
			if err := json.Unmarshal([]byte(stdout), &got); err != nil {
				t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
			}
			if err := json.Unmarshal([]byte(tt.want), &want); err != nil {
				t.Fatalf("bad test JSON: %v", err)
			}
			if _, ok := got["sources"].(map[string]any)["nbd.host"]; !ok {
				t.Errorf("JSON sources lack nbd.host:\n%s", stdout)
			}
			delete(got, "sources")
			delete(got, "notes")
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("JSON (-want +got):\n%s", diff)
			}
			// The JSON decodes back into the Plan Parse returns.
			var plan bootparam.Plan
			if err := json.Unmarshal([]byte(stdout), &plan); err != nil {
				t.Fatalf("stdout does not decode into a Plan: %v", err)
			}
			parsed, err := bootparam.Parse(strings.Join(tt.args[1:], " "))
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(parsed, &plan); diff != "" {
				t.Errorf("decoded JSON differs from Parse (-parse +json):\n%s", diff)
			}
		})
	}
}

func TestCmdlineText(t *testing.T) {
	code, stdout, stderr := runC("ip=::::::dhcp nbd_server=192.168.0.1:10809 cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt")
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, want := range []string{
		"network\n", "nbd\n", "crypt\n", "root\n", "init\n",
		"  server       192.168.0.1:10809  (from nbd_server=192.168.0.1:10809)\n",
		"  unlock       /dev/nbd0 as /dev/mapper/nbdcrypt  (from cryptdevice=/dev/nbd0:nbdcrypt)\n",
		"  device       /dev/mapper/nbdcrypt  (from root=/dev/mapper/nbdcrypt)\n",
		"  program      /sbin/init  (default: no init=)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("output lacks %q:\n%s", want, stdout)
		}
	}
}

func TestCmdlineFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cmdline")
	// /proc/cmdline ends with a newline.
	if err := os.WriteFile(path, []byte("BOOT_IMAGE=/vmlinuz nbdroot=10.0.0.1,root root=/dev/nbd0 quiet\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := runC("--json", "--file", path)
	if code != 0 || stderr != "" {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	var got bootparam.Plan
	if err := json.Unmarshal([]byte(stdout), &got); err != nil {
		t.Fatal(err)
	}
	if got.NBD.Host != "10.0.0.1" || got.NBD.Export != "root" {
		t.Errorf("--file plan: nbd %+v", got.NBD)
	}

	code, _, stderr = runC("--file", filepath.Join(dir, "absent"))
	if code != 1 || !strings.Contains(stderr, "no such file") {
		t.Errorf("absent file: exit %d, stderr %q; want 1 and the error", code, stderr)
	}
}

func TestCmdlineErrors(t *testing.T) {
	tests := []struct {
		name   string
		args   []string
		code   int
		stderr string // exact, or prefix when it ends with "…"
	}{
		{"bad port", []string{"ip=::::::dhcp nbd_server=10.0.0.1:99999 root=/dev/nbd0"}, 2,
			"nbdroot cmdline: nbd_server=\"10.0.0.1:99999\": port must be 1-65535 (form: HOST[:PORT], [IPV6]:PORT; several separated by commas)\n"},
		{"bad port with --json", []string{"--json", "nbd_server=10.0.0.1:99999 root=/dev/nbd0"}, 2,
			"nbdroot cmdline: nbd_server=\"10.0.0.1:99999\": port must be 1-65535 (form: HOST[:PORT], [IPV6]:PORT; several separated by commas)\n"},
		{"no root", []string{"nbd_server=10.0.0.1"}, 2, "nbdroot cmdline: root= is missing: nothing names the root file system (form: …"},
		{"no server, static", []string{"ip=10.0.0.5::::::off root=/dev/nbd0"}, 2, "nbdroot cmdline: nbd_server= is missing: …"},
		{"unknown flag", []string{"--yaml", "root=/dev/nbd0"}, 2, "nbdroot cmdline: flag provided but not defined: -yaml\n…"},
		{"both file and cmdline", []string{"--file", "/x", "root=/dev/nbd0"}, 2, "nbdroot cmdline: give CMDLINE or --file, not both\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runC(tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if prefix, ok := strings.CutSuffix(tt.stderr, "…"); ok {
				if !strings.HasPrefix(stderr, prefix) {
					t.Errorf("stderr %q does not start with %q", stderr, prefix)
				}
			} else if stderr != tt.stderr {
				t.Errorf("stderr:\n got %q\nwant %q", stderr, tt.stderr)
			}
			// Every error but a usage error (which prints the usage) is one line.
			if tt.name != "unknown flag" && strings.Count(stderr, "\n") != 1 {
				t.Errorf("error is not one line: %q", stderr)
			}
		})
	}
}

func TestCmdlineHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		code, stdout, stderr := runC(arg)
		if code != 0 || stderr != "" {
			t.Errorf("%s: exit %d, stderr %q", arg, code, stderr)
		}
		for _, want := range []string{"usage: nbdroot cmdline [--json] [--file PATH] ['CMDLINE']", "--json", "--file PATH", "/proc/cmdline", "exit status"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%s output lacks %q", arg, want)
			}
		}
	}
}
