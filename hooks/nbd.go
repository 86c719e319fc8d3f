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
	// DefaultReadAheadKB is the NBD device's read-ahead: 1 MiB instead of the kernel's
	// 128 KiB, so starting programs from the root costs fewer network round trips.
	DefaultReadAheadKB = 1024
)

// NBD attaches the root's export (nbdclient.Attach: the servers of the Plan in failover
// order, netlink or the ioctl interface) and launches the device's keeper: until a keeper
// runs, a connection that dies is reconnected by nobody, and the init's own reads of the
// root (mounting it, finding its init, a passphrase prompt in between) would wait for the
// dead-connection timeout and fail. The keeper is checked before switch_root (StartKeeper).
type NBD struct {
	// Budget bounds the whole connect phase; default nbdroot.connect=, else
	// DefaultConnectBudget.
	Budget time.Duration
	// ImageRoot is where the image's files are (its TLS material); "" is / (tests set it).
	ImageRoot string
}

// Name implements Hook.
func (NBD) Name() string { return "nbd" }

// Run implements Hook.
func (h NBD) Run(ctx context.Context, s *State) error {
	d := dhcpRoot(s.Net)
	t, err := s.Plan.Resolve(d)
	if err != nil {
		return fail("nbd", "DHCP root-path="+d.RootPath, "read the NBD server from the DHCP answer", err)
	}
	s.Target = t
	req, err := h.request(ctx, s, t)
	if err != nil {
		return err
	}
	a, err := s.Sys.NBD.Attach(ctx, req)
	var ke *nbdclient.KeeperError
	switch {
	case errors.As(err, &ke):
		s.Log.Printf("keeper: WARNING: %v: %s will not survive a server restart", ke.Err, ke.Device)
	case err != nil:
		return attachFailure(s, t, req, err)
	}
	s.NBD = a
	for _, w := range a.Warnings {
		// Connected; only the partition scan or the request size failed. The root may well
		// not need either: the filesystems stage decides.
		s.Log.Printf("nbd: %s", w)
	}
	if a.Info.HasOverlay && !a.Info.Overlay.IsZero() {
		s.Log.Printf("nbd: client %s has overlay %s on %s: the keeper resumes it after a reconnect, or fails I/O rather than attach another view",
			a.Target.Identity, a.Info.Overlay, nbdclient.BackendID(a.Server, a.Export))
	}
	if a.TLS != "" {
		s.Log.Printf("nbd: %s", a.TLS)
	}
	if a.ReadOnly() && t.Root.RW && s.Plan.Overlay == nil {
		s.Log.Printf("nbd: %s is read-only (NBD_FLAG_READ_ONLY): mounting the root read-only despite rw", nbdclient.BackendID(a.Server, a.Export))
	}
	switch {
	case a.Interface == nbdclient.InterfaceIoctl:
		s.Log.Printf("nbd: keeper pid %d owns %s through the ioctl interface (no dead-connection timeout: I/O fails while the server is away)", a.KeeperPid, a.Device)
	case a.Keeper != nil:
		s.keeper = a.Keeper
		s.Log.Printf("keeper: pid %d keeps %s (servers %v, dead-connection timeout %s; messages in the kernel log)",
			a.KeeperPid, a.Device, a.Target.Servers, a.Target.DeadConnTimeout)
	}
	if l := req.Keeper.Lease; l != nil && (a.Keeper != nil || a.Interface == nbdclient.InterfaceIoctl) {
		s.Log.Printf("keeper: renews the DHCP lease of %s (%s, %s) until the root's network manager takes it over", l.Interface, l.Address, l.Lease)
	}
	return nil
}

// dhcpRoot is what the net hook's DHCP lease says about the root, nil without one.
func dhcpRoot(n *NetConfig) *bootparam.DHCP {
	if n == nil {
		return nil
	}
	// The root-path (option 17) names the server; else the boot server: siaddr, then the
	// DHCP server's identifier.
	d := &bootparam.DHCP{RootPath: n.RootPath}
	switch {
	case n.NextServer != nil && !n.NextServer.IsUnspecified():
		d.ServerAddr = n.NextServer.String()
	case n.ServerID != nil:
		d.ServerAddr = n.ServerID.String()
	}
	return d
}

