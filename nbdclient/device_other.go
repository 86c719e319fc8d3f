//go:build !linux

package nbdclient

import "errors"

// RescanPartitions is Linux only.
func RescanPartitions(path string) error {
	return errors.New("partition scan: NBD devices are Linux only")
}
