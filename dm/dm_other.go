//go:build !linux

package dm

import "errors"

// ControlPath is the device-mapper control node.
const ControlPath = "/dev/mapper/control"

// ErrNoDeviceMapper means device-mapper is not available: it exists only on Linux.
var ErrNoDeviceMapper = errors.New("device-mapper is only available on Linux")

// Open fails: device-mapper exists only on Linux.
func Open() (*Client, error) { return nil, ErrNoDeviceMapper }
