package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// SwitchRoot is the last stage: it moves /dev /proc /sys /run into the new root, frees the
// initramfs, makes the new root "/" and execs its init. It only returns on failure.
type SwitchRoot struct {
	// Args are passed to the new init after its name (the kernel's leftover arguments).
	Args []string
	// Env is the new init's environment.
	Env []string
	// BeforeExec runs after every check passed and before anything is moved: the last
	// moment the initramfs's files exist (the keeper starts there).
	BeforeExec func(ctx context.Context, s *State) error
}

// Name implements Hook.
func (SwitchRoot) Name() string { return "switch_root" }

// Run implements Hook.
func (sr SwitchRoot) Run(ctx context.Context, s *State) error {
	newRoot := s.NewRoot
	if newRoot == "" {
		return fail("switch_root", "", "find the new root", errors.New("no root filesystem was mounted"))
	}
	init := s.Plan.Init
	if init == "" {
		init = "/sbin/init"
	}
	if _, err := resolveIn(newRoot, init); err != nil {
		return fail("switch_root", "init="+init, "find the root's init", err)
	}
	if sr.BeforeExec != nil {
		if err := sr.BeforeExec(ctx, s); err != nil {
			return err
		}
	}
	for _, m := range []string{"/dev", "/proc", "/sys", "/run"} {
		target := filepath.Join(newRoot, m)
		if st, err := os.Stat(target); err != nil || !st.IsDir() {
			// A root without the directory cannot receive the mount; leave it behind
			// rather than fail (the root's init mounts its own).
			s.Log.Printf("switch_root: %s has no %s; not moving it", newRoot, m)
			continue
		}
		if err := unix.Mount(m, target, "", unix.MS_MOVE, ""); err != nil {
			return fail("switch_root", "", "move "+m+" to "+target, os.NewSyscallError("mount", err))
		}
	}
	if err := unix.Chdir(newRoot); err != nil {
		return fail("switch_root", "", "enter "+newRoot, err)
	}
	old, err := unix.Open("/", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail("switch_root", "", "open the initramfs root", err)
	}
	defer unix.Close(old)
	if err := unix.Mount(newRoot, "/", "", unix.MS_MOVE, ""); err != nil {
		return fail("switch_root", "", "move "+newRoot+" to /", os.NewSyscallError("mount", err))
	}
	if err := unix.Chroot("."); err != nil {
		return fail("switch_root", "", "chroot into the new root", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fail("switch_root", "", "chdir /", err)
	}
	// The initramfs is a tmpfs/ramfs nobody can reach any more: free its memory. Errors only
	// waste memory, so they are logged, not fatal.
	if err := freeInitramfs(old); err != nil {
		s.Log.Printf("switch_root: freeing the initramfs: %v", err)
	}
	s.Log.Printf("switch_root: exec %s", init)
	argv := append([]string{init}, sr.Args...)
	err = unix.Exec(init, argv, initEnv(sr.Env))
	return fail("switch_root", "init="+init, "exec the root's init", os.NewSyscallError("execve", err))
}

// initEnv is the environment of the root's init: what the kernel gave us (HOME, TERM and the
// command line's unknown NAME=VALUE words, as the kernel passes them to any init), with the
// usual defaults where the kernel set none.
func initEnv(kernel []string) []string {
	env := append([]string(nil), kernel...)
	for _, d := range []string{"HOME=/", "TERM=linux", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"} {
		name, _, _ := strings.Cut(d, "=")
		if !slices.ContainsFunc(env, func(kv string) bool { return strings.HasPrefix(kv, name+"=") }) {
			env = append(env, d)
		}
	}
	return env
}

// resolveIn resolves p inside root, following symbolic links as if root were "/" (the root's
// /sbin/init is usually an absolute link, e.g. to /lib/systemd/systemd), and checks that the
// result is an executable file.
func resolveIn(root, p string) (string, error) {
	parts := splitPath(p)
	cur, links := "/", 0
	for len(parts) > 0 {
		next := path.Join(cur, parts[0])
		parts = parts[1:]
		st, err := os.Lstat(filepath.Join(root, next))
		if err != nil {
			return "", fmt.Errorf("%s does not exist in the root filesystem (%s missing)", p, next)
		}
		if st.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			cur = "/"
		}
		parts = append(splitPath(target), parts...)
	}
	st, err := os.Stat(filepath.Join(root, cur))
	if err != nil {
		return "", err
	}
	if !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
		return "", fmt.Errorf("%s (%s) is not an executable file", p, cur)
	}
	return cur, nil
}

func splitPath(p string) []string {
	var out []string
	for _, s := range strings.Split(p, "/") {
		if s != "" && s != "." {
			out = append(out, s)
		}
	}
	return out
}

// freeInitramfs removes everything on the initramfs's filesystem, through a descriptor of its
// old root, without crossing into other filesystems.
func freeInitramfs(dirfd int) error {
	var st unix.Stat_t
	if err := unix.Fstat(dirfd, &st); err != nil {
		return err
	}
	return removeTree(dirfd, st.Dev)
}

func removeTree(dirfd int, dev uint64) error {
	// Dup so that closing the os.File does not close the caller's descriptor.
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), "initramfs")
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return err
	}
	var first error
	for _, name := range names {
		var st unix.Stat_t
		if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			continue
		}
		if st.Dev != dev {
			continue // a mount point: not ours
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			sub, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			if err == nil {
				if err := removeTree(sub, dev); err != nil && first == nil {
					first = err
				}
				unix.Close(sub)
			}
			if err := unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR); err != nil && first == nil && !errors.Is(err, unix.EBUSY) {
				first = err
			}
			continue
		}
		if err := unix.Unlinkat(dirfd, name, 0); err != nil && first == nil {
			first = err
		}
	}
	return first
}
