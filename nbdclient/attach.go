package nbdclient

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nbdroot/nbdroot/nbd"
)

// DefaultKeptDeadConnTimeout is the dead-connection timeout of a device with a keeper when
// none is asked for: long enough for a server restart or a switch reboot (the init's root
// and `nbdroot attach --keep` alike).
const DefaultKeptDeadConnTimeout = 120 * time.Second

// Interface is the kernel interface a device is attached through.
type Interface string

// The kernel interfaces of the nbd driver.
const (
	// InterfaceAuto is the netlink family where the kernel has it, else the ioctl interface
	// (Attach falls back when opening the family fails with ErrNoFamily).
	InterfaceAuto Interface = ""
	// InterfaceNetlink is the generic netlink family "nbd" (Linux 4.12+): the device outlives
	// its connections, and the keeper hands it new ones (NBD_CMD_RECONFIGURE).
	InterfaceNetlink Interface = "netlink"
	// InterfaceIoctl is the legacy ioctl interface: NBD_DO_IT must be held by a process for
	// as long as the device runs, so the keeper attaches the device itself.
	InterfaceIoctl Interface = "ioctl"
)

// Connector is the kernel side of a new attach through netlink: *Kernel, or a fake in tests.
type Connector interface {
	// Connect hands the sockets to a device (NBD_CMD_CONNECT) and returns its index; a
	// *SetupError means connected, but not fully prepared.
	Connect(dev Device, socks []*os.File) (int, error)
	Close() error
}

var _ Connector = (*Kernel)(nil)

// Request is one attach of an export to an NBD device of this machine: what `nbdroot
// attach`, the init's nbd hook (and, through the same steps, the keeper's reconnect) ask
// for. Zero values mean the defaults.
type Request struct {
	// Servers are host:port addresses in failover order (see bootparam.ParseServer).
	Servers []string
	// Export is the export name ("" for the server's default export).
	Export string
	// Device is the N of /dev/nbdN, or -1 for the first free device.
	Device int
	// Connections is the number of sockets (more than one needs CAN_MULTI_CONN); 0 means 1.
	Connections int

	// Budget bounds the attempts: the servers are tried in order, round after round with
	// backoff (DefaultMinBackoff to DefaultMaxBackoff, jittered), until one attaches or
	// Budget is spent. 0 tries each server once.
	Budget time.Duration
	// DialTimeout bounds one server's dial and handshakes (0: DefaultDialTimeout).
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between rounds (0: the defaults).
	MinBackoff, MaxBackoff time.Duration

	// Timeout is the kernel's per-request timeout (0: the kernel's default).
	Timeout time.Duration
	// DeadConnTimeout is how long I/O waits for a reconnect; 0 means
	// DefaultKeptDeadConnTimeout with a keeper, none without (nobody would reconnect). The
	// ioctl interface has none.
	DeadConnTimeout time.Duration
	// BlockSize is the logical block size (0: the server's minimum, at least 512).
	BlockSize int
	// ReadAheadKB is the device's read-ahead (0: the kernel's default).
	ReadAheadKB uint32
	// Interface chooses netlink or ioctl (InterfaceAuto: netlink, else ioctl).
	Interface Interface

	// Keep starts a keeper process that reconnects the device when its server goes away
	// (see Keeper). The ioctl interface always has one: it holds the device.
	Keep bool
	// Keeper says how to start the keeper process (the running binary, re-executed).
	Keeper KeeperStart

	// TLS secures the connections: NBD_OPT_STARTTLS, then kernel TLS, or relays in the
	// keeper where the kernel cannot (which then always starts, like Keep: it is on the
	// data path). It is carried into the keeper's target, whose reconnects negotiate TLS
	// again. nil: plain TCP.
	TLS *TLSSettings
	// Identity is this client's identity for the server (CONTRACTS.md: 1-64 of
	// [A-Za-z0-9._:-], by default a MAC address; see MACIdentity), sent in
	// NBD_OPT_NBDROOT_CLIENT before NBD_OPT_GO; "" sends none. Servers without nbdroot's
	// extension are used without it.
	Identity string
	// Overlay, when not zero, is a copy-on-write overlay to resume: the server must serve
	// it (an *OverlayError otherwise). Zero takes what the server gives a fresh attach.
	// Either way the overlay served goes into the keeper's target, which resumes it on
	// every reconnect.
	Overlay nbd.OverlayID

	// Ready, when set, runs once a server has negotiated, before the kernel is touched (the
	// init waits there for the nbd module, which loads while the handshake runs).
	Ready func(ctx context.Context) error
	// Log receives progress messages: multi-conn refused, failed attempts (when retrying),
	// the interface fallback, names that do not resolve for the keeper.
	Log func(msg string)

	// Dial negotiates one connection (nil: a Dialer with TLS); tests pass fakes.
	Dial DialFunc
	// Kernel opens the netlink family (nil: OpenKernel); tests pass fakes.
	Kernel func() (Connector, error)
	// Launch starts a keeper process (nil: LaunchKeeper); tests pass fakes.
	Launch func(KeeperSpec, KeeperStart) (*KeeperProcess, error)
	// SysDir is sysfs, where the ioctl interface looks for a free device ("" = /sys).
	SysDir string
}

