package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Base mounts the API filesystems the other stages need.
type Base struct{}

// Name implements Hook.
func (Base) Name() string { return "base" }

// Run mounts /proc, /sys, /dev (devtmpfs) and /run. EBUSY means already mounted (the
// kernel may have mounted devtmpfs itself with CONFIG_DEVTMPFS_MOUNT): fine.
func (Base) Run(ctx context.Context, s *State) error {
	for _, m := range []struct {
		src, dir, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if err := s.Sys.MkdirAll(m.dir, 0o755); err != nil {
			return fail("base", "", "create "+m.dir, err)
		}
		if err := s.Sys.Mount(m.src, m.dir, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fail("base", "", fmt.Sprintf("mount %s on %s", m.fstype, m.dir), err)
		}
	}
	return nil
}

// Summary implements Summarizer.
func (Base) Summary(*State) string { return "/proc /sys /dev /run mounted" }

// Udev starts loading the image's modules (in parallel, by dependency) and returns at once:
// each later stage waits only for the modules it needs, so DHCP can run while dm-crypt loads.
type Udev struct{}

// Name implements Hook.
func (Udev) Name() string { return "udev" }

// Run implements Hook.
func (Udev) Run(ctx context.Context, s *State) error {
	if s.Modules == nil {
		return nil
	}
	s.Modules.Start(ctx)
	return s.Modules.Wait(ctx, "udev")
}

// Summary implements Summarizer.
func (Udev) Summary(*State) string { return "module loading started" }

// Filesystems mounts the root filesystem read-only (or rw) on /newroot.
type Filesystems struct {
	// Target is where the root is mounted (default /newroot).
	Target string
	// Probe reads a device's filesystem type from its superblock; nil uses ProbeFSType.
	Probe func(dev string) (string, error)
}

// Name implements Hook.
func (Filesystems) Name() string { return "filesystems" }

// Run implements Hook.
func (f Filesystems) Run(ctx context.Context, s *State) error {
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "filesystems"); err != nil {
			return fail("filesystems", "", "load filesystem modules", err)
		}
	}
	root := s.Plan.Root
	dev, err := resolveRoot(ctx, s)
	if err != nil {
		return err
	}
	param := "root=" + root.Device
	fstype := root.FSType
	if fstype == "" {
		probe := f.Probe
		if probe == nil {
			probe = ProbeFSType
		}
		if fstype, err = probe(dev); err != nil {
			return fail("filesystems", param, "find the filesystem type of "+dev+" (set rootfstype= to skip probing)", err)
		}
	}
	target := f.Target
	if target == "" {
		target = "/newroot"
	}
	if err := s.Sys.MkdirAll(target, 0o755); err != nil {
		return fail("filesystems", "", "create "+target, err)
	}
	var flags uintptr
	if !root.RW {
		flags |= unix.MS_RDONLY
	}
	if err := s.Sys.Mount(dev, target, fstype, flags, root.Flags); err != nil {
		tried := fmt.Sprintf("mount %s (%s, %s) on %s", dev, fstype, mode(root.RW), target)
		if root.Flags != "" {
			tried += " with options " + root.Flags
		}
		return fail("filesystems", param, tried, err)
	}
	s.NewRoot = target
	return nil
}

// Summary implements Summarizer.
func (Filesystems) Summary(s *State) string {
	return fmt.Sprintf("%s on %s (%s)", rootDevice(s), s.NewRoot, mode(s.Plan.Root.RW))
}

func mode(rw bool) string {
	if rw {
		return "rw"
	}
	return "ro"
}

// rootDevice is the device the root filesystem lives on, after the earlier stages.
func rootDevice(s *State) string {
	dev := s.Plan.Root.Device
	if s.CryptDevice != "" && (dev == "" || dev == s.CryptDevice) {
		return s.CryptDevice
	}
	return dev
}

// resolveRoot waits for the root device to be ready, up to rootdelay= (default 10 s).
func resolveRoot(ctx context.Context, s *State) (string, error) {
	dev := rootDevice(s)
	param := "root=" + s.Plan.Root.Device
	if dev == "" {
		return "", fail("filesystems", "root=", "find the root device", errors.New("no root= on the kernel command line"))
	}
	if strings.Contains(dev, "=") {
		return "", fail("filesystems", param, "resolve "+dev, errors.New("UUID=/LABEL=/PARTUUID= roots are not resolved yet"))
	}
	wait := s.Plan.RootDelay
	if wait <= 0 {
		wait = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		ok, err := s.Sys.BlockDeviceReady(dev)
		if ok {
			return dev, nil
		}
		select {
		case <-ctx.Done():
			why := fmt.Errorf("%s did not appear within %s", dev, wait)
			if err != nil && !errors.Is(err, os.ErrNotExist) {
				why = fmt.Errorf("%s is not usable after %s: %w", dev, wait, err)
			}
			return "", fail("filesystems", param, "wait for the root device (rootdelay= waits longer)", why)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ProbeFSType reads the filesystem type from the superblock of dev.
func ProbeFSType(dev string) (string, error) {
	f, err := os.Open(dev)
	if err != nil {
		return "", err
	}
	defer f.Close()
	buf := make([]byte, 68*1024)
	n, err := f.ReadAt(buf, 0)
	if n < 2048 {
		return "", fmt.Errorf("read superblock of %s: %w", filepath.Base(dev), err)
	}
	return fsTypeOf(buf[:n])
}

// fsTypeOf recognises the filesystems a thin client root plausibly uses, by magic number.
func fsTypeOf(b []byte) (string, error) {
	le16 := func(off int) uint16 { return uint16(b[off]) | uint16(b[off+1])<<8 }
	le32 := func(off int) uint32 { return uint32(le16(off)) | uint32(le16(off+2))<<16 }
	switch {
	case len(b) >= 1024+0x68 && le16(1024+0x38) == 0xEF53:
		// ext2/3/4 share a magic; ext4 mounts all three.
		return "ext4", nil
	case string(b[0:4]) == "XFSB":
		return "xfs", nil
	case len(b) >= 0x10040+8 && string(b[0x10040:0x10048]) == "_BHRfS_M":
		return "btrfs", nil
	case le32(0) == 0x73717368:
		return "squashfs", nil
	case len(b) >= 0x1000 && string(b[0:6]) == "LUKS\xba\xbe":
		return "", errors.New("the device is LUKS-encrypted: add cryptdevice=DEVICE:NAME and root=/dev/mapper/NAME")
	case string(b[0x52:0x5a]) == "FAT32   " || string(b[0x36:0x3e]) == "FAT16   " || string(b[0x36:0x3e]) == "FAT12   ":
		return "vfat", nil
	}
	return "", errors.New("no known filesystem signature (ext4, xfs, btrfs, squashfs, vfat)")
}
