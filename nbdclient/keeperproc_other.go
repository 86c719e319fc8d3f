//go:build !linux

package nbdclient

import (
	"errors"
	"fmt"
	"os"
	"time"
)

var errLinuxOnly = errors.New("the NBD keeper is Linux only")

// StartKeeper is Linux only.
func StartKeeper(spec KeeperSpec, o KeeperStart) (pid, index int, err error) {
	return 0, -1, errLinuxOnly
}

// KeeperProcess is a started keeper (Linux only).
type KeeperProcess struct{}

// LaunchKeeper is Linux only.
func LaunchKeeper(spec KeeperSpec, o KeeperStart) (*KeeperProcess, error) { return nil, errLinuxOnly }

// ErrKeeperStarting is returned by Check when the keeper has not reported yet.
var ErrKeeperStarting = errors.New("the keeper is still starting")

// Check is Linux only.
func (k *KeeperProcess) Check(wait time.Duration) (pid, index int, err error) {
	return 0, -1, errLinuxOnly
}

// Pid is Linux only.
func (k *KeeperProcess) Pid() int { return 0 }

// Ready is Linux only.
func (k *KeeperProcess) Ready() (pid, index int, err error) { return 0, -1, errLinuxOnly }

// KeeperMain is Linux only.
func KeeperMain() int {
	fmt.Fprintln(os.Stderr, errLinuxOnly)
	return 2
}

// QueryKeeper is Linux only.
func QueryKeeper(index int) (*KeeperState, error) { return nil, ErrNoKeeper }

// StopKeeper is Linux only.
func StopKeeper(index int) (*KeeperState, error) { return nil, ErrNoKeeper }
