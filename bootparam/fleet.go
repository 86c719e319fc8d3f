package bootparam

import (
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/nbd"
)

// The fleet knobs: who this client is to the server (nbdroot.id=) and the client-side
// overlay that makes a read-only root writable (nbdroot.overlay=).

// Overlay kinds of Plan.Overlay.
const (
	// OverlayTmpfs keeps the writes in memory: a tmpfs, emptied at every boot.
	OverlayTmpfs = "tmpfs"
	// OverlayDevice keeps them on a local disk's file system, in a directory emptied at
	// every boot.
	OverlayDevice = "device"
)

// Overlay is a client-side overlay (nbdroot.overlay=): the root from the NBD server is
// mounted read-only as the lower layer of an overlayfs whose upper layer is local, so one
// read-only export serves many clients and each sees a writable root of its own.
type Overlay struct {
	// Kind is OverlayTmpfs or OverlayDevice.
	Kind string `json:"kind"`
	// Size bounds a tmpfs: tmpfs's size= (bytes with an optional k, m or g suffix, or a
	// percentage of the RAM); "" is the kernel's default, half of the RAM.
	Size string `json:"size,omitempty"`
	// Device is the local disk's file system: a /dev/ path or UUID=, LABEL=, PARTUUID=,
	// PARTLABEL=.
	Device string `json:"device,omitempty"`
}

const (
	formClientID = "nbdroot.id=ID with 1-64 of A-Z a-z 0-9 . _ : - (default: the boot NIC's MAC address)"
	formOverlay  = "nbdroot.overlay=tmpfs[:SIZE] | nbdroot.overlay=DEVICE (SIZE: 512m, 2g, 50%; DEVICE: /dev/PATH, UUID=, LABEL=, PARTUUID=, PARTLABEL=)"
)

// buildFleet reads nbdroot.id= (else the BOOTIF MAC is the identity; with neither, the nbd
// hook uses the MAC of the NIC the net stage configured) and nbdroot.overlay=, which
// mounts the NBD root read-only whatever ro/rw say.
func (b *builder) buildFleet() error {
	n := &b.plan.NBD
	switch p, ok := b.get("nbdroot.id"); {
	case ok:
		if err := nbd.ValidateIdentity(p.Value); err != nil {
			// The reason is the contract's own check, without its "bad client identity" prefix.
			reason := strings.TrimPrefix(err.Error(), nbd.ErrBadIdentity.Error()+": ")
			return &ParamError{Param: p.Name, Value: p.Value, Reason: reason, Expected: formClientID, Err: err}
		}
		n.ClientID = p.Value
		b.src("nbd.client_id", p.String())
	case b.plan.BootIF != "":
		n.ClientID = b.plan.BootIF
		b.src("nbd.client_id", "default: the boot NIC's MAC address, from "+b.plan.Sources["bootif"])
	default:
		b.src("nbd.client_id", "default: the MAC address of the NIC the net stage configures")
	}
	p, ok := b.get("nbdroot.overlay")
	if !ok {
		return nil
	}
	o, err := parseOverlay(p)
	if err != nil {
		return err
	}
	if o.Kind == OverlayDevice {
		if r, err := parseRootDevice(o.Device); err == nil && r.kind == rootNBD && r.nbdBase == n.Device {
			return perr(p.Name, p.Value, "is the NBD device of the root itself: the overlay needs a local disk", formOverlay)
		}
	}
	b.plan.Overlay = o
	b.src("overlay", p.String())
	if b.plan.Root.RW {
		b.note("%s mounts the NBD root read-only: %s does not make it writable (the overlay is the writable /)", p.String(), b.plan.Sources["root.rw"])
	}
	return nil
}

// parseOverlay reads nbdroot.overlay=tmpfs[:SIZE] or nbdroot.overlay=DEVICE.
func parseOverlay(p Param) (*Overlay, error) {
	v := p.Value
	if v == "" {
		return nil, perr(p.Name, v, "empty", formOverlay)
	}
	if kind, size, _ := strings.Cut(v, ":"); kind == OverlayTmpfs {
		if size == "" && strings.Contains(v, ":") {
			return nil, perr(p.Name, v, "no size after tmpfs:", formOverlay)
		}
		if size != "" {
			if r := checkTmpfsSize(size); r != "" {
				return nil, perr(p.Name, v, r, formOverlay)
			}
		}
		return &Overlay{Kind: OverlayTmpfs, Size: strings.ToLower(size)}, nil
	}
	if r := checkBlockDevice(v); r != "" {
		return nil, perr(p.Name, v, r+" (nor tmpfs)", formOverlay)
	}
	return &Overlay{Kind: OverlayDevice, Device: v}, nil
}

// checkTmpfsSize checks a tmpfs size= value: a number of bytes with an optional k, m or g
// (the kernel's memparse also takes t, p and e, which no thin client has), or a percentage
// of the RAM from 1 to 100.
func checkTmpfsSize(s string) string {
	num, unit := s, ""
	if last := s[len(s)-1]; strings.ContainsRune("kKmMgG%", rune(last)) {
		num, unit = s[:len(s)-1], s[len(s)-1:]
	}
	if num == "" || !allDigits(num) || len(num) > 12 {
		return "size " + strconv.Quote(s) + " is not a number with an optional k, m, g or %"
	}
	n, _ := strconv.Atoi(num)
	switch {
	case n == 0:
		return "size 0 leaves no room for writes"
	case unit == "%" && n > 100:
		return "size " + s + " is more than all of the RAM"
	case unit == "" && n < 1<<20:
		return "size " + s + " is in bytes: less than 1 MiB (write 512m or 2g)"
	}
	return ""
}

// checkOverlay validates Plan.Overlay (for Validate).
func (p *Plan) checkOverlay() error {
	o := p.Overlay
	if o == nil {
		return nil
	}
	switch o.Kind {
	case OverlayTmpfs:
		if o.Size != "" {
			if r := checkTmpfsSize(o.Size); r != "" {
				return p.errFor("overlay", o.Size, r, formOverlay)
			}
		}
	case OverlayDevice:
		if r := checkBlockDevice(o.Device); r != "" {
			return p.errFor("overlay", o.Device, r, formOverlay)
		}
	default:
		return p.errFor("overlay", o.Kind, "unknown overlay kind", formOverlay)
	}
	return nil
}

// describeOverlay says in words what nbdroot.overlay= does, for Explain.
func describeOverlay(o *Overlay) string {
	if o.Kind == OverlayDevice {
		return "on " + o.Device + " (its file system keeps the writes in /nbdroot-overlay, emptied at every boot)"
	}
	size := "half of the RAM"
	if o.Size != "" {
		size = o.Size
	}
	return "tmpfs of " + size + " (the writes live in memory and are gone at the next boot)"
}
