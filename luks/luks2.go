package luks

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

// LUKS2 binary header layout (LUKS2 On-Disk Format Specification §2.1, struct
// luks2_hdr_disk): 4096 bytes, big-endian, followed by the JSON area up to hdr_size.
const (
	luks2BinSize      = 4096
	luks2OffHdrSize   = 8
	luks2OffSeqID     = 16
	luks2OffLabel     = 24
	luks2OffCsumAlg   = 72
	luks2OffUUID      = 168
	luks2OffSubsystem = 208
	luks2OffHdrOffset = 256
	luks2OffCsum      = 448
	luks2CsumLen      = 64
	luks2MaxKeyslots  = 32 // LUKS2 spec §3: keyslot ids 0..31
	luks2MaxObjects   = 64 // digests, segments: far more than any writer uses
)

// luks2HdrSizes are the only header sizes (binary header + JSON area) the spec allows
// (§2.1: 16 KiB to 4 MiB, powers of two); the secondary copy starts at the primary's size,
// so these are also where Open looks for it when the primary is unreadable (§2.2).
var luks2HdrSizes = []int64{
	0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
}

// luks2Copy is one validated LUKS2 header copy.
type luks2Copy struct {
	offset  int64
	hdrSize int64
	seqID   uint64
	label   string
	subsys  string
	uuid    string
	meta    *luks2JSON
}

// openLUKS2 reads both LUKS2 header copies and picks the valid one, or the newer when both
// are valid (LUKS2 spec §2.2: the copy with the higher seqid wins).
func openLUKS2(dev io.ReaderAt) (*Volume, error) {
	prim, perr := readLUKS2Copy(dev, 0, "primary")
	var sec *luks2Copy
	var serr error
	if perr == nil {
		sec, serr = readLUKS2Copy(dev, prim.hdrSize, "secondary")
	} else {
		sec, serr = findSecondary(dev)
	}
	var c *luks2Copy
	var other error
	switch {
	case perr == nil && serr == nil:
		c = prim
		if sec.seqID > prim.seqID {
			c = sec
			other = fmt.Errorf("primary header has an older sequence id (%d < %d)", prim.seqID, sec.seqID)
		} else if sec.seqID < prim.seqID {
			other = fmt.Errorf("secondary header has an older sequence id (%d < %d)", sec.seqID, prim.seqID)
		}
	case perr == nil:
		c, other = prim, serr
	case serr == nil:
		c, other = sec, perr
	default:
		if errors.Is(perr, errNoMagic) && errors.Is(serr, errNoMagic) {
			return nil, ErrNotLUKS
		}
		return nil, &HeaderCopiesError{Primary: perr, Secondary: serr}
	}
	v, err := c.volume()
	if err != nil {
		return nil, err
	}
	v.HeaderProblem = other
	return v, nil
}

// errNoMagic marks a header copy that is not there at all (as opposed to damaged).
var errNoMagic = errors.New("no LUKS2 magic")

// findSecondary looks for the secondary header at every offset the spec allows, as
// cryptsetup does when the primary header is damaged. The first valid one wins; otherwise
// the error of the first copy that had the magic, or errNoMagic.
func findSecondary(dev io.ReaderAt) (*luks2Copy, error) {
	var firstErr error
	for _, off := range luks2HdrSizes {
		c, err := readLUKS2Copy(dev, off, "secondary")
		if err == nil {
			return c, nil
		}
		if firstErr == nil && !errors.Is(err, errNoMagic) {
			firstErr = err
		}
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return nil, &CorruptHeaderError{Copy: "secondary", Offset: -1,
		Err: fmt.Errorf("%w at any of the standard offsets (16 KiB … 4 MiB)", errNoMagic)}
}

// readLUKS2Copy reads and validates the header copy at off: magic, version, size, self
// offset, checksum, and the JSON metadata. Reads are bounded by the largest header size
// the spec allows (4 MiB).
func readLUKS2Copy(dev io.ReaderAt, off int64, name string) (*luks2Copy, error) {
	fail := func(err error) (*luks2Copy, error) {
		return nil, &CorruptHeaderError{Copy: name, Offset: off, Err: err}
	}
	bin := make([]byte, luks2BinSize)
	if err := readAt(dev, bin, off, "binary header"); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return fail(fmt.Errorf("%w (device too short)", errNoMagic))
		}
		return nil, fmt.Errorf("luks: %s header: %w", name, err)
	}
	return decodeLUKS2Copy(dev, bin, off, name)
}

