package hooks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"github.com/nbdroot/nbdroot/luks"
)

// DefaultTries is how many passphrases the encrypt hook asks for (nbdroot.tries=).
const DefaultTries = 3

// Encrypt unlocks the LUKS1/LUKS2 device named by cryptdevice= with a keyfile (cryptkey=) or
// a passphrase asked on every console, and maps it with dm-crypt as /dev/mapper/NAME.
// Key material is wiped as soon as the kernel has it and is never logged.
type Encrypt struct{}

// Name implements Hook.
func (Encrypt) Name() string { return "encrypt" }

// Run implements Hook.
func (Encrypt) Run(ctx context.Context, s *State) error {
	c := s.Plan.Crypt
	if c == nil {
		return nil
	}
	param := "cryptdevice=" + c.Device + ":" + c.Name
	if len(c.Options) > 0 {
		param += ":" + strings.Join(c.Options, ",")
	}
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "encrypt"); err != nil {
			return fail("encrypt", param, "load dm-crypt and the cipher modules", err)
		}
	}
	dev, err := waitDevice(ctx, s, c.Device, s.Plan.RootDelay)
	if err != nil {
		return fail("encrypt", param, "find the encrypted device", err)
	}
	f, err := s.Sys.Blocks.OpenDevice(dev)
	if err != nil {
		return fail("encrypt", param, "open "+dev, err)
	}
	defer f.Close()
	vol, err := luks.Open(f)
	if err != nil {
		return fail("encrypt", param, "read the LUKS header of "+dev, err)
	}
	if vol.HeaderProblem != nil {
		// The volume opens with the other copy; say so, the header wants repairing.
		s.Log.Printf("encrypt: warning: %s uses the %s LUKS2 header copy: %v", dev, vol.HeaderCopy, vol.HeaderProblem)
	}
	key, err := unlock(ctx, s, vol, c, dev)
	// Argon2 may have used hundreds of MiB the init keeps no use for.
	debug.FreeOSMemory()
	if err != nil {
		return fail("encrypt", param, "unlock "+dev, err)
	}
	defer key.Wipe()

	size, err := luks.DeviceSize(f)
	if err != nil {
		return fail("encrypt", param, "size "+dev, err)
	}
	var flags []string
	for _, o := range c.Options {
		if fl, ok := luks.DMFlag(o); ok {
			flags = append(flags, fl)
		} else {
			s.Log.Printf("encrypt: option %q is not a dm-crypt flag; ignored", o)
		}
	}
	ro := s.NBD != nil && s.NBD.ReadOnly() && s.NBD.Device == dev
	table, err := vol.Table(key, luks.TableOptions{Device: dev, DeviceSize: size, Flags: flags, ReadOnly: ro})
	if err != nil {
		return fail("encrypt", param, "build the dm-crypt table", err)
	}
	defer table.Wipe()
	mapped, err := s.Sys.Mapper.ActivateCrypt(c.Name, table)
	if err != nil {
		return fail("encrypt", param, fmt.Sprintf("map %s as /dev/mapper/%s with dm-crypt (%s)", dev, c.Name, table.Cipher), err)
	}
	s.CryptDevice = mapped
	return nil
}

// Summary implements Summarizer.
func (Encrypt) Summary(s *State) string {
	if s.Plan.Crypt == nil {
		return "no cryptdevice= (nothing to unlock)"
	}
	return s.Plan.Crypt.Device + " unlocked as " + s.CryptDevice
}

// unlock opens a keyslot with the keyfile when there is one, falling back to asking for the
// passphrase (as mkinitcpio's encrypt hook does), up to Plan.Tries times.
func unlock(ctx context.Context, s *State, vol *luks.Volume, c *bootparam.Crypt, dev string) (*luks.VolumeKey, error) {
	// A keyslot whose Argon2 needs more memory than the client has would get PID 1 killed by
	// the OOM killer: refuse it with a clear error instead.
	opts := &luks.UnlockOptions{MaxMemoryKiB: s.Sys.Machine.MemAvailableKiB() / 2}
	if c.Key != nil {
		kf, err := readKey(ctx, s, c.Key)
		if err == nil {
			key, uerr := vol.Unlock(kf, opts)
			clear(kf)
			if uerr == nil {
				return key, nil
			}
			err = uerr
		}
		s.Log.Printf("encrypt: the keyfile (cryptkey=) did not unlock %s: %v; asking for the passphrase", dev, err)
	}
	tries := s.Plan.Tries
	if tries <= 0 {
		tries = DefaultTries
	}
	prompt := fmt.Sprintf("Enter passphrase for %s (%s): ", dev, c.Name)
	for left := tries; left > 0; left-- {
		pass, err := s.Sys.Console.AskPassphrase(ctx, prompt)
		if err != nil {
			return nil, err
		}
		start := time.Now()
		key, err := vol.Unlock(pass, opts)
		clear(pass)
		if err == nil {
			s.Log.Printf("encrypt: keyslot %d opened in %.2fs", key.Keyslot, time.Since(start).Seconds())
			return key, nil
		}
		if !errors.Is(err, luks.ErrWrongPassphrase) {
			return nil, err
		}
		if left > 1 {
			s.Log.Printf("encrypt: wrong passphrase, %d tries left", left-1)
		}
	}
	return nil, fmt.Errorf("wrong passphrase %d times (nbdroot.tries= allows more)", tries)
}

// readKey reads the key file cryptkey= names.
func readKey(ctx context.Context, s *State, k *bootparam.CryptKey) ([]byte, error) {
	switch k.Kind {
	case "rootfs":
		return luks.ReadKeyFile(k.Path)
	case "raw":
		dev, err := waitDevice(ctx, s, k.Device, 0)
		if err != nil {
			return nil, err
		}
		f, err := s.Sys.Blocks.OpenDevice(dev)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return luks.ReadKeyAt(f, k.Offset, k.Size)
	case "file":
		dev, err := waitDevice(ctx, s, k.Device, 0)
		if err != nil {
			return nil, err
		}
		dir := "/run/nbdroot/cryptkey"
		if err := s.Sys.Files.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		fstype := k.FSType
		if fstype == "" {
			// rd.luks.key=FILE:DEVICE names no file system: read it from the superblock.
			if fstype, err = ProbeFSType(dev); err != nil {
				return nil, fmt.Errorf("find the file system of %s holding the key file: %w", dev, err)
			}
		}
		if err := s.Sys.Files.Mount(dev, dir, fstype, mountReadOnly, ""); err != nil {
			return nil, fmt.Errorf("mount %s (%s) to read the key file: %w", dev, fstype, err)
		}
		defer s.Sys.Files.Unmount(dir)
		return luks.ReadKeyFile(filepath.Join(dir, k.Path))
	}
	return nil, fmt.Errorf("unknown cryptkey= kind %q", k.Kind)
}

// waitDevice waits up to wait (default 10 s) for a device given as a path or as
// UUID=/LABEL=/PARTUUID=/PARTLABEL=, and returns its path.
func waitDevice(ctx context.Context, s *State, spec string, wait time.Duration) (string, error) {
	if wait <= 0 {
		wait = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for {
		var err error
		if strings.Contains(spec, "=") {
			var dev string
			if dev, err = s.Sys.Blocks.FindBlockDevice(spec); err == nil {
				return dev, nil
			}
		} else {
			var ok bool
			if ok, err = s.Sys.Blocks.BlockDeviceReady(spec); ok {
				return spec, nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil || errors.Is(err, os.ErrNotExist) {
				err = errors.New("no such device")
			}
			return "", fmt.Errorf("%s did not appear within %s: %w", spec, wait, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
