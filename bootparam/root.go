package bootparam

import (
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/lvm"
)

// Forms quoted in root and crypt errors.
const (
	formRoot        = "root=/dev/nbdN | /dev/nbdNpM | /dev/mapper/NAME | /dev/VG/LV | UUID=… | LABEL=… | PARTUUID=… | PARTLABEL=… | nbd:… (dracut)"
	formCryptDevice = "cryptdevice=DEVICE:NAME[:OPTIONS] with DEVICE /dev/… | UUID=… | LABEL=… | PARTUUID=… | PARTLABEL=…"
	formCryptKey    = "cryptkey=rootfs:PATH | DEVICE:FSTYPE:PATH | DEVICE:OFFSET:SIZE"
)

// rootKind classifies a root= value.
type rootKind int

const (
	rootNBD    rootKind = iota // /dev/nbdN or /dev/nbdNpM
	rootMapper                 // /dev/mapper/NAME
	rootTag                    // UUID=, LABEL=, PARTUUID=, PARTLABEL=
	rootLVM                    // /dev/VG/LV (a /dev/mapper/VG-LV is rootMapper until the crypt mapping is known)
)

// rootSpec is a parsed root= that names a block device.
type rootSpec struct {
	kind rootKind
	// device is the value as written (normalised for /dev/nbd forms).
	device string
	// nbdBase is /dev/nbdN for rootNBD: the device to attach even when root= names a
	// partition of it.
	nbdBase string
	// mapperName is NAME for rootMapper.
	mapperName string
	// vg and lv name the logical volume of rootLVM, and of a rootMapper whose name is an
	// LVM one (lvm.SplitDMName).
	vg, lv string
}

// tagPrefixes are the NAME=value forms accepted for devices: UUID= and LABEL= (file system
// identity, resolved by the init through blkid-style probing), PARTUUID= and PARTLABEL=
// (GPT/MBR partition identity, also understood by the kernel's own root= parser).
var tagPrefixes = []string{"UUID=", "LABEL=", "PARTUUID=", "PARTLABEL="}

// parseTag returns whether s is a TAG=value device and, if the value is empty, a reason.
func parseTag(s string) (ok bool, reason string) {
	for _, p := range tagPrefixes {
		if v, found := strings.CutPrefix(s, p); found {
			if v == "" {
				return true, strings.TrimSuffix(p, "=") + " is empty"
			}
			return true, ""
		}
	}
	return false, ""
}

// parseRootDevice parses a root= that names a block device (not dracut's nbd: or dhcp).
func parseRootDevice(value string) (*rootSpec, error) {
	fail := func(reason string) (*rootSpec, error) { return nil, perr("root", value, reason, formRoot) }
	if ok, reason := parseTag(value); ok {
		if reason != "" {
			return fail(reason)
		}
		return &rootSpec{kind: rootTag, device: value}, nil
	}
	if name, ok := strings.CutPrefix(value, "/dev/mapper/"); ok {
		if r := checkMapperName(name); r != "" {
			return fail(r)
		}
		vg, lv, _ := lvm.SplitDMName(name)
		return &rootSpec{kind: rootMapper, device: value, mapperName: name, vg: vg, lv: lv}, nil
	}
	if name, ok := strings.CutPrefix(value, "/dev/"); ok && strings.HasPrefix(name, "nbd") && !strings.Contains(name, "/") {
		base, _, ok := splitNBDName(name)
		if !ok {
			return fail("not an NBD device or partition name (nbdN, nbdNpM)")
		}
		return &rootSpec{kind: rootNBD, device: value, nbdBase: "/dev/" + base}, nil
	}
	if vg, lv, ok := lvm.ParsePath(value); ok && strings.HasPrefix(value, "/dev/") {
		return &rootSpec{kind: rootLVM, device: value, vg: vg, lv: lv}, nil
	}
	return fail("the root is not on NBD: nbdroot mounts an NBD device, a partition of it, an unlocked LUKS mapping, an LVM logical volume or a file system found by UUID/LABEL")
}

// checkMapperName checks a device-mapper name: 1-127 bytes (DM_NAME_LEN 128 with the NUL),
// no '/', printable.
func checkMapperName(name string) string {
	if name == "" {
		return "device-mapper name is empty"
	}
	if len(name) > 127 {
		return "device-mapper name is longer than 127 bytes"
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' || name[i] <= ' ' || name[i] == 0x7f {
			return "device-mapper name " + strconv.Quote(name) + " contains '/', a space or a control character"
		}
	}
	if name == "." || name == ".." {
		return "device-mapper name cannot be . or .."
	}
	return ""
}