// Attached is a device Attach connected.
type Attached struct {
	// Device is /dev/nbdN, Index its N.
	Device string
	Index  int
	// Server is the host:port the device was attached from, as dialled; Export its export.
	Server string
	Export string
	// Info is the export as the server described it.
	Info nbd.ExportInfo
	// BlockSize is the device's logical block size; Sockets the connections it has.
	BlockSize uint32
	Sockets   int
	Interface Interface
	// TLS says how the connections are secured ("" without TLS): kernel TLS, or relayed
	// by the keeper and why. TLSRelayed is set when the keeper relays any of them.
	TLS        string
	TLSRelayed bool
	// Target is what the device's keeper keeps connected (servers resolved to addresses
	// when a keeper was asked for).
	Target KeeperTarget
	// Keeper is the keeper process of a netlink device, launched but not awaited (see
	// KeeperReady); nil without one. KeeperPid is its pid, or that of the ioctl keeper.
	Keeper    *KeeperProcess
	KeeperPid int
	// Warnings are things that went wrong without stopping the attach.
	Warnings []string
}

// ReadOnly reports whether the export is read-only (NBD_FLAG_READ_ONLY): the kernel makes
// the device read-only too.
func (a *Attached) ReadOnly() bool { return a.Info.Flags&nbd.TransReadOnly != 0 }

// KeeperReady waits until the launched keeper reports ready; an error is a *KeeperError
// (the device stays attached).
func (a *Attached) KeeperReady() error {
	if a.Keeper == nil {
		return nil
	}
	pid, _, err := a.Keeper.Ready()
	if err != nil {
		a.Keeper, a.KeeperPid = nil, 0
		return &KeeperError{Device: a.Device, Err: err}
	}
	a.KeeperPid = pid
	return nil
}

// MarshalJSON writes what `nbdroot attach --json` prints.
func (a *Attached) MarshalJSON() ([]byte, error) {
	flags := nbd.FlagNames(a.Info.Flags)
	if flags == nil {
		flags = []string{}
	}
	return json.Marshal(struct {
		Device    string    `json:"device"`
		Index     int       `json:"index"`
		Server    string    `json:"server"`
		Export    string    `json:"export"`
		Size      uint64    `json:"size"`
		Flags     []string  `json:"flags"`
		BlockSize uint32    `json:"block_size"`
		Sockets   int       `json:"connections"`
		Interface Interface `json:"interface"`
		Identity  string    `json:"identity,omitempty"`
		Overlay   string    `json:"overlay,omitempty"`
		TLS       string    `json:"tls,omitempty"`
		KeeperPid int       `json:"keeper_pid,omitempty"`
		Warnings  []string  `json:"warnings,omitempty"`
	}{a.Device, a.Index, a.Server, a.Export, a.Info.Size, flags, a.BlockSize, a.Sockets, a.Interface,
		a.Target.Identity, a.overlayJSON(), a.TLS, a.KeeperPid, a.Warnings})
}

// overlayJSON is the overlay for `nbdroot attach --json`: its ID, "" without one.
func (a *Attached) overlayJSON() string {
	if a.Info.Overlay.IsZero() {
		return ""
	}
	return a.Info.Overlay.String()
}

// KeeperError reports a device that was attached but whose keeper did not start.
type KeeperError struct {
	Device string
	Err    error
}

// Error implements error.
func (e *KeeperError) Error() string {
	return fmt.Sprintf("%s is attached, but its keeper did not start (it will not survive a server restart; `nbdroot detach %s` undoes the attach): %v", e.Device, e.Device, e.Err)
}

// Unwrap returns why the keeper did not start.
func (e *KeeperError) Unwrap() error { return e.Err }

