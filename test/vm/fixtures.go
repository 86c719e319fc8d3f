package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Env is what every boot test needs: the test kernel, our binaries and a scratch directory
// shared by the tests of one run (images are built once).
type Env struct {
	Kernel string // directory with vmlinuz, config, modules
	Build  string // directory with nbdroot and nbdroot-init
	Work   string

	mu    sync.Mutex
	cache map[string]string
}

// Vmlinuz is the kernel image.
func (e *Env) Vmlinuz() string { return filepath.Join(e.Kernel, "vmlinuz") }

// Modules is the kernel's /lib/modules/VER.
func (e *Env) Modules() string { return filepath.Join(e.Kernel, "modules") }

// NewEnv finds the kernel (NBDROOT_KERNEL) and binaries (NBDROOT_BUILD, else builds them).
// Without a kernel the boot tests skip, unless NBDROOT_REQUIRE_PEERS=1 (make test) makes a
// missing kernel an error.
func NewEnv() (*Env, error) {
	k := os.Getenv("NBDROOT_KERNEL")
	if k == "" {
		return nil, nil
	}
	if _, err := os.Stat(filepath.Join(k, "vmlinuz")); err != nil {
		return nil, fmt.Errorf("NBDROOT_KERNEL=%s: %w (run scripts/deps.sh kernel)", k, err)
	}
	work, err := os.MkdirTemp("", "nbdroot-boot-")
	if err != nil {
		return nil, err
	}
	e := &Env{Kernel: k, Build: os.Getenv("NBDROOT_BUILD"), Work: work, cache: map[string]string{}}
	if e.Build == "" {
		e.Build = filepath.Join(work, "bin")
		for _, c := range []struct{ name, pkg, tags string }{
			{"nbdroot", "nbdroot", ""}, {"nbdroot-init", "nbdroot-init", "nbdroot_notls"}, {"nbdroot-init-tls", "nbdroot-init", ""},
		} {
			cmd := exec.Command("go", "build", "-trimpath", "-tags", c.tags, "-o", filepath.Join(e.Build, c.name), "github.com/nbdroot/nbdroot/cmd/"+c.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("build %s: %v\n%s", c.name, err, out)
			}
		}
	}
	return e, nil
}

// Close removes the scratch directory.
func (e *Env) Close() { os.RemoveAll(e.Work) }

// Tool is the path of one of our binaries.
func (e *Env) Tool(name string) string { return filepath.Join(e.Build, name) }

// cached builds something once per run, keyed by key.
func (e *Env) cached(t TB, key string, build func(path string) error) string {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.cache[key]; ok {
		return p
	}
	path := filepath.Join(e.Work, fmt.Sprintf("f%03d", len(e.cache)))
	if err := build(path); err != nil {
		t.Fatalf("build %s: %v", key, err)
	}
	e.cache[key] = path
	return path
}

