//go:build !linux

package nbdclient

import "os"

// AttachLegacy is Linux only.
func AttachLegacy(path string, index int, dev Device, socks []*os.File) (*LegacySession, error) {
	return nil, errLinuxOnly
}

// DisconnectLegacy is Linux only.
func DisconnectLegacy(path string) error { return errLinuxOnly }