func decodeLUKS2Copy(dev io.ReaderAt, bin []byte, off int64, name string) (*luks2Copy, error) {
	fail := func(err error) (*luks2Copy, error) {
		return nil, &CorruptHeaderError{Copy: name, Offset: off, Err: err}
	}
	be := binary.BigEndian
	magic := magicPrimary
	if name == "secondary" {
		magic = magicSecondary
	}
	if !bytes.Equal(bin[:6], magic) {
		return fail(errNoMagic)
	}
	if v := be.Uint16(bin[6:8]); v != 2 {
		return fail(fmt.Errorf("version %d, want 2", v))
	}
	hdrSize := int64(be.Uint64(bin[luks2OffHdrSize:]))
	if !slices.Contains(luks2HdrSizes, hdrSize) {
		return fail(fmt.Errorf("header size %d is not one of 16 KiB … 4 MiB", be.Uint64(bin[luks2OffHdrSize:])))
	}
	if got := be.Uint64(bin[luks2OffHdrOffset:]); got != uint64(off) {
		return fail(fmt.Errorf("header says it is at offset %d", got))
	}
	if name == "secondary" && off != hdrSize {
		return fail(fmt.Errorf("header size %d does not put the secondary copy here", hdrSize))
	}
	csumAlg := cString(bin[luks2OffCsumAlg : luks2OffCsumAlg+32])
	newH, err := newHash(csumAlg)
	if err != nil {
		return fail(fmt.Errorf("checksum algorithm: %w", err))
	}
	area := make([]byte, hdrSize)
	copy(area, bin)
	if err := readAt(dev, area[luks2BinSize:], off+luks2BinSize, "JSON area"); err != nil {
		return fail(err)
	}
	// The checksum covers the whole header area (binary header and JSON) with the
	// checksum field itself zeroed (LUKS2 spec §2.1, "csum").
	h := newH()
	stored := bytes.Clone(area[luks2OffCsum : luks2OffCsum+luks2CsumLen])
	clear(area[luks2OffCsum : luks2OffCsum+luks2CsumLen])
	h.Write(area)
	sum := h.Sum(nil)
	if subtle.ConstantTimeCompare(sum, stored[:len(sum)]) != 1 {
		return fail(fmt.Errorf("%s checksum mismatch", csumAlg))
	}
	jsonArea := area[luks2BinSize:]
	if i := bytes.IndexByte(jsonArea, 0); i >= 0 {
		jsonArea = jsonArea[:i]
	}
	meta, err := parseLUKS2JSON(jsonArea)
	if err != nil {
		return fail(err)
	}
	if uint64(meta.Config.JSONSize) != uint64(hdrSize-luks2BinSize) {
		return fail(fmt.Errorf("config.json_size %d does not match the header size %d", meta.Config.JSONSize, hdrSize))
	}
	if err := meta.checkAreas(uint64(hdrSize)); err != nil {
		return fail(err)
	}
	return &luks2Copy{
		offset:  off,
		hdrSize: hdrSize,
		seqID:   be.Uint64(bin[luks2OffSeqID:]),
		label:   cString(bin[luks2OffLabel : luks2OffLabel+48]),
		subsys:  cString(bin[luks2OffSubsystem : luks2OffSubsystem+48]),
		uuid:    cString(bin[luks2OffUUID : luks2OffUUID+40]),
		meta:    meta,
	}, nil
}

// luks2JSON is the LUKS2 JSON metadata (LUKS2 spec §3). Offsets and sizes are JSON
// strings holding decimal uint64s (u64 below), because JSON numbers lose precision.
type luks2JSON struct {
	Keyslots map[string]luks2Keyslot    `json:"keyslots"`
	Tokens   map[string]json.RawMessage `json:"tokens"`
	Segments map[string]luks2Segment    `json:"segments"`
	Digests  map[string]luks2Digest     `json:"digests"`
	Config   luks2Config                `json:"config"`
}

type luks2Keyslot struct {
	Type     string `json:"type"`
	KeySize  int    `json:"key_size"`
	Priority *int   `json:"priority"`
	AF       struct {
		Type    string `json:"type"`
		Stripes int    `json:"stripes"`
		Hash    string `json:"hash"`
	} `json:"af"`
	Area struct {
		Type       string `json:"type"`
		Offset     u64    `json:"offset"`
		Size       u64    `json:"size"`
		Encryption string `json:"encryption"`
		KeySize    int    `json:"key_size"`
	} `json:"area"`
	KDF struct {
		Type       string `json:"type"`
		Hash       string `json:"hash"`
		Iterations uint32 `json:"iterations"`
		Time       uint32 `json:"time"`
		Memory     uint32 `json:"memory"`
		CPUs       uint32 `json:"cpus"`
		Salt       string `json:"salt"`
	} `json:"kdf"`
}