// request turns the Target into the attach of the root.
func (h NBD) request(ctx context.Context, s *State, t *bootparam.Target) (nbdclient.Request, error) {
	p := t.NBD
	servers := serverList(p)
	if len(servers) == 0 {
		return nbdclient.Request{}, fail("nbd", "nbd_server=", "find the NBD server",
			errors.New("no server on the command line and none from DHCP (root-path, option 17)"))
	}
	index := 0 // no device named: /dev/nbd0
	if p.Device != "" {
		var err error
		if index, err = nbdclient.DeviceNumber(p.Device); err != nil {
			return nbdclient.Request{}, fail("nbd", "root="+t.Root.Device, "choose the NBD device", err)
		}
	}
	budget := h.Budget
	if budget == 0 {
		budget = p.ConnectTimeout
	}
	if budget == 0 {
		budget = DefaultConnectBudget
	}
	id := clientIdentity(s, p)
	tls, err := h.tlsSettings(s, p)
	if err != nil {
		return nbdclient.Request{}, err
	}
	return nbdclient.Request{
		Servers: servers, Export: p.Export, Device: index, Connections: p.Connections, Budget: budget, Identity: id, TLS: tls,
		Timeout: p.Timeout, DeadConnTimeout: p.DeadConnTimeout, BlockSize: p.BlockSize,
		ReadAheadKB: DefaultReadAheadKB, Keep: true, Keeper: nbdclient.KeeperStart{Lease: leaseSpec(s, servers)},
		Log: func(msg string) { s.Log.Printf("nbd: %s", msg) },
		// Connecting needs no module: the handshake runs while the nbd module loads.
		Ready: func(ctx context.Context) error {
			if s.Modules == nil {
				return nil
			}
			return s.Modules.Wait(ctx, "nbd")
		},
	}, nil
}

// clientIdentity is who this machine is to the server (CONTRACTS.md): nbdroot.id=, else the
// boot NIC's MAC address — BOOTIF's (both in the Plan), else that of the NIC the net stage
// configured. A NIC without a usable MAC leaves the machine without identity: the server
// then keys it by its address, which the console says.
func clientIdentity(s *State, p bootparam.NBD) string {
	if p.ClientID != "" {
		return p.ClientID
	}
	if s.Net == nil || s.Net.MAC == "" {
		s.Log.Printf("nbd: no client identity (no NIC configured by the net stage; set nbdroot.id=): the server keys this client by its address")
		return ""
	}
	id, err := nbdclient.MACIdentity(s.Net.MAC)
	if err != nil {
		s.Log.Printf("nbd: no client identity from %s (%v; set nbdroot.id=): the server keys this client by its address", s.Net.Interface, err)
		return ""
	}
	return id
}

// attachFailure says what failed the way the console needs it: the step, the parameter
// behind the servers.
func attachFailure(s *State, t *bootparam.Target, req nbdclient.Request, err error) error {
	var ae *nbdclient.AttachError
	step := nbdclient.StepConnect
	if errors.As(err, &ae) {
		step = ae.Step
	}
	param := serverParam(t, req.Servers)
	if te := (*nbdclient.TLSError)(nil); errors.As(err, &te) {
		param = tlsFailureParam(s, te)
	}
	switch step {
	case nbdclient.StepReady:
		return fail("nbd", "", "load the nbd module", err)
	case nbdclient.StepBlockSize:
		return fail("nbd", param, "choose a block size", err)
	case nbdclient.StepSockets:
		return fail("nbd", param, "hand the socket to the kernel", err)
	case nbdclient.StepKernel:
		return fail("nbd", param, fmt.Sprintf("attach %s (%d bytes) to %s", nbdclient.BackendID(ae.Server, req.Export), ae.Size, t.NBD.Device), err)
	}
	tried := "connect"
	if t.Server == bootparam.ServerFromDHCPServer {
		tried = "no NBD server on the command line (nbd_server=) and no root-path (option 17) in the DHCP answer: tried the boot server"
	}
	return fail("nbd", param, tried, err)
}

// Summary implements Summarizer.
func (NBD) Summary(s *State) string {
	a := s.NBD
	if a == nil {
		return ""
	}
	ro := ""
	if a.ReadOnly() {
		ro = ", read-only"
	}
	switch {
	case a.TLSRelayed:
		ro += ", TLS relayed by the keeper"
	case a.TLS != "":
		ro += ", TLS"
	}
	return fmt.Sprintf("%s ← %s (%s, %d connection(s)%s)", a.Device, nbdclient.BackendID(a.Server, a.Export), nbd.FormatSize(a.Info.Size), a.Sockets, ro)
}

// serverList is the Target's servers as host:port, in failover order.
func serverList(p bootparam.NBD) []string {
	servers := p.Servers
	if len(servers) == 0 && p.Host != "" {
		servers = []bootparam.Server{{Host: p.Host, Port: p.Port}}
	}
	var out []string
	for _, srv := range servers {
		if srv.Port == 0 {
			srv.Port = nbd.DefaultPort
		}
		out = append(out, srv.String())
	}
	return out
}

// serverParam names the parameter the servers came from, for failure messages.
func serverParam(t *bootparam.Target, servers []string) string {
	if src := t.Sources["nbd.host"]; src != "" {
		return src
	}
	return "nbd_server=" + strings.Join(servers, ",")
}
