package vm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// DebianRootWith returns a copy of DebianRoot(suite) with packages installed by apt, cached
// beside it as PREFIX+SUITE-PACKAGES until the base root changes: roots with a network
// manager for the hand-off tests, roots with dracut for the benchmark. The copy is made and
// apt runs the first time only (minutes); callers must not modify the tree.
func DebianRootWith(t TB, suite, prefix string, packages ...string) string {
	t.Helper()
	base := DebianRoot(t, suite)
	dir, err := debianRootWith(base, suite, prefix, packages)
	if err != nil {
		t.Fatalf("debian %s root with %s: %v", suite, strings.Join(packages, " "), err)
	}
	return dir
}

func debianRootWith(base, suite, prefix string, packages []string) (string, error) {
	baseKey, err := os.ReadFile(base + ".done")
	if err != nil {
		return "", err
	}
	key := string(baseKey) + "+" + strings.Join(packages, ",") + "\n"
	dir := filepath.Join(filepath.Dir(base), prefix+suite+"-"+strings.Join(packages, "-"))
	if b, err := os.ReadFile(dir + ".done"); err == nil && string(b) == key {
		return dir, nil
	}
	// Parallel tests and test binaries build it once (as debianRoot does).
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if b, err := os.ReadFile(dir + ".done"); err == nil && string(b) == key {
		return dir, nil
	}
	run := func(cmd *exec.Cmd) error {
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, tail(string(out), 20))
		}
		return nil
	}
	tmp := dir + ".tmp"
	os.RemoveAll(tmp)
	os.Remove(dir + ".done")
	if err := run(exec.Command("cp", "-a", base, tmp)); err != nil {
		return "", err
	}
	// apt resolves the mirror's name with the host's resolver.
	if err := run(exec.Command("cp", "/etc/resolv.conf", filepath.Join(tmp, "etc", "resolv.conf"))); err != nil {
		return "", err
	}
	for _, argv := range [][]string{
		{"apt-get", "update", "-qq"},
		append([]string{"apt-get", "install", "-y", "-qq", "--no-install-recommends"}, packages...),
		{"apt-get", "clean"},
	} {
		cmd := InRoot(context.Background(), tmp, argv...)
		cmd.Env = append(cmd.Env, "DEBIAN_FRONTEND=noninteractive")
		if err := run(cmd); err != nil {
			return "", err
		}
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	return dir, os.WriteFile(dir+".done", []byte(key), 0o644)
}

// InRoot returns a command running argv chrooted into root, in a private mount namespace
// (unshare) that has /proc, /sys and /dev mounted under root: the mounts vanish with the
// process. ctx ends it.
func InRoot(ctx context.Context, root string, argv ...string) *exec.Cmd {
	const script = `set -e; r=$1; shift
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
exec chroot "$r" "$@"`
	args := append([]string{"--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", root}, argv...)
	cmd := exec.CommandContext(ctx, "unshare", args...)
	cmd.Env = append(os.Environ(), "PATH=/usr/sbin:/usr/bin:/sbin:/bin")
	return cmd
}
