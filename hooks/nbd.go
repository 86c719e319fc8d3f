package hooks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/nbd"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// Defaults of the nbd hook, documented in the README.
const (
	// DefaultConnectBudget is how long the nbd hook keeps retrying the servers before it
	// gives up and reports the failure.
	DefaultConnectBudget = 30 * time.Second
	// DefaultDeadConnTimeout is how long the kernel holds I/O on a dead connection while the
	// keeper reconnects: long enough for a server restart or a switch reboot.
	DefaultDeadConnTimeout = 120 * time.Second
	// DefaultReadAheadKB is the NBD device's read-ahead: 1 MiB instead of the kernel's
	// 128 KiB, so starting programs from the root costs fewer network round trips.
	DefaultReadAheadKB = 1024
)

// NBD negotiates with the server (retrying with backoff across the servers of the Plan) and
// attaches the export to the kernel device through netlink.
type NBD struct {
	// Budget bounds the whole connect phase; default DefaultConnectBudget.
	Budget time.Duration
	// Keeper, when set, starts the device's keeper as soon as the device is attached (the
	// init passes LaunchKeeper): until a keeper runs, a connection that dies is reconnected
	// by nobody, and the init's own reads of the root (mounting it, finding its init, a
	// passphrase prompt in between) would wait for the dead-connection timeout and fail.
	// A failure to start it is logged by Keeper itself and does not fail the stage.
	Keeper func(ctx context.Context, s *State) error
}

// Name implements Hook.
func (NBD) Name() string { return "nbd" }

// Run implements Hook.
func (h NBD) Run(ctx context.Context, s *State) error {
	if s.Plan.NBD.FromDHCP && s.Net != nil {
		// No server on the command line: the DHCP answer names it (root-path, option 17,
		// or else the boot server: siaddr, then the DHCP server's identifier).
		server := ""
		switch {
		case s.Net.NextServer != nil && !s.Net.NextServer.IsUnspecified():
			server = s.Net.NextServer.String()
		case s.Net.ServerID != nil:
			server = s.Net.ServerID.String()
		}
		if err := s.Plan.ApplyDHCP(s.Net.RootPath, server); err != nil {
			return fail("nbd", "DHCP root-path="+s.Net.RootPath, "read the NBD server from the DHCP answer", err)
		}
	}
	p := s.Plan.NBD
	servers := serverList(p)
	if len(servers) == 0 {
		return fail("nbd", "nbd_server=", "find the NBD server",
			errors.New("no server on the command line and none from DHCP (root-path, option 17)"))
	}
	param := serverParam(s.Plan, servers)
	tried := "connect"
	if src := s.Plan.Sources["nbd.host"]; p.FromDHCP && strings.HasPrefix(src, "DHCP server address") {
		tried = "no NBD server on the command line (nbd_server=) and no root-path (option 17) in the DHCP answer: tried the boot server"
	}
	index := 0 // no device named: /dev/nbd0
	if p.Device != "" {
		var err error
		if index, err = nbdclient.DeviceNumber(p.Device); err != nil {
			return fail("nbd", "root="+s.Plan.Root.Device, "choose the NBD device", err)
		}
	}

	budget := h.Budget
	if budget == 0 {
		budget = p.ConnectTimeout
	}
	if budget == 0 {
		budget = DefaultConnectBudget
	}
	// Connecting needs no module: the handshake runs while the nbd module loads.
	conns, addr, err := connect(ctx, s, servers, p.Export, wantConns(p.Connections), budget)
	if err != nil {
		return fail("nbd", param, tried, err)
	}
	defer nbdclient.CloseAll(conns)
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "nbd"); err != nil {
			return fail("nbd", "", "load the nbd module", err)
		}
	}
	info := conns[0].Info
	readOnly := info.Flags&nbd.TransReadOnly != 0
	if readOnly && s.Plan.Root.RW {
		// The kernel makes the device read-only (NBD_FLAG_READ_ONLY): a read-write mount
		// would fail with a less helpful error.
		s.Log.Printf("nbd: %s is read-only (NBD_FLAG_READ_ONLY): mounting the root read-only despite rw", nbdclient.BackendID(addr, p.Export))
		s.Plan.Root.RW = false
	}
	bs, err := nbdclient.BlockSize(info, p.BlockSize)
	if err != nil {
		return fail("nbd", param, "choose a block size", err)
	}
	files, err := nbdclient.SocketFiles(conns)
	if err != nil {
		return fail("nbd", param, "hand the socket to the kernel", err)
	}
	defer nbdclient.CloseFiles(files)
	dev := nbdclient.Device{
		Index: index, Size: info.Size, BlockSize: bs, ServerFlags: info.Flags,
		Timeout: p.Timeout, DeadConnTimeout: deadConnTimeout(p),
		BackendID: nbdclient.BackendID(addr, p.Export), MaxRequest: info.MaxBlock,
		ReadAheadKB: DefaultReadAheadKB,
	}
	got, err := s.Sys.AttachNBD(dev, files)
	if errors.Is(err, nbdclient.ErrNoFamily) {
		// Kernels before 4.12: the ioctl interface, whose NBD_DO_IT must be held by a
		// process that survives switch_root — the keeper, started now.
		s.Log.Printf("nbd: %v; attaching through the ioctl interface", err)
		got, err = attachLegacy(s, dev, files, addr, servers, p.Export)
	}
	var se *nbdclient.SetupError
	if errors.As(err, &se) {
		// Connected; only the partition scan or the request size failed. The root may well
		// not need either: say so and let the filesystems stage decide.
		s.Log.Printf("nbd: %v", err)
		got, err = se.Index, nil
	}
	if err != nil {
		return fail("nbd", param, fmt.Sprintf("attach %s (%d bytes) to %s", nbdclient.BackendID(addr, p.Export), info.Size, p.Device), err)
	}
	s.NBD = &NBDAttachment{
		Device: fmt.Sprintf("/dev/nbd%d", got), Index: got, Server: addr, Export: p.Export,
		Size: info.Size, Flags: info.Flags, Sockets: len(files), ReadOnly: readOnly,
	}
	if h.Keeper != nil {
		if err := h.Keeper(ctx, s); err != nil {
			s.Log.Printf("nbd: %v", err)
		}
	}
	return nil
}

