package nbdclient

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// SetupDevice prepares /dev/nbdN after NBD_CMD_CONNECT: it lowers the request size to what
// the server accepts and has the kernel read the partition table. devDir and sysDir are
// /dev and /sys (tests pass temporary trees).
func SetupDevice(devDir, sysDir string, index int, dev Device) error {
	var errs []error
	if dev.MaxRequest != 0 {
		if err := LimitRequestSize(sysDir, index, dev.MaxRequest); err != nil {
			errs = append(errs, err)
		}
	}
	if dev.ReadAheadKB != 0 {
		if err := SetReadAhead(sysDir, index, dev.ReadAheadKB); err != nil {
			errs = append(errs, err)
		}
	}
	path := filepath.Join(devDir, "nbd"+strconv.Itoa(index))
	if err := waitNode(path, 2*time.Second); err != nil {
		errs = append(errs, err)
	} else if err := RescanPartitions(path); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitNode waits for a device node: devtmpfs creates it when the kernel adds the disk, which
// for a device the kernel created on NBD_CMD_CONNECT is a moment ago.
func waitNode(path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		_, err := os.Stat(path)
		if err == nil || !errors.Is(err, os.ErrNotExist) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LimitRequestSize lowers /sys/block/nbdN/queue/max_sectors_kb so that the kernel never
// sends a request larger than maxBytes, the server's maximum from NBD_INFO_BLOCK_SIZE
// (proto.md: a client that asked for block sizes must honour the maximum). It never raises
// the limit. The kernel's floor is one page.
func LimitRequestSize(sysDir string, index int, maxBytes uint32) error {
	path := filepath.Join(sysDir, "block", "nbd"+strconv.Itoa(index), "queue", "max_sectors_kb")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("request size limit: %w", err)
	}
	cur, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return fmt.Errorf("request size limit: %s: %w", path, err)
	}
	want := uint64(maxBytes / 1024)
	if want < 4 {
		want = 4
	}
	if want >= cur {
		return nil
	}
	if err := os.WriteFile(path, []byte(strconv.FormatUint(want, 10)), 0o644); err != nil {
		return fmt.Errorf("request size limit of %d KiB for the server's maximum of %d bytes: %w", want, maxBytes, err)
	}
	return nil
}

// SetReadAhead sets /sys/block/nbdN/queue/read_ahead_kb. Every read that misses the page
// cache of an NBD device is a network round trip; a larger read-ahead turns the page faults
// of starting a program (the root's init, then everything the boot runs) into fewer, larger
// requests.
func SetReadAhead(sysDir string, index int, kb uint32) error {
	path := filepath.Join(sysDir, "block", "nbd"+strconv.Itoa(index), "queue", "read_ahead_kb")
	if err := os.WriteFile(path, []byte(strconv.FormatUint(uint64(kb), 10)), 0o644); err != nil {
		return fmt.Errorf("read-ahead of %d KiB: %w", kb, err)
	}
	return nil
}