type luks2Segment struct {
	Type       string          `json:"type"`
	Offset     u64             `json:"offset"`
	Size       string          `json:"size"` // decimal bytes or "dynamic"
	IVTweak    u64             `json:"iv_tweak"`
	Encryption string          `json:"encryption"`
	SectorSize int             `json:"sector_size"`
	Integrity  json.RawMessage `json:"integrity"`
	Flags      []string        `json:"flags"`
}

type luks2Digest struct {
	Type       string   `json:"type"`
	Keyslots   []string `json:"keyslots"`
	Segments   []string `json:"segments"`
	Hash       string   `json:"hash"`
	Iterations uint32   `json:"iterations"`
	Salt       string   `json:"salt"`
	Digest     string   `json:"digest"`
}

type luks2Config struct {
	JSONSize     u64      `json:"json_size"`
	KeyslotsSize u64      `json:"keyslots_size"`
	Flags        []string `json:"flags"`
	Requirements struct {
		Mandatory []string `json:"mandatory"`
	} `json:"requirements"`
}

// u64 is a LUKS2 JSON uint64: a string of decimal digits.
type u64 uint64

// UnmarshalJSON accepts only a JSON string of decimal digits, as LUKS2 writes them.
func (n *u64) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a decimal string, got %.32s", b)
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil || s == "" || s[0] == '+' {
		return fmt.Errorf("want a decimal string, got %q", truncate(s, 32))
	}
	*n = u64(v)
	return nil
}

// parseLUKS2JSON decodes and structurally validates the JSON metadata: the sections are
// there and ids are small integers. What a keyslot or segment means is checked when it is
// converted (volume), so that one odd keyslot does not make the whole header unusable.
func parseLUKS2JSON(b []byte) (*luks2JSON, error) {
	var m luks2JSON
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("JSON metadata: %w", err)
	}
	if m.Keyslots == nil || m.Segments == nil || m.Digests == nil || m.Tokens == nil {
		return nil, fmt.Errorf("JSON metadata: keyslots, tokens, segments or digests missing")
	}
	if len(m.Keyslots) > luks2MaxKeyslots || len(m.Segments) > luks2MaxObjects ||
		len(m.Digests) > luks2MaxObjects || len(m.Tokens) > luks2MaxObjects {
		return nil, fmt.Errorf("JSON metadata: too many objects")
	}
	for id := range m.Keyslots {
		if _, err := jsonID(id, luks2MaxKeyslots); err != nil {
			return nil, fmt.Errorf("keyslot %w", err)
		}
	}
	for id := range m.Segments {
		if _, err := jsonID(id, luks2MaxObjects); err != nil {
			return nil, fmt.Errorf("segment %w", err)
		}
	}
	for id, d := range m.Digests {
		if _, err := jsonID(id, luks2MaxObjects); err != nil {
			return nil, fmt.Errorf("digest %w", err)
		}
		for _, k := range d.Keyslots {
			if _, err := jsonID(k, luks2MaxKeyslots); err != nil {
				return nil, fmt.Errorf("digest %s: keyslot %w", id, err)
			}
			if _, ok := m.Keyslots[k]; !ok {
				return nil, fmt.Errorf("digest %s names keyslot %s, which does not exist", id, k)
			}
		}
		for _, s := range d.Segments {
			if _, err := jsonID(s, luks2MaxObjects); err != nil {
				return nil, fmt.Errorf("digest %s: segment %w", id, err)
			}
			if _, ok := m.Segments[s]; !ok {
				return nil, fmt.Errorf("digest %s names segment %s, which does not exist", id, s)
			}
		}
	}
	return &m, nil
}

// jsonID parses an object id ("0", "1", …) below max.
func jsonID(s string, max int) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n >= max || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("id %q is not an integer in 0..%d", truncate(s, 16), max-1)
	}
	return n, nil
}

// checkAreas validates the keyslot areas against the header layout: each lies after both
// header copies and inside the keyslots area (LUKS2 spec §2.3, config.keyslots_size).
func (m *luks2JSON) checkAreas(hdrSize uint64) error {
	start := 2 * hdrSize
	end := start + uint64(m.Config.KeyslotsSize)
	if uint64(m.Config.KeyslotsSize) > 1<<40 {
		return fmt.Errorf("config.keyslots_size %d is absurd", m.Config.KeyslotsSize)
	}
	for id, k := range m.Keyslots {
		if k.Area.Type != "raw" {
			continue // reencryption areas (checksum, datashift, …) are never read here
		}
		off, size := uint64(k.Area.Offset), uint64(k.Area.Size)
		if off < start || size > end || off > end-size {
			return fmt.Errorf("keyslot %s: area %d+%d outside the keyslots area %d..%d", id, off, size, start, end)
		}
	}
	return nil
}