// Initramfs builds an image with `nbdroot initramfs` for the test kernel; args are extra
// builder flags. Images are built once per distinct argument list.
func (e *Env) Initramfs(t TB, hooks string, args ...string) string {
	t.Helper()
	key := "initramfs " + hooks + " " + strings.Join(args, " ")
	return e.cached(t, key, func(path string) error {
		a := append([]string{"initramfs", "--modules", e.Modules(), "--hooks", hooks,
			"--init", e.Tool("nbdroot-init"), "-o", path}, args...)
		out, err := exec.Command(e.Tool("nbdroot"), a...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
}

// RootOptions shape the busybox root filesystem image.
type RootOptions struct {
	// Init is the root's /sbin/init script body (after #!/bin/sh); default prints the
	// marker, /proc/mounts and the uptime, then powers off.
	Init string
	// SizeMB defaults to 64.
	SizeMB int
	// BlockSize is mkfs.ext4's -b (default 4096).
	BlockSize int
	// Busybox is the static busybox binary of the root's shell and tools (default
	// /bin/busybox, this machine's: another architecture's root needs its own).
	Busybox string
}

// Marker is what the default root init prints first.
const Marker = "NBDROOT-ROOT-MARKER"

// DefaultInit prints the marker, the mounts and the uptime, then powers off.
const DefaultInit = `echo "` + Marker + ` init=$0 pid=$$"
echo "--- /proc/mounts"
cat /proc/mounts
echo "--- uptime $(cat /proc/uptime)"
sync
poweroff -f
`

// RootTree writes a busybox root tree into dir.
func RootTree(dir string, o RootOptions) error {
	for _, d := range []string{"bin", "sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root", "mnt"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	bbPath := o.Busybox
	if bbPath == "" {
		bbPath = "/bin/busybox"
	}
	bb, err := os.ReadFile(bbPath)
	if err != nil {
		return fmt.Errorf("busybox-static: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bin/busybox"), bb, 0o755); err != nil {
		return err
	}
	for _, a := range []string{"sh", "cat", "echo", "mount", "umount", "poweroff", "sync", "ls", "sleep",
		"dd", "md5sum", "sha256sum", "cmp", "rm", "mkdir", "grep", "ip", "dmesg", "head", "tail", "wc", "seq", "date", "stat", "uname", "hostname", "test", "[", "tr", "cut", "kill", "ps", "touch", "mv", "cp", "awk", "tee", "mkswap", "swapon", "swapoff"} {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return err
		}
	}
	init := o.Init
	if init == "" {
		init = DefaultInit
	}
	script := "#!/bin/sh\nexport PATH=/bin:/sbin\n" + init
	if err := os.WriteFile(filepath.Join(dir, "sbin/init"), []byte(script), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "etc/hostname"), []byte("nbdroot-test\n"), 0o644)
}

// RootImage builds an ext4 image of a busybox root with mkfs.ext4 -d (no mount needed).
func (e *Env) RootImage(t TB, o RootOptions) string {
	t.Helper()
	key := fmt.Sprintf("root %q %d %d %q", o.Init, o.SizeMB, o.BlockSize, o.Busybox)
	base := e.cached(t, key, func(path string) error {
		tree := path + ".tree"
		if err := RootTree(tree, o); err != nil {
			return err
		}
		return MkfsExt4(path, tree, o.SizeMB, o.BlockSize)
	})
	// Each test gets its own copy: the guest writes to it.
	img := filepath.Join(t.TempDir(), "root.img")
	if err := copyFile(base, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// MkfsExt4 makes an ext4 image of sizeMB from the tree.
func MkfsExt4(path, tree string, sizeMB, blockSize int) error {
	if sizeMB == 0 {
		sizeMB = 64
	}
	if blockSize == 0 {
		blockSize = 4096
	}
	out, err := exec.Command("mkfs.ext4", "-q", "-F", "-b", fmt.Sprint(blockSize), "-L", "nbdroot-test",
		"-E", "root_owner=0:0", "-d", tree, path, fmt.Sprintf("%dM", sizeMB)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("mkfs.ext4: %v\n%s", err, out)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Server is an `nbdroot serve` process.
type Server struct {
	// Addr is where it listens (host:port); Port its port.
	Addr string
	Port int
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan struct{}
}

var listenRe = regexp.MustCompile(`listening on (\S+)`)

// StartServer runs `nbdroot serve --listen 127.0.0.1:PORT` (0 = any free port) with args and
// waits until it listens. The test's cleanup stops it.
func (e *Env) StartServer(t TB, port int, args ...string) *Server {
	t.Helper()
	return StartServerCommand(t, append([]string{e.Tool("nbdroot"), "serve", "--listen", fmt.Sprintf("127.0.0.1:%d", port)}, args...))
}

// StartServerCommand runs an `nbdroot serve` command line (argv, perhaps behind a wrapper
// such as `ip netns exec NS`) and waits for its "listening on ADDR" line. The test's cleanup
// stops it and, when the test failed, logs what it printed.
func StartServerCommand(t TB, argv []string) *Server {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cmd: cmd, log: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout = s.log // the log lines are on stderr; anything else joins the log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", strings.Join(argv, " "), err)
	}
	ready := make(chan string, 1)
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			s.log.Write([]byte(line + "\n"))
			if m := listenRe.FindStringSubmatch(line); m != nil {
				select {
				case ready <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
	}()
	t.Cleanup(func() {
		s.Stop()
		if t.Failed() {
			t.Logf("server log:\n%s", s.Log())
		}
	})
	select {
	case s.Addr = <-ready:
		_, port, err := net.SplitHostPort(s.Addr)
		if err != nil {
			t.Fatalf("nbdroot serve: listening on %q: %v", s.Addr, err)
		}
		s.Port, _ = strconv.Atoi(port)
	case <-s.done:
		t.Fatalf("nbdroot serve exited:\n%s", s.Log())
	case <-time.After(20 * time.Second):
		t.Fatalf("nbdroot serve did not listen within 20s:\n%s", s.Log())
	}
	return s
}

// Log returns what the server printed.
func (s *Server) Log() string { return s.log.String() }

// Stop terminates the server (SIGTERM, then SIGKILL) and waits for it.
func (s *Server) Stop() {
	if s.cmd.Process == nil {
		return
	}
	s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.cmd.Process.Kill()
		<-s.done
	}
}

// Kill kills the server at once (SIGKILL), as a crash would.
func (s *Server) Kill() {
	s.cmd.Process.Kill()
	<-s.done
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// RequirePeers reports whether missing tools must fail tests (make test sets it).
func RequirePeers() bool { return os.Getenv("NBDROOT_REQUIRE_PEERS") == "1" }

// Context returns a context bounded by the test's deadline.
func Context(t TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
