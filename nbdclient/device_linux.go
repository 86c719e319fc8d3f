package nbdclient

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// RescanPartitions has the kernel read the partition table of the disk at path (BLKRRPART),
// so that /dev/nbdNp1… exist. A kernel whose nbd module has max_part=0 cannot hold
// partitions: that is said, not hidden.
func RescanPartitions(path string) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("partition scan: %w", err)
	}
	defer f.Close()
	err = unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL):
		return fmt.Errorf("partition scan of %s: the nbd module was loaded with max_part=0, so its devices hold no partitions (load it with max_part=16)", path)
	}
	return fmt.Errorf("partition scan of %s: %w", path, os.NewSyscallError("ioctl BLKRRPART", err))
}
