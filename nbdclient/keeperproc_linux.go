package nbdclient

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Descriptors of the keeper process (ExtraFiles start at 3).
const (
	keeperSpecFD  = 3
	keeperReadyFD = 4
	keeperSockFD  = 5
)

// StartKeeper starts a keeper process for spec and waits until it reports ready: its
// netlink sockets and /dev/kmsg open, its memory locked, and for a Legacy spec the device
// running. From then on it needs no file at all, so the caller may switch_root and delete
// the initramfs. It returns the keeper's pid and the device index (chosen by the keeper for
// a Legacy attach of index -1).
func StartKeeper(spec KeeperSpec, o KeeperStart) (pid, index int, err error) {
	k, err := LaunchKeeper(spec, o)
	if err != nil {
		return 0, -1, err
	}
	return k.Ready()
}

// KeeperProcess is a keeper that was started and may not have reported ready yet.
type KeeperProcess struct {
	cmd   *exec.Cmd
	ready *os.File
	wait  time.Duration
}

// LaunchKeeper starts a keeper process for spec and hands it its configuration without
// waiting for it to get ready, so the caller can go on (the init mounts the root meanwhile).
// When LaunchKeeper returns, the keeper's program is loaded: the file it came from may go.
// Call Ready before relying on the keeper.
func LaunchKeeper(spec KeeperSpec, o KeeperStart) (*KeeperProcess, error) {
	exe := o.Exe
	if exe == "" {
		exe = "/proc/self/exe"
	}
	specR, specW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer specR.Close()
	defer specW.Close()
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer readyW.Close()
	spec.Sockets = len(o.Socks)
	if o.Lease != nil {
		spec.Lease = o.Lease
	}
	cmd := exec.Command(exe, o.Args...)
	cmd.Args[0] = KeeperArgv0
	cmd.ExtraFiles = append([]*os.File{specR, readyW}, o.Socks...)
	if kmsg, err := os.OpenFile("/dev/kmsg", os.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
		// The keeper's log, opened while /dev is still where the keeper looks (see
		// KeeperSpec.Kmsg); without it the keeper opens its own.
		defer kmsg.Close()
		cmd.ExtraFiles = append(cmd.ExtraFiles, kmsg)
		spec.Kmsg = true
	}
	// Async preemption signals would interrupt NBD_DO_IT in the ioctl mode; the keeper has
	// nothing to preempt anyway.
	cmd.Env = []string{"GODEBUG=asyncpreemptoff=1", keeperEnv}
	cmd.Dir = "/"
	// A session of its own: no terminal's hangup or ^C reaches it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyR.Close()
		return nil, fmt.Errorf("start the keeper: %w", err)
	}
	specR.Close()
	readyW.Close()
	// Nobody waits for the keeper: it outlives this process (and after switch_root, the
	// root's init reaps it if it ever exits).
	go cmd.Wait()
	// The spec is small: the pipe buffer takes it whole, so this does not wait for the keeper.
	if err := json.NewEncoder(specW).Encode(spec); err != nil {
		cmd.Process.Kill()
		readyR.Close()
		return nil, fmt.Errorf("hand the keeper its configuration: %w", err)
	}
	wait := o.Ready
	if wait == 0 {
		wait = 30 * time.Second
	}
	return &KeeperProcess{cmd: cmd, ready: readyR, wait: wait}, nil
}

// Pid is the keeper's process id.
func (k *KeeperProcess) Pid() int { return k.cmd.Process.Pid }

// Ready waits until the keeper reports ready (or fails) and returns its pid and device
// index; it kills a keeper that does not get ready in time.
func (k *KeeperProcess) Ready() (pid, index int, err error) {
	defer k.ready.Close()
	k.ready.SetReadDeadline(time.Now().Add(k.wait))
	line, err := bufio.NewReader(k.ready).ReadString('\n')
	if err != nil {
		k.cmd.Process.Kill()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, -1, fmt.Errorf("the keeper did not report ready within %s", k.wait)
		}
		return 0, -1, fmt.Errorf("the keeper exited before it was ready (%v)", err)
	}
	return k.parseReady(line)
}

// ErrKeeperStarting is returned by Check when the keeper has not reported yet.
var ErrKeeperStarting = errors.New("the keeper is still starting")