// Attach is the one way nbdroot attaches an export: it negotiates with the servers of r in
// failover order (retrying with backoff within r.Budget), then hands the connections to a
// device through the generic netlink family, or the ioctl interface where it is missing,
// and with r.Keep launches the keeper that keeps the device connected.
//
// Errors are *AttachError naming the step that failed, except a keeper that did not
// launch: that is a *KeeperError next to the attached device.
func Attach(ctx context.Context, r Request) (*Attached, error) {
	r.setDefaults()
	if r.Identity != "" {
		if err := nbd.ValidateIdentity(r.Identity); err != nil {
			return nil, fmt.Errorf("client identity: %w", err)
		}
	} else if !r.Overlay.IsZero() {
		return nil, errors.New("an overlay to resume needs a client identity: the server keys overlays by it")
	}
	loop, rounds := ctx, 1
	if r.Budget > 0 {
		var cancel context.CancelFunc
		loop, cancel = context.WithTimeout(ctx, r.Budget)
		defer cancel()
		rounds = 0
	}
	spec := linkSpec{dial: r.Dial, export: r.Export, connections: r.Connections,
		dialTimeout: r.DialTimeout, blockSize: r.BlockSize, client: r.client(), tls: r.TLS, note: r.Log}
	if !r.Overlay.IsZero() {
		spec.expect = &r.Overlay
	}
	var a *Attached
	_, round, err := failover(loop, retry{minBackoff: r.MinBackoff, maxBackoff: r.MaxBackoff, rounds: rounds,
		// Only the servers' answers are worth another try: a block size the kernel refuses
		// or a kernel that refuses the device does not change with the server.
		final:  func(err error) bool { return stepOf(err) != StepConnect },
		failed: r.logFailure,
	}, r.Servers, 0, func(addr string) error {
		l, err := negotiate(loop, spec, addr)
		if err != nil {
			return err
		}
		defer l.close()
		a, err = r.attach(ctx, l)
		return err
	})
	if err != nil {
		if r.Budget > 0 && loop.Err() != nil && stepOf(err) == StepConnect {
			err = &AttachError{Step: StepConnect, Err: fmt.Errorf("gave up after %d attempt(s) in %s: %w", round, r.Budget, err)}
		}
		return nil, err
	}
	if !r.Keep || a.KeeperPid != 0 {
		return a, nil // no keeper asked for, or it attached the device itself (ioctl, relays)
	}
	// The device may have a dead link before the keeper is ready: the keeper reads from it
	// once at its start, so that such a link is repaired too.
	proc, err := r.Launch(KeeperSpec{Target: a.Target, Probe: a.Device}, r.Keeper)
	if err != nil {
		return a, &KeeperError{Device: a.Device, Err: err}
	}
	a.Keeper, a.KeeperPid = proc, proc.Pid()
	return a, nil
}

// client is the NBD_OPT_NBDROOT_CLIENT of the request, nil without an identity.
func (r *Request) client() *nbd.ClientOption {
	if r.Identity == "" {
		return nil
	}
	return &nbd.ClientOption{ID: r.Identity, Overlay: r.Overlay}
}

func (r *Request) setDefaults() {
	if r.Dial == nil {
		r.Dial = NewDialer(r.TLS).Dial
	}
	if r.Kernel == nil {
		r.Kernel = func() (Connector, error) { return OpenKernel() }
	}
	if r.Launch == nil {
		r.Launch = LaunchKeeper
	}
	if r.Log == nil {
		r.Log = func(string) {}
	}
	if r.SysDir == "" {
		r.SysDir = "/sys"
	}
	if r.Interface == InterfaceIoctl {
		r.Keep = true
	}
	if r.DeadConnTimeout == 0 && r.Keep {
		r.DeadConnTimeout = DefaultKeptDeadConnTimeout
	}
}

// logFailure reports a failed attempt of a retrying attach.
func (r *Request) logFailure(round int, addr string, err error) {
	if r.Budget <= 0 {
		return // one round: the error is the caller's to report
	}
	var oe *nbd.OptionError
	if errors.As(err, &oe) && (oe.Type == nbd.RepErrUnknown || oe.Type == nbd.RepErrPolicy) || errors.As(err, new(*TLSError)) {
		// Retrying cannot make an unknown export appear, lift a policy or fix a certificate
		// quickly; still retry (a server may be reloading), but say so once.
		if round == 1 {
			r.Log(err.Error())
		}
		return
	}
	r.Log(fmt.Sprintf("attempt %d: %v", round, err))
}