// deadConnTimeout is the plan's dead-connection timeout, or the default.
func deadConnTimeout(p bootparam.NBD) time.Duration {
	if p.DeadConnTimeout > 0 {
		return p.DeadConnTimeout
	}
	return DefaultDeadConnTimeout
}

// Summary implements Summarizer.
func (NBD) Summary(s *State) string {
	a := s.NBD
	if a == nil {
		return ""
	}
	ro := ""
	if a.ReadOnly {
		ro = ", read-only"
	}
	return fmt.Sprintf("%s ← %s (%s, %d connection(s)%s)", a.Device, nbdclient.BackendID(a.Server, a.Export), nbd.FormatSize(a.Size), a.Sockets, ro)
}

// wantConns is the number of connections asked for: one unless the cmdline says otherwise.
// More connections showed no gain above the noise in the QEMU measurements and cost the
// server that many connections per client (docs/client.md, Multi-connection).
func wantConns(n int) int {
	if n <= 0 {
		return 1
	}
	return n
}

// connect dials the servers in order, with exponential backoff between rounds, until one
// answers or the budget is spent. It opens extra connections to the same server when want > 1
// and the server allows multi-conn.
func connect(ctx context.Context, s *State, servers []bootparam.Server, export string, want int, budget time.Duration) ([]*nbdclient.Conn, string, error) {
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	backoff := 250 * time.Millisecond
	var last error
	for attempt := 1; ; attempt++ {
		for _, srv := range servers {
			addr := nbdclient.JoinHostPort(srv.Host, srv.Port)
			dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
			conns, err := nbdclient.DialConns(dctx, s.Sys.DialNBD, addr, export, want, func(msg string) { s.Log.Printf("nbd: %s", msg) })
			dcancel()
			if err == nil {
				return conns, addr, nil
			}
			last = err
			var oe *nbd.OptionError
			if errors.As(err, &oe) && (oe.Type == nbd.RepErrUnknown || oe.Type == nbd.RepErrPolicy) {
				// Retrying cannot make an unknown export appear or lift a policy quickly;
				// still retry (a server may be reloading), but say so once.
				if attempt == 1 {
					s.Log.Printf("nbd: %v", err)
				}
			} else {
				s.Log.Printf("nbd: attempt %d: %v", attempt, err)
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return nil, "", fmt.Errorf("gave up after %d attempt(s) in %s: %w", attempt, budget, last)
		case <-time.After(backoff):
		}
		if backoff *= 2; backoff > 4*time.Second {
			backoff = 4 * time.Second
		}
	}
}

func serverList(p bootparam.NBD) []bootparam.Server {
	if len(p.Servers) > 0 {
		return p.Servers
	}
	if p.Host == "" {
		return nil
	}
	port := p.Port
	if port == 0 {
		port = nbd.DefaultPort
	}
	return []bootparam.Server{{Host: p.Host, Port: port}}
}

// serverParam names the parameter the server came from, for failure messages.
func serverParam(p *bootparam.Plan, servers []bootparam.Server) string {
	if src := p.Sources["nbd.host"]; src != "" {
		return src
	}
	var list []string
	for _, s := range servers {
		list = append(list, nbdclient.JoinHostPort(s.Host, s.Port))
	}
	return "nbd_server=" + strings.Join(list, ",")
}