// Check looks for the keeper's report for at most wait and, unlike Ready, leaves a keeper
// that is still starting alone (ErrKeeperStarting): it finishes on its own and logs to the
// kernel log when it keeps the device. A keeper that failed is reported, and was killed.
func (k *KeeperProcess) Check(wait time.Duration) (pid, index int, err error) {
	k.ready.SetReadDeadline(time.Now().Add(wait))
	line, err := bufio.NewReader(k.ready).ReadString('\n')
	if errors.Is(err, os.ErrDeadlineExceeded) && line == "" {
		return k.cmd.Process.Pid, -1, ErrKeeperStarting
	}
	defer k.ready.Close()
	if err != nil {
		k.cmd.Process.Kill()
		return 0, -1, fmt.Errorf("the keeper exited before it was ready (%v)", err)
	}
	return k.parseReady(line)
}

func (k *KeeperProcess) parseReady(line string) (pid, index int, err error) {
	line = strings.TrimSpace(line)
	if msg, ok := strings.CutPrefix(line, "error: "); ok {
		if strings.Contains(msg, ErrKeeperRunning.Error()) {
			return 0, -1, ErrKeeperRunning
		}
		return 0, -1, fmt.Errorf("keeper: %s", msg)
	}
	var idx int
	if _, err := fmt.Sscanf(line, "ready %d", &idx); err != nil {
		k.cmd.Process.Kill()
		return 0, -1, fmt.Errorf("keeper: unexpected readiness line %q", line)
	}
	return k.cmd.Process.Pid, idx, nil
}

// keeperEnv marks a process started by StartKeeper, whose descriptors 3 and 4 are its pipes.
const keeperEnv = "NBDROOT_KEEPER_FDS=3,4"

func envName(kv string) string  { k, _, _ := strings.Cut(kv, "="); return k }
func envValue(kv string) string { _, v, _ := strings.Cut(kv, "="); return v }

func isPipe(fd int) bool {
	var st unix.Stat_t
	return unix.Fstat(fd, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFIFO
}

// keeperSocket is the keeper's control socket, in the abstract namespace: it needs no file,
// so it works after switch_root, and it names the device, so two keepers of one device
// cannot both run.
func keeperSocket(index int) string { return "@nbdroot-keeper/nbd" + strconv.Itoa(index) }

// KeeperMain is the keeper process (argv[0] KeeperArgv0). It reads its KeeperSpec from
// descriptor 3, reports readiness on descriptor 4, and keeps the device connected until it
// is disconnected. Its messages go to the kernel log (/dev/kmsg): after switch_root the
// console belongs to the root's init. It returns the exit status.
func KeeperMain() int {
	if os.Getenv(envName(keeperEnv)) != envValue(keeperEnv) || !isPipe(keeperSpecFD) || !isPipe(keeperReadyFD) {
		fmt.Fprintln(os.Stderr, "nbdroot-keeper: started without its descriptors; the keeper is started by nbdroot-init before switch_root or by nbdroot attach --keep")
		return 2
	}
	// While it sets itself up, the keeper yields the CPU to the boot it guards: on a
	// single-CPU client the root's init starts at the same moment.
	unix.Setpriority(unix.PRIO_PROCESS, 0, 10)
	specF := os.NewFile(keeperSpecFD, "keeper-spec")
	readyF := os.NewFile(keeperReadyFD, "keeper-ready")
	fail := func(err error) int {
		fmt.Fprintf(readyF, "error: %v\n", err)
		return 1
	}
	var spec KeeperSpec
	if err := json.NewDecoder(specF).Decode(&spec); err != nil {
		return fail(fmt.Errorf("read the configuration: %w", err))
	}
	specF.Close()

	// Survive what kills ordinary processes at shutdown or on a terminal's hangup; SIGKILL
	// cannot be ignored, and systemd does not send it to '@' processes.
	signal.Ignore(unix.SIGTERM, unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGPIPE,
		unix.SIGUSR1, unix.SIGUSR2, unix.SIGTSTP, unix.SIGTTIN, unix.SIGTTOU)
	kmsg, err := keeperKmsg(spec)
	if err != nil {
		return fail(err)
	}
	log := &kmsgLog{w: kmsg, pid: os.Getpid()}
	// The keeper must run when memory is short and the root is unreachable: never chosen
	// by the OOM killer, never paged out (its pages could only come back from... the root).
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("-1000"), 0); err != nil {
		log.Logf(LevelWarning, "cannot protect the keeper from the OOM killer: %v", err)
	}
	if err := lockMemory(); err != nil {
		log.Logf(LevelWarning, "cannot lock the keeper's memory: %v", err)
	}

	renewLease := leaseRenewer(spec.Lease, log)
	t := spec.Target
	ended := make(chan struct{}, 1)
	relays := &Relays{Logf: log.Logf, Ended: ended}
	kernel, links, index, err := keeperKernel(spec, log, relays)
	if err != nil {
		return fail(err)
	}
	t.Index = index
	relays.Device = fmt.Sprintf("nbd%d", index)
	mode := InterfaceNetlink
	if spec.Legacy != nil {
		mode = InterfaceIoctl
	}
	keeper := &Keeper{Target: t, Dial: NewDialer(t.TLS).Dial, Kernel: kernel, Links: links, Logf: log.Logf,
		Interface: string(mode), Relays: relays, RelayEnded: ended}
	if spec.Probe != "" && spec.Legacy == nil && spec.Netlink == nil {
		// Opened now: after switch_root the keeper's /dev is the deleted initramfs's.
		probe, err := openProbe(spec.Probe)
		if err != nil {
			log.Logf(LevelWarning, "no start-up read of %s: %v", spec.Probe, err)
		} else {
			keeper.Probe = probe
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ln, err := net.Listen("unix", keeperSocket(t.Index))
	if err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return fail(fmt.Errorf("nbd%d: %w", t.Index, ErrKeeperRunning))
		}
		return fail(fmt.Errorf("control socket: %w", err))
	}
	go serveControl(ln, keeper, stop, log)
	if err := os.Chdir("/"); err != nil {
		return fail(err)
	}
	// Nobody may be reading any more (the init does not wait for a keeper that is slow to
	// start; SIGPIPE is ignored): the line is a courtesy, the kernel log has the news.
	fmt.Fprintf(readyF, "ready %d\n", t.Index)
	readyF.Close()
	go renewLease(ctx)
	// Start-up done: back to normal priority, so a reconnect is never starved.
	unix.Setpriority(unix.PRIO_PROCESS, 0, 0)
	dead := "no dead-connection timeout"
	if t.DeadConnTimeout > 0 {
		dead = "dead-connection timeout " + t.DeadConnTimeout.String()
	}
	who := ""
	if t.Identity != "" {
		who = fmt.Sprintf(", client %s, %s", t.Identity, overlayPhrase(t.Overlay))
	}
	secured := ""
	if n := relays.Running(); n > 0 {
		secured = fmt.Sprintf(", relaying TLS for %d", n)
	} else if t.TLS != nil {
		secured = ", TLS"
	}
	log.Logf(LevelInfo, "keeping /dev/nbd%d connected to %s (%s, %d connection(s)%s, %s%s)",
		t.Index, strings.Join(t.Servers, ", "), mode, t.Connections, secured, dead, who)
	err = keeper.Run(ctx)
	ln.Close()
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Logf(LevelErr, "keeper of /dev/nbd%d stopped: %v", t.Index, err)
		return 1
	}
	return 0
}

