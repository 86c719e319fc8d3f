package hooks

import (
	"context"
	"errors"
	"fmt"

	"github.com/nbdroot/nbdroot/initramfs/layout"
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
		if err := s.Sys.Files.MkdirAll(m.dir, 0o755); err != nil {
			return fail("base", "", "create "+m.dir, err)
		}
		if err := s.Sys.Files.Mount(m.src, m.dir, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fail("base", "", fmt.Sprintf("mount %s on %s", m.fstype, m.dir), err)
		}
	}
	return nil
}

// Summary implements Summarizer.
func (Base) Summary(*State) string { return "/proc /sys /dev /run mounted" }

// Udev starts loading the image's modules (in parallel, by dependency) and the drivers of the
// devices present, and returns at once: each later stage waits only for the modules it needs,
// so DHCP can run while dm-crypt loads.
type Udev struct{}

// Name implements Hook.
func (Udev) Name() string { return "udev" }

// Run implements Hook.
func (Udev) Run(ctx context.Context, s *State) error {
	if s.Modules == nil {
		return nil
	}
	s.Modules.Start(ctx)
	return nil
}

// Summary implements Summarizer.
func (Udev) Summary(*State) string { return "module loading started" }

// Filesystems mounts the root filesystem read-only (or rw) on /newroot (layout.NewRoot).
type Filesystems struct {
	// Target is where the root is mounted (default layout.NewRoot).
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
	root := s.Root()
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
		target = layout.NewRoot
	}
	if err := s.Sys.Files.MkdirAll(target, 0o755); err != nil {
		return fail("filesystems", "", "create "+target, err)
	}
	var flags uintptr
	if !root.RW {
		flags |= unix.MS_RDONLY
	}
	if err := s.Sys.Files.Mount(dev, target, fstype, flags, root.Flags); err != nil {
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
	return fmt.Sprintf("%s on %s (%s)", rootDevice(s), s.NewRoot, mode(s.Root().RW))
}

func mode(rw bool) string {
	if rw {
		return "rw"
	}
	return "ro"
}

// rootDevice is the device the root filesystem lives on, after the earlier stages.
func rootDevice(s *State) string {
	dev := s.Root().Device
	if s.CryptDevice != "" && (dev == "" || dev == s.CryptDevice) {
		return s.CryptDevice
	}
	return dev
}

// mountReadOnly is MS_RDONLY, for the portable stages.
const mountReadOnly = unix.MS_RDONLY

// resolveRoot waits for the root device to be ready, up to rootdelay= (default 10 s).
func resolveRoot(ctx context.Context, s *State) (string, error) {
	dev := rootDevice(s)
	param := "root=" + s.Root().Device
	if dev == "" {
		return "", fail("filesystems", "root=", "find the root device", errors.New("no root= on the kernel command line"))
	}
	found, err := waitDevice(ctx, s, dev, s.Plan.RootDelay)
	if err != nil {
		return "", fail("filesystems", param, "wait for the root device (rootdelay= waits longer)", err)
	}
	return found, nil
}

// ProbeFSType reads the filesystem type from the superblock of dev.
func ProbeFSType(dev string) (string, error) {
	// The first 4 KiB answer for everything but btrfs (superblock at 64 KiB): on a network
	// device every extra block read is a round trip.
	b, err := readHead(dev, 4096)
	if err != nil {
		return "", err
	}
	id := Identify(b)
	if id.Type == "" {
		if b, err = readHead(dev, probeSize); err != nil {
			return "", err
		}
		id = Identify(b)
	}
	switch id.Type {
	case "":
		return "", errors.New("no known filesystem signature (ext4, xfs, btrfs, squashfs, vfat)")
	case "crypto_LUKS":
		return "", errors.New("the device is LUKS-encrypted: add cryptdevice=DEVICE:NAME and root=/dev/mapper/NAME")
	default:
		return id.Type, nil
	}
}
