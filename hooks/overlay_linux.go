package hooks

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/nbdroot/nbdroot/bootparam"
	"golang.org/x/sys/unix"
)

// Where the overlay stage puts the layers of the root. They are under /run, which
// switch_root moves into the new root: the booted system sees them there (the read-only
// NBD root, and the writable layer with what this boot changed).
const (
	// OverlayLower is where the NBD root, mounted read-only by filesystems, moves to.
	OverlayLower = "/run/nbdroot/lower"
	// OverlayWritable is where the writable layer's file system is mounted: the tmpfs, or
	// the local disk of nbdroot.overlay=DEVICE.
	OverlayWritable = "/run/nbdroot/overlay"
	// OverlayDiskDir is the directory of a local disk that holds the writable layer
	// (upper/ and work/): emptied at every boot, nothing else on the disk is touched.
	OverlayDiskDir = "nbdroot-overlay"
)

// Overlay makes a read-only root writable for this boot only, as LTSP does: the root that
// filesystems mounted (read-only: nbdroot.overlay= overrides rw) becomes the lower layer of
// an overlayfs mounted in its place, whose upper layer is a tmpfs (nbdroot.overlay=tmpfs
// [:SIZE]) or a directory of a local disk (nbdroot.overlay=DEVICE). No client state lives on
// the server, so one read-only export serves any number of clients; the keeper keeps the
// lower device connected as it keeps any root. Without nbdroot.overlay= it does nothing.
type Overlay struct {
	// Probe reads a device's file system type; nil uses ProbeFSType.
	Probe func(dev string) (string, error)
}

// Name implements Hook.
func (Overlay) Name() string { return "overlay" }

// Run implements Hook.
func (o Overlay) Run(ctx context.Context, s *State) error {
	ov := s.Plan.Overlay
	if ov == nil {
		return nil
	}
	param := s.Plan.Sources["overlay"]
	if s.NewRoot == "" {
		return fail("overlay", param, "put an overlay over the root",
			errors.New("no root is mounted yet: the overlay hook must come after filesystems in the image's hook list"))
	}
	if s.Modules != nil {
		if err := s.Modules.Wait(ctx, "overlay"); err != nil {
			return fail("overlay", param, "load the overlay module", err)
		}
	}
	f := s.Sys.Files
	m := &RootOverlay{Lower: OverlayLower, Lower0: rootDevice(s), Kind: ov.Kind}
	if err := f.MkdirAll(OverlayWritable, 0o755); err != nil {
		return fail("overlay", param, "create "+OverlayWritable, err)
	}
	switch ov.Kind {
	case bootparam.OverlayTmpfs:
		data := "mode=0755"
		if ov.Size != "" {
			data += ",size=" + ov.Size
		}
		if err := f.Mount("tmpfs", OverlayWritable, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
			return fail("overlay", param, "mount a tmpfs ("+data+") on "+OverlayWritable, err)
		}
		m.Writable, m.Dir = "tmpfs", OverlayWritable
		if ov.Size != "" {
			m.Writable += " of " + ov.Size
		}
	case bootparam.OverlayDevice:
		dev, err := waitDevice(ctx, s, ov.Device, s.Plan.RootDelay)
		if err != nil {
			return fail("overlay", param, "wait for the overlay's disk (rootdelay= waits longer)", err)
		}
		probe := o.Probe
		if probe == nil {
			probe = ProbeFSType
		}
		fstype, err := probe(dev)
		if err != nil {
			return fail("overlay", param, "find the file system on "+dev+" (the overlay's disk needs one: mkfs.ext4 it once)", err)
		}
		if err := f.Mount(dev, OverlayWritable, fstype, unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
			return fail("overlay", param, fmt.Sprintf("mount %s (%s) on %s", dev, fstype, OverlayWritable), err)
		}
		// What an earlier boot wrote is gone: the lower layer may have changed since (a new
		// image), and an old upper layer over a new lower one is an inconsistent system.
		m.Dir = filepath.Join(OverlayWritable, OverlayDiskDir)
		start := time.Now()
		if err := f.RemoveAll(m.Dir); err != nil {
			return fail("overlay", param, "empty "+OverlayDiskDir+" on "+dev, err)
		}
		if d := time.Since(start); d > time.Second {
			s.Log.Printf("overlay: emptying %s on %s took %s", OverlayDiskDir, dev, d.Round(time.Millisecond))
		}
		m.Writable = fmt.Sprintf("%s (%s)", dev, fstype)
	default:
		return fail("overlay", param, "put an overlay over the root", fmt.Errorf("unknown overlay kind %q", ov.Kind))
	}
	m.Upper, m.Work = filepath.Join(m.Dir, "upper"), filepath.Join(m.Dir, "work")
	for _, d := range []string{m.Upper, m.Work, OverlayLower} {
		if err := f.MkdirAll(d, 0o755); err != nil {
			return fail("overlay", param, "create "+d, err)
		}
	}
	if err := f.Mount(s.NewRoot, OverlayLower, "", unix.MS_MOVE, ""); err != nil {
		return fail("overlay", param, "move the root from "+s.NewRoot+" to "+OverlayLower, err)
	}
	data := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", OverlayLower, m.Upper, m.Work)
	if err := f.Mount("overlay", s.NewRoot, "overlay", 0, data); err != nil {
		// Put the root back where the rescue shell and a retry expect it.
		if merr := f.Mount(OverlayLower, s.NewRoot, "", unix.MS_MOVE, ""); merr != nil {
			s.Log.Printf("overlay: moving the root back to %s: %v", s.NewRoot, merr)
		}
		return fail("overlay", param, "mount overlayfs ("+data+") on "+s.NewRoot, err)
	}
	s.Overlay = m
	return nil
}

// Summary implements Summarizer.
func (Overlay) Summary(s *State) string {
	m := s.Overlay
	if m == nil {
		return "no nbdroot.overlay="
	}
	return fmt.Sprintf("/ = overlay of %s (read-only) and %s", m.Lower0, m.Writable)
}
