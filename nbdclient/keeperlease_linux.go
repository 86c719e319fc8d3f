package nbdclient

import (
	"context"

	"github.com/nbdroot/nbdroot/dhcpclient"
)

// leaseRenewer prepares the renewal of the root interface's DHCPv4 lease in the keeper
// process, which survives switch_root the way the lease must be kept: it returns the
// function that runs it until ctx ends (a no-op without a lease, or when the renewer cannot
// start: the kernel log says why, and the address stays regardless).
func leaseRenewer(lease *dhcpclient.Spec, log *kmsgLog) func(ctx context.Context) {
	if lease == nil {
		return func(context.Context) {}
	}
	r, err := dhcpclient.NewRenewer(*lease, func(sev int, format string, args ...any) {
		log.Logf(Level(sev), "dhcp: "+format, args...)
	})
	if err != nil {
		log.Logf(LevelErr, "dhcp: the lease of %s will not be renewed: %v", lease.Interface, err)
		return func(context.Context) {}
	}
	return func(ctx context.Context) { r.Run(ctx) }
}
