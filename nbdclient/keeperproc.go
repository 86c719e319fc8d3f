package nbdclient

import (
	"errors"
	"github.com/nbdroot/nbdroot/dhcpclient"
	"os"
	"time"

	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// KeeperArgv0 is the keeper process's argv[0]. systemd spares processes whose argv[0] begins
// with '@' when it kills everything at shutdown or before switching root
// (https://systemd.io/ROOT_STORAGE_DAEMONS/): the keeper of the root device must live as
// long as the root is mounted.
const KeeperArgv0 = "@nbdroot-keeper"

// KeeperSpec is everything a keeper process needs, handed over on a pipe as JSON.
type KeeperSpec struct {
	Target KeeperTarget `json:"target"`
	// Legacy is set when the kernel has no netlink family: the keeper attaches the device
	// itself, through the ioctl interface, with the sockets it inherits, and owns
	// NBD_DO_IT for as long as the device runs.
	Legacy *Device `json:"legacy,omitempty"`
	// Netlink is set when the keeper connects the device itself through netlink, with
	// the sockets it inherits: relayed TLS connections (Relays) need their relays running
	// before the kernel's first request.
	Netlink *Device `json:"netlink,omitempty"`
	// Relays, one per inherited socket, are the record layers of relayed TLS connections:
	// the keeper relays such a socket and the kernel gets one end of a socket pair
	// instead. A nil entry's socket goes to the kernel as it is.
	Relays []*ktls.State `json:"relays,omitempty"`
	// Sockets is how many sockets the keeper inherits (set by StartKeeper).
	Sockets int `json:"sockets,omitempty"`
	// Kmsg says the keeper inherits /dev/kmsg, opened by its parent, as the descriptor after
	// its sockets (set by LaunchKeeper): the init's /dev moves to the new root at
	// switch_root, and a keeper slow to start (a loaded machine, its lowered priority)
	// would find no /dev/kmsg to open — and no way to say so.
	Kmsg bool `json:"kmsg,omitempty"`
	// Probe names the device to read from once at start (see Keeper.Probe): set by the
	// init, whose device was attached a while before the keeper started.
	Probe string `json:"probe,omitempty"`
	// Lease is the DHCPv4 lease of the interface that carries the root, which the keeper
	// process renews after switch_root (dhcpclient.Renewer); nil for none. LaunchKeeper
	// takes it from KeeperStart.Lease.
	Lease *dhcpclient.Spec `json:"lease,omitempty"`
}

// KeeperStart says how to start the keeper process.
type KeeperStart struct {
	// Exe is the binary to run (default /proc/self/exe: the running binary, which in the
	// initramfs is the init itself).
	Exe string
	// Args follow argv[0] (the init needs none; nbdroot runs "attach --run-keeper").
	Args []string
	// Socks are inherited by the keeper: the negotiated sockets of a Legacy attach.
	Socks []*os.File
	// Ready bounds the wait for the keeper's readiness (default 30 s: a Legacy attach
	// includes the partition scan).
	Ready time.Duration
	// Lease, when set, is a DHCPv4 lease the keeper process renews beside the device (the
	// init passes the root interface's).
	Lease *dhcpclient.Spec
}

// ErrKeeperRunning reports that a keeper for the device already runs.
var ErrKeeperRunning = errors.New("a keeper for this device is already running")

// ErrNoKeeper reports that no keeper answers for a device.
var ErrNoKeeper = errors.New("no keeper runs for this device")
