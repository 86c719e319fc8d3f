package hooks

import (
	"fmt"
	"slices"
)

// RootOverlay is the overlay the overlay stage put over the root.
type RootOverlay struct {
	// Kind is bootparam.OverlayTmpfs or OverlayDevice.
	Kind string
	// Lower is where the read-only root is (OverlayLower); Lower0 its device.
	Lower, Lower0 string
	// Writable names the writable layer's file system ("tmpfs of 512m", "/dev/vda (ext4)");
	// Dir is the directory on it that holds Upper and Work.
	Writable, Dir string
	Upper, Work   string
}

// checkImageHooks refuses a Plan that asks for what the image's hooks cannot do: an
// nbdroot.overlay= without the overlay hook would boot a read-only root that programs
// expect to write to, and fail far from the cause.
func checkImageHooks(s *State) error {
	if s.Plan.Overlay != nil && !slices.Contains(s.Hooks, "overlay") {
		return &Failure{Hook: "overlay", Param: s.Plan.Sources["overlay"], Tried: "read the image's hook list",
			Err: fmt.Errorf("this image has no overlay hook (its hooks: %v): build it with the overlay hook after filesystems, e.g. nbdroot initramfs --hooks \"base udev net nbd filesystems overlay\"", s.Hooks)}
	}
	return nil
}