// attach hands a negotiated link to the kernel: after Ready, through netlink, or through
// the ioctl interface where the kernel has no netlink family.
func (r *Request) attach(ctx context.Context, l *link) (*Attached, error) {
	fail := func(step Step, err error) (*Attached, error) {
		return nil, &AttachError{Step: step, Server: l.addr, Size: l.info.Size, Err: err}
	}
	if r.Ready != nil {
		if err := r.Ready(ctx); err != nil {
			return fail(StepReady, err)
		}
	}
	backend := BackendID(l.addr, r.Export)
	dev := Device{Index: r.Device, Size: l.info.Size, BlockSize: l.bs, ServerFlags: l.info.Flags,
		Timeout: r.Timeout, DeadConnTimeout: r.DeadConnTimeout, BackendID: backend,
		MaxRequest: l.info.MaxBlock, ReadAheadKB: r.ReadAheadKB}
	a := &Attached{Server: l.addr, Export: r.Export, Info: l.info, BlockSize: l.bs, Sockets: len(l.files),
		Interface: InterfaceNetlink, TLS: l.tls, TLSRelayed: l.relays != nil}
	servers, names := r.keeperServers(ctx, l.addr)
	a.Target = KeeperTarget{Servers: servers, Export: r.Export, Size: l.info.Size,
		Flags: l.info.Flags, BlockSize: l.bs, Connections: len(l.files), DeadConnTimeout: r.DeadConnTimeout,
		BackendID: backend, Identity: r.Identity, Overlay: l.info.Overlay, TLS: r.TLS}
	if r.TLS != nil && len(names) > 0 {
		t := *r.TLS
		t.Names = names
		a.Target.TLS = &t
	}
	legacy := r.Interface == InterfaceIoctl
	if !legacy {
		k, err := r.Kernel()
		switch {
		case errors.Is(err, ErrNoFamily) && r.Interface == InterfaceAuto:
			r.Log(fmt.Sprintf("%v; using the ioctl interface", err))
			legacy = true
		case err != nil:
			return fail(StepKernel, err)
		case l.relays != nil:
			k.Close() // the keeper connects the device, once its relays run
		default:
			idx, err := k.Connect(dev, l.files)
			k.Close()
			var se *SetupError
			if errors.As(err, &se) {
				// Connected; only the partition scan or the request size failed. The
				// device may well not need either: say so and go on.
				a.Warnings = append(a.Warnings, err.Error())
			} else if err != nil {
				return fail(StepKernel, err)
			}
			a.Index, a.Target.Index = idx, idx
			a.Device = "/dev/nbd" + strconv.Itoa(idx)
			return a, nil
		}
	}
	return r.attachByKeeper(l, dev, a, legacy)
}

// attachByKeeper has the keeper attach the device itself with the link's sockets: through
// the ioctl interface (legacy: NBD_DO_IT blocks for as long as the device runs, so the
// keeper holds it; there is no dead-connection timeout, I/O fails while the server is
// away), or through netlink once it started the relays of relayed TLS connections (the
// kernel's first request, the partition scan, already needs a relay on the other end).
func (r *Request) attachByKeeper(l *link, dev Device, a *Attached, legacy bool) (*Attached, error) {
	fail := func(err error) (*Attached, error) {
		return nil, &AttachError{Step: StepKernel, Server: l.addr, Size: l.info.Size, Err: err}
	}
	spec := KeeperSpec{Relays: l.relays}
	if legacy {
		dev.DeadConnTimeout, a.Target.DeadConnTimeout = 0, 0
		if dev.Index < 0 {
			idx, err := FreeDevice(r.SysDir)
			if err != nil {
				return fail(err)
			}
			dev.Index = idx
		}
		a.Target.Index = dev.Index
		spec.Legacy, a.Interface = &dev, InterfaceIoctl
	} else {
		spec.Netlink = &dev
	}
	spec.Target = a.Target
	start := r.Keeper
	start.Socks = l.files
	proc, err := r.Launch(spec, start)
	if err != nil {
		return fail(err)
	}
	pid, idx, err := proc.Ready()
	if err != nil {
		return fail(err)
	}
	a.Index, a.Target.Index, a.KeeperPid = idx, idx, pid
	a.Device = "/dev/nbd" + strconv.Itoa(idx)
	return a, nil
}

// keeperServers lists the servers a keeper reconnects to: the one in use first, then the
// others in failover order. With a keeper, names are resolved now: the keeper runs after
// switch_root, with no files of the initramfs left (no resolv.conf, no hosts file). names
// maps each address resolved to the name it came from, which a server's TLS certificate
// carries.
func (r *Request) keeperServers(ctx context.Context, used string) (servers []string, names map[string]string) {
	servers = []string{used}
	for _, s := range r.Servers {
		if s != used {
			servers = append(servers, s)
		}
	}
	if !r.Keep && r.TLS == nil {
		return servers, nil
	}
	for i, s := range servers {
		servers[i] = r.resolve(ctx, s)
		if host, _, err := net.SplitHostPort(s); err == nil && servers[i] != s {
			if names == nil {
				names = map[string]string{}
			}
			names[servers[i]] = host
		}
	}
	return servers, names
}

// resolve turns host:port into ip:port. A name that does not resolve is kept: the keeper
// then cannot reach that server after switch_root, and the log says so.
func (r *Request) resolve(ctx context.Context, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) != nil {
		return addr
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		r.Log(fmt.Sprintf("WARNING: cannot resolve %s (%v): the keeper will not reach it after switch_root", host, err))
		return addr
	}
	return net.JoinHostPort(ips[0].IP.String(), port)
}