// volume converts the chosen copy into a Volume: keyslots, digests and the data segment.
func (c *luks2Copy) volume() (*Volume, error) {
	m := c.meta
	v := &Volume{
		Version:    2,
		UUID:       c.uuid,
		Label:      c.label,
		Subsystem:  c.subsys,
		HeaderCopy: "primary",
		Flags:      slices.Clone(m.Config.Flags),
	}
	if c.offset != 0 {
		v.HeaderCopy = "secondary"
	}
	for _, f := range v.Flags {
		if err := checkTableToken("config flag", f, 64); err != nil {
			return nil, &CorruptHeaderError{Copy: v.HeaderCopy, Offset: c.offset, Err: err}
		}
	}
	// A mandatory requirement we do not implement (online-reencrypt, opal, …) means the
	// volume must not be opened by us (LUKS2 spec §3.5, config.requirements.mandatory).
	if len(m.Config.Requirements.Mandatory) > 0 {
		return nil, &UnsupportedError{What: "requirement", Name: strings.Join(m.Config.Requirements.Mandatory, ",")}
	}

	for _, id := range sortedIDs(m.Keyslots) {
		j := m.Keyslots[strconv.Itoa(id)]
		k, err := j.keyslot(id)
		if err != nil {
			return nil, &CorruptHeaderError{Copy: v.HeaderCopy, Offset: c.offset, Err: fmt.Errorf("keyslot %d: %w", id, err)}
		}
		v.Keyslots = append(v.Keyslots, k)
	}
	for _, id := range sortedIDs(m.Digests) {
		j := m.Digests[strconv.Itoa(id)]
		d, err := j.digest(id)
		if err != nil {
			return nil, &CorruptHeaderError{Copy: v.HeaderCopy, Offset: c.offset, Err: fmt.Errorf("digest %d: %w", id, err)}
		}
		v.Digests = append(v.Digests, d)
	}
	seg, err := m.dataSegment()
	if err != nil {
		var u *UnsupportedError
		if errors.As(err, &u) {
			return nil, err
		}
		return nil, &CorruptHeaderError{Copy: v.HeaderCopy, Offset: c.offset, Err: err}
	}
	v.Segment = seg
	return v, nil
}

func sortedIDs[T any](m map[string]T) []int {
	ids := make([]int, 0, len(m))
	for s := range m {
		n, _ := strconv.Atoi(s) // validated by parseLUKS2JSON
		ids = append(ids, n)
	}
	slices.Sort(ids)
	return ids
}

// keyslot converts a JSON keyslot. Types and algorithms we cannot run are kept (Unlock
// reports them per keyslot); values that cannot be right are errors.
func (j *luks2Keyslot) keyslot(id int) (Keyslot, error) {
	k := Keyslot{
		ID:          id,
		Type:        j.Type,
		Priority:    PriorityNormal,
		KeySize:     j.KeySize,
		Stripes:     j.AF.Stripes,
		AFHash:      j.AF.Hash,
		AreaOffset:  int64(j.Area.Offset),
		AreaSize:    int64(j.Area.Size),
		AreaCipher:  j.Area.Encryption,
		AreaKeySize: j.Area.KeySize,
		KDF: KDF{
			Type: j.KDF.Type, Hash: j.KDF.Hash, Iterations: j.KDF.Iterations,
			Time: j.KDF.Time, Memory: j.KDF.Memory, CPUs: j.KDF.CPUs,
		},
	}
	if j.Priority != nil {
		if *j.Priority < 0 || *j.Priority > 2 {
			return k, fmt.Errorf("priority %d (want 0, 1 or 2)", *j.Priority)
		}
		k.Priority = Priority(*j.Priority)
	}
	if j.Type != "luks2" {
		return k, nil // e.g. "reencrypt": listed, never unlocked
	}
	if j.KeySize <= 0 || j.KeySize > maxKeySize {
		return k, fmt.Errorf("key_size %d (want 1..%d)", j.KeySize, maxKeySize)
	}
	if j.Area.KeySize <= 0 || j.Area.KeySize > maxKeySize {
		return k, fmt.Errorf("area key_size %d (want 1..%d)", j.Area.KeySize, maxKeySize)
	}
	if j.AF.Stripes <= 0 || j.AF.Stripes > maxStripes {
		return k, fmt.Errorf("af stripes %d (want 1..%d)", j.AF.Stripes, maxStripes)
	}
	if j.Area.Type == "raw" && k.afLength() > k.AreaSize {
		return k, fmt.Errorf("area of %d bytes cannot hold %d stripes of %d bytes", k.AreaSize, k.Stripes, k.KeySize)
	}
	salt, err := base64.StdEncoding.DecodeString(j.KDF.Salt)
	if err != nil {
		return k, fmt.Errorf("kdf salt: %w", err)
	}
	k.KDF.Salt = salt
	return k, nil
}