// openKernelEvents opens the nbd netlink family and a listener for its link notices.
func openKernelEvents() (*Kernel, *LinkEvents, error) {
	k, err := OpenKernel()
	if err != nil {
		return nil, nil, err
	}
	ev, err := OpenLinkEvents()
	if err != nil {
		k.Close()
		return nil, nil, err
	}
	return k, ev, nil
}

// keeperKmsg is the keeper's kernel log: the descriptor its parent handed over after the
// sockets, or /dev/kmsg opened now.
func keeperKmsg(spec KeeperSpec) (*os.File, error) {
	if spec.Kmsg {
		fd := keeperSockFD + spec.Sockets
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
			return nil, fmt.Errorf("descriptor %d is not the /dev/kmsg the configuration promises", fd)
		}
		unix.CloseOnExec(fd)
		return os.NewFile(uintptr(fd), "/dev/kmsg"), nil
	}
	f, err := os.OpenFile("/dev/kmsg", os.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/kmsg: %w", err)
	}
	return f, nil
}

// keeperKernel is the kernel side of a keeper and the device's index: the netlink family
// and its link notices; or, when the keeper attaches the device itself (Legacy through the
// ioctl interface, Netlink for relayed TLS connections), that device, with the sockets it
// inherited (after starting their relays). A failed partition scan is logged, not fatal.
func keeperKernel(spec KeeperSpec, log *kmsgLog, relays *Relays) (DeviceKernel, LinkSource, int, error) {
	t := spec.Target
	if spec.Legacy == nil && spec.Netlink == nil {
		k, ev, err := openKernelEvents()
		if err != nil {
			return nil, nil, 0, err
		}
		return k, ev, t.Index, nil
	}
	var socks []*os.File
	for i := 0; i < spec.Sockets; i++ {
		socks = append(socks, os.NewFile(uintptr(keeperSockFD+i), "nbd-socket"))
	}
	files, err := relays.Start(socks, spec.Relays)
	CloseFiles(socks)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("start the TLS relays: %w", err)
	}
	defer CloseFiles(files)
	var se *SetupError
	if spec.Legacy != nil {
		sess, err := AttachLegacy("/dev/nbd"+strconv.Itoa(t.Index), t.Index, *spec.Legacy, files)
		if errors.As(err, &se) {
			log.Logf(LevelWarning, "%v", err)
		} else if err != nil {
			return nil, nil, 0, err
		}
		return sess, sess, t.Index, nil
	}
	// Listening before the connect: a connection that dies at once is not missed.
	k, ev, err := openKernelEvents()
	if err != nil {
		return nil, nil, 0, err
	}
	idx, err := k.Connect(*spec.Netlink, files)
	if errors.As(err, &se) {
		log.Logf(LevelWarning, "%v", err)
	} else if err != nil {
		ev.Close()
		k.Close()
		return nil, nil, 0, err
	}
	return k, ev, idx, nil
}

