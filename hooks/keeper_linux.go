package hooks

import (
	"context"
	"errors"
	"net"
	"os"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// LaunchKeeper starts the keeper of the root's NBD device (see nbdclient.Keeper) right
// after the nbd hook attached it: from then on a connection that dies is reconnected, even
// while the init itself still reads the root (a passphrase prompt, the mount). It does not
// wait for the keeper to get ready — the boot goes on meanwhile — StartKeeper does, before
// switch_root. Server names are resolved here: the keeper needs no file once it runs.
func LaunchKeeper(ctx context.Context, s *State) error {
	a := s.NBD
	if a == nil || s.keeper != nil {
		return nil
	}
	t := keeperTarget(ctx, s)
	// The device may be attached a while before the keeper is ready: it reads from it once,
	// so that a link that died in between is repaired too.
	k, err := nbdclient.LaunchKeeper(nbdclient.KeeperSpec{Target: t, Probe: a.Device}, nbdclient.KeeperStart{})
	if err != nil {
		s.Log.Printf("keeper: WARNING: %v: %s will not survive a server restart", err, a.Device)
		return nil
	}
	s.keeper = &pendingKeeper{proc: k, target: t}
	s.Log.Printf("keeper: pid %d keeps %s (servers %v, dead-connection timeout %s; messages in the kernel log)",
		k.Pid(), a.Device, t.Servers, t.DeadConnTimeout)
	return nil
}

// pendingKeeper is a keeper launched by the nbd hook, not yet known to be ready.
type pendingKeeper struct {
	proc   *nbdclient.KeeperProcess
	target nbdclient.KeeperTarget
}

// StartKeeper is the init's BeforeSwitch: it makes sure the root's device has a running
// keeper before switch_root, the last moment the init's own binary exists as a file. It
// waits for the keeper LaunchKeeper started, or starts one.
//
// A keeper that cannot start does not stop the boot: the root works without it, only not
// across a server restart, and the console says so.
func StartKeeper(ctx context.Context, s *State) error {
	a := s.NBD
	if a == nil {
		return nil
	}
	if s.keeper == nil {
		if st, err := nbdclient.QueryKeeper(a.Index); err == nil {
			s.Log.Printf("keeper: pid %d already keeps %s", st.Pid, a.Device)
			return nil
		}
		if err := LaunchKeeper(ctx, s); err != nil || s.keeper == nil {
			return err
		}
	}
	k := s.keeper
	s.keeper = nil
	// Its binary is loaded, so switch_root may delete the initramfs now; a keeper still
	// setting itself up is not waited for (it logs to the kernel log when it keeps the
	// device, and its start-up read repairs a link that died meanwhile). One that failed
	// is reported here, while the console is still ours.
	_, _, err := k.proc.Check(keeperCheck)
	switch {
	case err == nil, errors.Is(err, nbdclient.ErrKeeperStarting), errors.Is(err, nbdclient.ErrKeeperRunning):
	default:
		s.Log.Printf("keeper: WARNING: %v: %s will not survive a server restart", err, a.Device)
	}
	return nil
}

// keeperCheck is how long switch_root waits for a keeper that has not reported yet.
const keeperCheck = 20 * time.Millisecond

// keeperTarget describes the root's device for the keeper: the server in use first, then
// the others of the plan in failover order, every name resolved now.
func keeperTarget(ctx context.Context, s *State) nbdclient.KeeperTarget {
	a := s.NBD
	servers := []string{resolveAddr(ctx, s, a.Server)}
	for _, srv := range serverList(s.Plan.NBD) {
		addr := nbdclient.JoinHostPort(srv.Host, srv.Port)
		if addr != a.Server {
			servers = append(servers, resolveAddr(ctx, s, addr))
		}
	}
	return nbdclient.KeeperTarget{
		Index: a.Index, Servers: servers, Export: a.Export, Size: a.Size, Flags: a.Flags,
		Connections: a.Sockets, DeadConnTimeout: deadConnTimeout(s.Plan.NBD),
		// The identifier NBD_CMD_CONNECT carried (nbd hook): RECONFIGURE must repeat it,
		// whichever server the keeper reconnects to.
		BackendID: nbdclient.BackendID(a.Server, a.Export),
	}
}

// resolveAddr turns host:port into ip:port. A name that does not resolve is kept (the
// keeper then cannot reach that server after switch_root, and the console says so).
func resolveAddr(ctx context.Context, s *State, addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) != nil {
		return addr
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil || len(ips) == 0 {
		s.Log.Printf("keeper: WARNING: cannot resolve %s (%v): the keeper will not reach it after switch_root", host, err)
		return addr
	}
	return net.JoinHostPort(ips[0].IP.String(), port)
}

// attachLegacy attaches the root through the ioctl interface (no netlink family): the
// keeper is started now and attaches the device itself, because NBD_DO_IT blocks for as
// long as the device runs and must be held by a process that survives switch_root.
func attachLegacy(s *State, dev nbdclient.Device, socks []*os.File, addr string, servers []bootparam.Server, export string) (int, error) {
	t := nbdclient.KeeperTarget{Index: dev.Index, Export: export, Size: dev.Size, Flags: dev.ServerFlags,
		Connections: len(socks), DeadConnTimeout: 0}
	t.Servers = append(t.Servers, addr)
	for _, srv := range servers {
		if a := nbdclient.JoinHostPort(srv.Host, srv.Port); a != addr {
			t.Servers = append(t.Servers, a)
		}
	}
	ctx := context.Background()
	for i, a := range t.Servers {
		t.Servers[i] = resolveAddr(ctx, s, a)
	}
	pid, idx, err := nbdclient.StartKeeper(nbdclient.KeeperSpec{Target: t, Legacy: &dev}, nbdclient.KeeperStart{Socks: socks})
	if err != nil {
		return -1, err
	}
	s.Log.Printf("nbd: keeper pid %d owns /dev/nbd%d through the ioctl interface (no dead-connection timeout: I/O fails while the server is away)", pid, idx)
	return idx, nil
}