func (j *luks2Digest) digest(id int) (Digest, error) {
	d := Digest{ID: id, Type: j.Type, Hash: j.Hash, Iterations: j.Iterations}
	for _, s := range j.Keyslots {
		n, _ := strconv.Atoi(s)
		d.Keyslots = append(d.Keyslots, n)
	}
	for _, s := range j.Segments {
		n, _ := strconv.Atoi(s)
		d.Segments = append(d.Segments, n)
	}
	if j.Type != "pbkdf2" {
		return d, nil // unsupported digest types are reported by Unlock
	}
	var err error
	if d.Salt, err = base64.StdEncoding.DecodeString(j.Salt); err != nil {
		return d, fmt.Errorf("salt: %w", err)
	}
	if d.Value, err = base64.StdEncoding.DecodeString(j.Digest); err != nil {
		return d, fmt.Errorf("digest: %w", err)
	}
	if len(d.Value) == 0 || len(d.Value) > 64 {
		return d, fmt.Errorf("digest of %d bytes", len(d.Value))
	}
	if d.Iterations == 0 {
		return d, fmt.Errorf("0 iterations")
	}
	return d, nil
}

// dataSegment picks the segment that holds the data: a "crypt" segment not flagged as a
// backup (backup segments describe a reencryption's old/new state). Exactly one must exist;
// several mean a reencryption is in progress, which we do not do.
func (m *luks2JSON) dataSegment() (Segment, error) {
	var found []int
	for _, id := range sortedIDs(m.Segments) {
		s := m.Segments[strconv.Itoa(id)]
		if slices.ContainsFunc(s.Flags, func(f string) bool { return strings.HasPrefix(f, "backup-") }) {
			continue
		}
		found = append(found, id)
	}
	if len(found) == 0 {
		return Segment{}, fmt.Errorf("no data segment")
	}
	if len(found) > 1 {
		return Segment{}, &UnsupportedError{What: "segment layout", Name: fmt.Sprintf("%d data segments (reencryption in progress?)", len(found))}
	}
	id := found[0]
	j := m.Segments[strconv.Itoa(id)]
	if j.Type != "crypt" {
		return Segment{}, &UnsupportedError{What: "segment type", Name: j.Type}
	}
	if len(j.Integrity) > 0 && string(j.Integrity) != "null" {
		return Segment{}, &UnsupportedError{What: "segment", Name: "with integrity (dm-integrity/AEAD)"}
	}
	if err := checkTableToken("segment encryption", j.Encryption, maxCipherSpecLen); err != nil {
		return Segment{}, err
	}
	if !validSectorSize(j.SectorSize) {
		return Segment{}, fmt.Errorf("segment %d: sector_size %d", id, j.SectorSize)
	}
	s := Segment{
		ID:         id,
		Offset:     int64(j.Offset),
		IVTweak:    uint64(j.IVTweak),
		Cipher:     j.Encryption,
		SectorSize: j.SectorSize,
		// LUKS2 counts IVs in 512-byte sectors whatever sector_size is: cryptsetup never
		// sets iv_large_sectors for LUKS2 (only for BitLocker and plain mode), and data it
		// encrypts with 4096-byte sectors decrypts only that way
		// (TestSectorCipherMatchesCryptsetup).
		LargeIV: false,
	}
	if j.Offset%512 != 0 || j.Offset > 1<<62 {
		return Segment{}, fmt.Errorf("segment %d: offset %d is not a 512-byte multiple", id, j.Offset)
	}
	if j.Size == "dynamic" {
		s.Dynamic = true
	} else {
		n, err := strconv.ParseUint(j.Size, 10, 63)
		if err != nil || n == 0 || n%uint64(j.SectorSize) != 0 {
			return Segment{}, fmt.Errorf("segment %d: size %q", id, truncate(j.Size, 32))
		}
		s.Size = int64(n)
	}
	return s, nil
}
