package hooks

import (
	"context"
	"errors"
	"time"

	"github.com/nbdroot/nbdroot/nbdclient"
)

// StartKeeper is the init's BeforeSwitch: it makes sure the root's device has a running
// keeper before switch_root, the last moment the init's own binary exists as a file. It
// checks on the keeper the nbd hook launched (nbdclient.Attach), or launches one again.
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
		// The launch at attach failed (and said so): one more try, with the same target.
		k, err := nbdclient.LaunchKeeper(nbdclient.KeeperSpec{Target: a.Target, Probe: a.Device},
			nbdclient.KeeperStart{Lease: leaseSpec(s, a.Target.Servers)})
		if err != nil {
			s.Log.Printf("keeper: WARNING: %v: %s will not survive a server restart", err, a.Device)
			return nil
		}
		s.Log.Printf("keeper: pid %d keeps %s (servers %v, dead-connection timeout %s; messages in the kernel log)",
			k.Pid(), a.Device, a.Target.Servers, a.Target.DeadConnTimeout)
		s.keeper = k
	}
	k := s.keeper
	s.keeper = nil
	// Its binary is loaded, so switch_root may delete the initramfs now; a keeper still
	// setting itself up is not waited for (it logs to the kernel log when it keeps the
	// device, and its start-up read repairs a link that died meanwhile). One that failed
	// is reported here, while the console is still ours.
	_, _, err := k.Check(keeperCheck)
	switch {
	case err == nil, errors.Is(err, nbdclient.ErrKeeperStarting), errors.Is(err, nbdclient.ErrKeeperRunning):
	default:
		s.Log.Printf("keeper: WARNING: %v: %s will not survive a server restart", err, a.Device)
	}
	return nil
}

// keeperCheck is how long switch_root waits for a keeper that has not reported yet.
const keeperCheck = 20 * time.Millisecond