// checkBlockDevice accepts a /dev/ path or a TAG=value device, as mkinitcpio's
// resolve_device does.
func checkBlockDevice(s string) string {
	if ok, reason := parseTag(s); ok {
		return reason
	}
	if !strings.HasPrefix(s, "/dev/") || len(s) == len("/dev/") {
		return "device " + strconv.Quote(s) + " is neither a /dev/ path nor UUID=, LABEL=, PARTUUID=, PARTLABEL="
	}
	if strings.ContainsAny(s, " \t\n") || strings.Contains(s, "/../") || strings.HasSuffix(s, "/..") {
		return "device " + strconv.Quote(s) + " is not a clean /dev/ path"
	}
	return ""
}

// cryptOptions maps the options mkinitcpio's encrypt hook knows to their canonical names
// (the hook accepts both the short and the cryptsetup spelling).
var cryptOptions = map[string]string{
	"allow-discards":          "allow-discards",
	"discard":                 "allow-discards",
	"no-read-workqueue":       "no-read-workqueue",
	"perf-no_read_workqueue":  "no-read-workqueue",
	"no-write-workqueue":      "no-write-workqueue",
	"perf-no_write_workqueue": "no-write-workqueue",
}

// parseCryptDevice parses mkinitcpio's cryptdevice=DEVICE:NAME[:OPTIONS] the way the encrypt
// hook reads it (`IFS=: read cryptdev cryptname cryptoptions`: the third field takes the
// rest of the line). Options the hook does not know it ignores with a message; so do we,
// through notes.
func parseCryptDevice(value string) (c *Crypt, notes []string, err error) {
	fail := func(reason string) (*Crypt, []string, error) {
		return nil, nil, perr("cryptdevice", value, reason, formCryptDevice)
	}
	f := strings.SplitN(value, ":", 3)
	if len(f) < 2 {
		return fail("no ':NAME' after the device")
	}
	if r := checkBlockDevice(f[0]); r != "" {
		return fail(r)
	}
	if r := checkMapperName(f[1]); r != "" {
		return fail(r)
	}
	c = &Crypt{Device: f[0], Name: f[1]}
	if len(f) == 3 {
		seen := map[string]bool{}
		for _, o := range strings.Split(f[2], ",") {
			if o == "" {
				continue
			}
			canon, ok := cryptOptions[o]
			if v, found := strings.CutPrefix(o, "sector-size="); found {
				if _, r := parseBlockSize(v); r != "" {
					return fail("sector-size: " + r)
				}
				canon, ok = o, true
			}
			if !ok {
				notes = append(notes, "cryptdevice option "+strconv.Quote(o)+" is not known and is ignored (as the encrypt hook does)")
				continue
			}
			if !seen[canon] {
				seen[canon] = true
				c.Options = append(c.Options, canon)
			}
		}
	}
	return c, notes, nil
}

// parseCryptKey parses mkinitcpio's cryptkey= the way the encrypt hook does: rootfs:PATH is a
// file inside the initramfs; DEVICE:OFFSET:SIZE (both numbers) raw bytes of a device;
// DEVICE:FSTYPE:PATH a file on a device mounted read-only.
func parseCryptKey(value string) (*CryptKey, error) {
	fail := func(reason string) (*CryptKey, error) { return nil, perr("cryptkey", value, reason, formCryptKey) }
	if p, ok := strings.CutPrefix(value, "rootfs:"); ok {
		if !strings.HasPrefix(p, "/") {
			return fail("the key path inside the initramfs must be absolute")
		}
		return &CryptKey{Kind: "rootfs", Path: p}, nil
	}
	f := strings.SplitN(value, ":", 3)
	if len(f) != 3 {
		return fail("need three ':'-separated fields")
	}
	if r := checkBlockDevice(f[0]); r != "" {
		return fail(r)
	}
	if allDigits(f[1]) && allDigits(f[2]) {
		off, err1 := strconv.ParseInt(f[1], 10, 64)
		size, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return fail("offset or size is too large")
		}
		// cryptsetup reads at most 8 MiB from a key file (its default keyfile-size limit).
		if size == 0 || size > 8<<20 {
			return fail("key size must be 1-8388608 bytes")
		}
		return &CryptKey{Kind: "raw", Device: f[0], Offset: off, Size: size}, nil
	}
	if r := checkFSType(f[1]); r != "" || f[1] == "" {
		if f[1] == "" {
			r = "file system type is empty"
		}
		return fail(r)
	}
	if f[2] == "" {
		return fail("key file path is empty")
	}
	return &CryptKey{Kind: "file", Device: f[0], FSType: f[1], Path: f[2]}, nil
}
