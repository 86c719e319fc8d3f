//go:build !linux

package hooks

import (
	"context"
	"errors"
	"os"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/nbdclient"
)

// StartKeeper is Linux only.
func StartKeeper(ctx context.Context, s *State) error { return nil }

// LaunchKeeper is Linux only.
func LaunchKeeper(ctx context.Context, s *State) error { return nil }

type pendingKeeper struct{}

func attachLegacy(s *State, dev nbdclient.Device, socks []*os.File, addr string, servers []bootparam.Server, export string) (int, error) {
	return -1, errors.New("the NBD ioctl interface is Linux only")
}
