//go:build linux

package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nbdroot/nbdroot/test/netlab"
	"github.com/nbdroot/nbdroot/test/vm"
)

// quickStartBlocks returns the shell blocks of the README's "## Quick start" section: the
// commands, one per logical line (continuation lines joined), comments and blank lines
// left out.
func quickStartBlocks(t *testing.T) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repo(t), "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	start := strings.Index(text, "\n## Quick start\n")
	if start < 0 {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	section := text[start+1:]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var blocks [][]string
	for _, part := range strings.Split(section, "```sh\n")[1:] {
		body, _, ok := strings.Cut(part, "\n```")
		if !ok {
			t.Fatal("a ```sh block of the quick start is not closed")
		}
		var cmds []string
		cont := ""
		for _, line := range strings.Split(body, "\n") {
			trimmed := strings.TrimSpace(line)
			if cont == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
				continue
			}
			if strings.HasSuffix(trimmed, `\`) {
				cont += strings.TrimSuffix(trimmed, `\`) + " "
				continue
			}
			cmds = append(cmds, cont+trimmed)
			cont = ""
		}
		blocks = append(blocks, cmds)
	}
	return blocks
}

// TestDistroQuickStart runs the README's quick start as it is written, on a fresh temporary
// directory, and boots the result: a QEMU PC with an iPXE ROM on a network whose own DHCP
// server hands out addresses, where the quick start's `nbdroot serve` runs with its
// proxyDHCP, TFTP and HTTP. The client must reach a login prompt on the image, take the
// README's password and have its root on /dev/nbd0.
//
// The liberties, each visible here: `make` gets DESTDIR and BUILD from the environment
// (nothing is installed into this machine's /usr/local, the shared build/ stays as it is);
// debootstrap is answered from the test cache of the same command (vm.DebianRoot, which
// debootstrapped it with these arguments); the server runs in a lab network namespace where
// it is 10.77.0.1 on br0, not 10.0.0.1 on eth0, and adds console=ttyS0 (the test reads the
// serial console).
func TestDistroQuickStart(t *testing.T) {
	needDistro(t)
	netlab.Need(t)
	needTools(t, "make", "go", "apt-get", "mkfs.ext4", "chroot")
	blocks := quickStartBlocks(t)
	if len(blocks) != 2 {
		t.Fatalf("the quick start has %d shell blocks, want 2 (preparation in the checkout, then the client and the server)", len(blocks))
	}
	dest, build, work := t.TempDir(), t.TempDir(), t.TempDir()
	shims := debootstrapShim(t)
	env := append(cleanEnv(), "DESTDIR="+dest, "BUILD="+build,
		"PATH="+filepath.Join(dest, "usr/local/bin")+":"+shims+":"+os.Getenv("PATH"))
	sh := func(dir, cmd string) {
		t.Helper()
		c := exec.Command("bash", "-o", "pipefail", "-e", "-c", cmd)
		c.Dir, c.Env = dir, env
		out, err := c.CombinedOutput()
		t.Logf("$ %s\n%s", cmd, out)
		if err != nil {
			t.Fatalf("the quick start's %q failed: %v", cmd, err)
		}
	}
	for _, cmd := range blocks[0] {
		sh(repo(t), cmd)
	}
	var serve, password string
	for _, cmd := range blocks[1] {
		if strings.HasPrefix(cmd, "nbdroot serve ") {
			serve = cmd
			continue
		}
		if m := regexp.MustCompile(`^echo root:(\S+) \| chroot`).FindStringSubmatch(cmd); m != nil {
			password = m[1]
		}
		sh(work, cmd)
	}
	if serve == "" || password == "" {
		t.Fatalf("the quick start has no `nbdroot serve` or no root password:\n%q", blocks[1])
	}
	for from, to := range map[string]string{"10.0.0.1": netlab.ServerIP, "--dhcp-interface eth0": "--dhcp-interface " + netlab.Bridge,
		"--boot-append rw": "--boot-append 'rw console=ttyS0'"} {
		if !strings.Contains(serve, from) {
			t.Fatalf("the quick start's serve command no longer has %q (update this test's substitutions):\n%s", from, serve)
		}
		serve = strings.ReplaceAll(serve, from, to)
	}

	lab := netlab.New(t)
	lab.StartRouterAdvertiser(t)
	lab.StartDHCP(t, netlab.DHCPConfig{Router: net.ParseIP(netlab.ServerIP)})
	srv := vm.StartServerCommand(t, []string{"ip", "netns", "exec", lab.Name, "env", "PATH=" + filepath.Join(dest, "usr/local/bin") + ":/usr/bin:/bin",
		"sh", "-c", fmt.Sprintf("cd '%s' && exec %s", work, serve)})
	tap := lab.AddTap(t)
	v := vm.Start(t, vm.Options{
		PXE: true, NoNet: true, Wrapper: lab.Wrapper(),
		ExtraArgs: netlab.PXENIC("n0", tap, "52:54:00:4e:42:21"),
		MemoryMB:  1024,
		Timeout:   distroTimeout + 5*time.Minute,
	})
	v.Expect(`\n\S+ login: `, distroTimeout)
	v.Send("root\n")
	v.Expect(`Password: `, time.Minute)
	v.Send(password + "\n")
	v.Expect(vm.DebianShellPrompt, 2*time.Minute)
	if mounts := shell(t, v, "cat /proc/mounts", time.Minute); !regexp.MustCompile(`(?m)^/dev/nbd0 / ext4 rw`).MatchString(mounts) {
		t.Errorf("/ is not /dev/nbd0 read-write:\n%s", mounts)
	}
	v.Send("poweroff\n")
	if err := v.Wait(2 * time.Minute); err != nil {
		t.Errorf("the client did not power off: %v", err)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`dhcp 52:54:00:4e:42:21 \(BIOS, iPXE\) DISCOVER → OFFER \(no address\) file "http://10\.77\.0\.1:8080/boot\.ipxe"`),
		regexp.MustCompile(`netboot: http 10\.77\.0\.\d+ /vmlinuz-\S+: `),
		regexp.MustCompile(`NBD_OPT_GO export "client" read-write`),
	} {
		if !want.MatchString(srv.Log()) {
			t.Errorf("the server log lacks %s:\n%s", want, srv.Log())
		}
	}
}

// debootstrapShim returns a directory with a `debootstrap` that answers the quick start's
// command from the test cache: vm.DebianRoot ran debootstrap with the same arguments. It
// refuses other arguments, so the README and the cache cannot drift apart. The copy shares
// the cache's files by hard links, except /etc and dpkg's database, which the quick start
// changes in place (chpasswd).
func debootstrapShim(t *testing.T) string {
	t.Helper()
	cache := vm.DebianRoot(t, "bookworm")
	args := "--variant=minbase --include=" + strings.Join(vm.DebianPackages, ",") + " bookworm"
	dir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
# test/quickstart_test.go: the quick start's debootstrap, from the cache of the same command.
set -e
case "$*" in
%q" "*) ;;
*) echo "debootstrap $*: not the cached root's command (debootstrap %s TARGET): update the README or vm.DebianPackages" >&2; exit 1 ;;
esac
target="$4"
cp -al %q "$target"
rm -rf "$target/etc" "$target/var/lib/dpkg"
cp -a %q "$target/etc"
cp -a %q "$target/var/lib/dpkg"
echo "I: debootstrap answered from %s" >&2
`, args, args, cache, filepath.Join(cache, "etc"), filepath.Join(cache, "var/lib/dpkg"), cache)
	if err := os.WriteFile(filepath.Join(dir, "debootstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