// openProbe opens the device for one direct read of its first block (the page cache would
// answer a buffered read without asking the server).
func openProbe(path string) (func() error, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return func() error {
		defer unix.Close(fd)
		// O_DIRECT wants an aligned buffer: a page of its own.
		buf, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
		if err != nil {
			return err
		}
		defer unix.Munmap(buf)
		_, err = unix.Pread(fd, buf, 0)
		return err
	}, nil
}

// lockMemory locks the keeper's pages in memory: those mapped now, and later ones as they
// are touched (MCL_ONFAULT, Linux 4.4+), so the Go runtime's address space reservations
// do not become resident at once.
func lockMemory() error {
	err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT)
	if errors.Is(err, unix.EINVAL) {
		err = unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE)
	}
	return err
}

// kmsgLog writes one kernel log record per message.
type kmsgLog struct {
	mu  sync.Mutex
	w   io.Writer
	pid int
}

// Logf implements Keeper.Logf.
func (l *kmsgLog) Logf(level Level, format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, "<%d>nbdroot-keeper[%d]: %s\n", level, l.pid, fmt.Sprintf(format, args...))
}

// serveControl answers "status" and "stop" on the control socket until it is closed.
func serveControl(ln net.Listener, k *Keeper, stop func(), log *kmsgLog) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return
			}
			st := k.State()
			st.Pid = os.Getpid()
			switch strings.TrimSpace(line) {
			case "status":
				json.NewEncoder(c).Encode(st)
			case "stop":
				if uid, err := peerUID(c); err != nil || uid != 0 {
					fmt.Fprintln(c, `{"error":"only root may stop the keeper"}`)
					return
				}
				if st.Relays > 0 {
					// The relays are the device's data path: without them its I/O stops.
					fmt.Fprintln(c, `{"error":"this keeper relays the device's TLS connections: detach the device instead (nbdroot detach), and the keeper exits"}`)
					return
				}
				if st.Interface == "ioctl" {
					// NBD_DO_IT dies with this process: stopping it would disconnect the
					// device without telling the server.
					fmt.Fprintln(c, `{"error":"this keeper holds the device through the ioctl interface: detach the device instead (nbdroot detach), and the keeper exits"}`)
					return
				}
				log.Logf(LevelInfo, "asked to stop: /dev/nbd%d is no longer kept", k.Target.Index)
				json.NewEncoder(c).Encode(st)
				stop()
			default:
				fmt.Fprintln(c, `{"error":"unknown request"}`)
			}
		}()
	}
}

func peerUID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return cred.Uid, nil
}

// QueryKeeper asks the keeper of /dev/nbd<index> for its state.
func QueryKeeper(index int) (*KeeperState, error) { return keeperRequest(index, "status") }

// StopKeeper asks the keeper of /dev/nbd<index> to exit (root only); the device stays
// connected.
func StopKeeper(index int) (*KeeperState, error) { return keeperRequest(index, "stop") }

func keeperRequest(index int, req string) (*KeeperState, error) {
	c, err := net.DialTimeout("unix", keeperSocket(index), 2*time.Second)
	if err != nil {
		if errors.Is(err, unix.ECONNREFUSED) || errors.Is(err, unix.ENOENT) {
			return nil, ErrNoKeeper
		}
		return nil, fmt.Errorf("keeper of nbd%d: %w", index, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintln(c, req); err != nil {
		return nil, fmt.Errorf("keeper of nbd%d: %w", index, err)
	}
	var reply struct {
		KeeperState
		Error string `json:"error"`
	}
	if err := json.NewDecoder(c).Decode(&reply); err != nil {
		return nil, fmt.Errorf("keeper of nbd%d: %w", index, err)
	}
	if reply.Error != "" {
		return nil, fmt.Errorf("keeper of nbd%d: %s", index, reply.Error)
	}
	return &reply.KeeperState, nil
}
