package bootparam

import (
	"strconv"
	"strings"
)

// The LUKS parameters of systemd-cryptsetup-generator(8), which mkinitcpio's sd-encrypt hook
// and dracut read: rd.luks.uuid=, rd.luks.name=, rd.luks.options=, rd.luks.key= and rd.luks=,
// each also without the rd. prefix (those apply in the initrd too). nbdroot opens one LUKS
// device, so they must name one volume; cryptdevice= (mkinitcpio's encrypt hook) wins when
// both are given.
const formSystemdLUKS = "rd.luks.uuid=UUID | rd.luks.name=UUID=NAME, rd.luks.options=[UUID=]OPTIONS, rd.luks.key=[UUID=]KEYFILE[:KEYDEV]"

// systemdLUKSParams are the repeatable parameters of the generator, rd. forms first.
var systemdLUKSParams = []string{"rd.luks.uuid", "luks.uuid", "rd.luks.name", "luks.name",
	"rd.luks.options", "luks.options", "rd.luks.key", "luks.key"}

// normLUKSUUID reads a LUKS UUID as the generator does: case-insensitive, an optional
// "luks-" prefix (the generator's own mapping name) dropped. ok is false for anything that
// is not 32 hex digits in the 8-4-4-4-12 layout or without dashes.
func normLUKSUUID(s string) (string, bool) {
	s = strings.ToLower(strings.TrimPrefix(strings.ToLower(s), "luks-"))
	hex := strings.ReplaceAll(s, "-", "")
	if len(hex) != 32 {
		return "", false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	if strings.Contains(s, "-") && (len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		return "", false
	}
	return hex[:8] + "-" + hex[8:12] + "-" + hex[12:16] + "-" + hex[16:20] + "-" + hex[20:], true
}

// cutLUKSUUID splits the optional "UUID=" prefix off a generator value (rd.luks.options=,
// rd.luks.key=, rd.luks.name=): the part before the first '=' names a volume when it is a
// UUID.
func cutLUKSUUID(v string) (uuid, rest string, ok bool) {
	before, after, found := strings.Cut(v, "=")
	if !found {
		return "", v, false
	}
	if u, isUUID := normLUKSUUID(before); isUUID {
		return u, after, true
	}
	return "", v, false
}

// buildSystemdLUKS turns the generator's parameters into the Plan's Crypt when cryptdevice=
// is absent.
func (b *builder) buildSystemdLUKS() error {
	present := false
	for _, n := range systemdLUKSParams {
		present = present || len(b.lists[n]) > 0
	}
	if !present {
		return nil
	}
	for _, n := range []string{"rd.luks", "luks"} {
		if p, ok := b.get(n); ok {
			on, err := parseBool(p)
			if err != nil {
				return err
			}
			if !on {
				b.note("%s turns the rd.luks.*/luks.* parameters off: they are ignored", p.String())
				return nil
			}
		}
	}
	if p, ok := b.get("cryptdevice"); ok {
		b.note("rd.luks.*/luks.* are ignored: %s names the LUKS device (nbdroot opens one)", p.String())
		return nil
	}
	list := func(names ...string) []Param {
		var out []Param
		for _, n := range names {
			out = append(out, b.lists[n]...)
		}
		return out
	}
	uuids := map[string]Param{}
	var order []string
	names := map[string]string{}
	addUUID := func(u string, p Param) {
		if _, ok := uuids[u]; !ok {
			uuids[u] = p
			order = append(order, u)
		}
	}
	for _, p := range list("rd.luks.uuid", "luks.uuid") {
		u, ok := normLUKSUUID(p.Value)
		if !ok {
			return perr(p.Name, p.Value, "not a LUKS UUID", formSystemdLUKS)
		}
		addUUID(u, p)
	}
	for _, p := range list("rd.luks.name", "luks.name") {
		u, name, ok := cutLUKSUUID(p.Value)
		if !ok {
			return perr(p.Name, p.Value, "not UUID=NAME", formSystemdLUKS)
		}
		if r := checkMapperName(name); r != "" {
			return perr(p.Name, p.Value, r, formSystemdLUKS)
		}
		if _, dup := names[u]; !dup {
			names[u] = name
		}
		addUUID(u, p)
	}
	switch len(order) {
	case 0:
		return missing("rd.luks.uuid", "rd.luks.options= or rd.luks.key= is given but no rd.luks.uuid= or rd.luks.name= names the volume", formSystemdLUKS)
	case 1:
	default:
		p := uuids[order[1]]
		return perr(p.Name, p.Value, "names a second LUKS volume ("+order[0]+" is the first): nbdroot opens one", formSystemdLUKS)
	}
	uuid := order[0]
	c := &Crypt{Device: "UUID=" + uuid, Name: "luks-" + uuid}
	if n, ok := names[uuid]; ok {
		c.Name = n
	}
	b.src("crypt", uuids[uuid].String())
	// Options and keys: one for this volume (UUID=…) wins over a general one.
	pick := func(ps []Param) (Param, string, bool, error) {
		var general *Param
		var generalVal string
		for i := range ps {
			u, rest, ok := cutLUKSUUID(ps[i].Value)
			switch {
			case ok && u == uuid:
				return ps[i], rest, true, nil
			case ok:
				b.note("%s is for another volume than %s; ignored", ps[i].String(), uuid)
			case general == nil:
				general, generalVal = &ps[i], rest
			}
		}
		if general != nil {
			return *general, generalVal, true, nil
		}
		return Param{}, "", false, nil
	}
	if p, opts, ok, _ := pick(list("rd.luks.options", "luks.options")); ok {
		seen := map[string]bool{}
		for _, o := range strings.Split(opts, ",") {
			if o == "" {
				continue
			}
			canon, known := cryptOptions[o]
			if !known {
				b.note("%s: option %s is not one nbdroot applies (it maps allow-discards/discard, no-read-workqueue, no-write-workqueue); ignored", p.String(), strconv.Quote(o))
				continue
			}
			if !seen[canon] {
				seen[canon] = true
				c.Options = append(c.Options, canon)
			}
		}
	}
	if p, key, ok, _ := pick(list("rd.luks.key", "luks.key")); ok {
		file, dev, onDev := strings.Cut(key, ":")
		if !strings.HasPrefix(file, "/") {
			return perr(p.Name, p.Value, "the key file must be an absolute path", formSystemdLUKS)
		}
		if onDev {
			if r := checkBlockDevice(dev); r != "" {
				return perr(p.Name, p.Value, r, formSystemdLUKS)
			}
			// The file system of the key device is probed when the key is read.
			c.Key = &CryptKey{Kind: "file", Device: dev, Path: file}
		} else {
			c.Key = &CryptKey{Kind: "rootfs", Path: file}
		}
		b.src("crypt.key", p.String())
	}
	b.plan.Crypt = c
	return nil
}
