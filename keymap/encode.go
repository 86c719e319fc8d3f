package keymap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// The compiled keymap in the image (layout.KeymapPath) is a small binary file, read by the
// init before the passphrase prompt:
//
//	"NBKM" 1                          magic, format version
//	u8  flags                         1: deallocate the tables the keymap does not define
//	u8  name length, name
//	u16 tables, u8 each               the tables the keymap defines
//	u16 entries, (u8 table, u8 key, u16 action) each, sorted
//	u16 compose definitions, (u32 diacr, u32 base, u32 result) each
//	u16 strings, (u8 function, u16 length, bytes) each
//
// little-endian throughout. A de keymap (9 tables) is about 4 KiB.
const (
	magic       = "NBKM"
	fileVersion = 1
)

// MarshalBinary encodes km in the image's format.
func (km *Keymap) MarshalBinary() ([]byte, error) {
	if len(km.Name) > 255 {
		return nil, errors.New("keymap name longer than 255 bytes")
	}
	if len(km.Entries) > MaxTables*NRKeys || len(km.Diacrs) > MaxDiacr || len(km.Funcs) > MaxFuncs || len(km.Tables) > MaxTables {
		return nil, errors.New("keymap larger than the kernel's tables")
	}
	le := binary.LittleEndian
	b := append([]byte(magic), fileVersion)
	var flags byte
	if km.Deallocate {
		flags |= 1
	}
	b = append(b, flags, byte(len(km.Name)))
	b = append(b, km.Name...)
	b = le.AppendUint16(b, uint16(len(km.Tables)))
	b = append(b, km.Tables...)
	entries := append([]Entry(nil), km.Entries...)
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].Table != entries[j].Table {
			return entries[i].Table < entries[j].Table
		}
		return entries[i].Key < entries[j].Key
	})
	b = le.AppendUint16(b, uint16(len(entries)))
	for _, e := range entries {
		b = append(b, e.Table, e.Key)
		b = le.AppendUint16(b, e.Value)
	}
	b = le.AppendUint16(b, uint16(len(km.Diacrs)))
	for _, d := range km.Diacrs {
		b = le.AppendUint32(b, d.Diacr)
		b = le.AppendUint32(b, d.Base)
		b = le.AppendUint32(b, d.Result)
	}
	b = le.AppendUint16(b, uint16(len(km.Funcs)))
	for _, f := range km.Funcs {
		if len(f.String) >= MaxFuncLen {
			return nil, fmt.Errorf("string of function %d longer than %d bytes", f.Index, MaxFuncLen-1)
		}
		b = append(b, f.Index)
		b = le.AppendUint16(b, uint16(len(f.String)))
		b = append(b, f.String...)
	}
	return b, nil
}

// decoder reads the format with bounds checks: the file comes from the image, but PID 1
// must not panic on a damaged one.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.b) {
		d.err = errors.New("keymap file truncated")
		return nil
	}
	out := d.b[:n]
	d.b = d.b[n:]
	return out
}

func (d *decoder) u8() byte {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() int {
	if b := d.take(2); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

// Decode reads a keymap written by MarshalBinary.
func Decode(b []byte) (*Keymap, error) {
	d := &decoder{b: b}
	if string(d.take(len(magic))) != magic {
		return nil, errors.New("not an nbdroot keymap")
	}
	if v := d.u8(); d.err == nil && v != fileVersion {
		return nil, fmt.Errorf("keymap format version %d, want %d", v, fileVersion)
	}
	km := &Keymap{}
	km.Deallocate = d.u8()&1 != 0
	km.Name = string(d.take(int(d.u8())))
	nt := d.u16()
	if nt > MaxTables {
		return nil, errors.New("keymap file: too many tables")
	}
	km.Tables = append([]uint8(nil), d.take(nt)...)
	ne := d.u16()
	for i := 0; i < ne && d.err == nil; i++ {
		t, k := d.u8(), d.u8()
		km.Entries = append(km.Entries, Entry{Table: t, Key: k, Value: uint16(d.u16())})
	}
	nd := d.u16()
	if nd > MaxDiacr {
		return nil, errors.New("keymap file: too many compose definitions")
	}
	for i := 0; i < nd && d.err == nil; i++ {
		km.Diacrs = append(km.Diacrs, Diacr{Diacr: d.u32(), Base: d.u32(), Result: d.u32()})
	}
	nf := d.u16()
	if nf > MaxFuncs {
		return nil, errors.New("keymap file: too many strings")
	}
	for i := 0; i < nf && d.err == nil; i++ {
		idx := d.u8()
		n := d.u16()
		if n >= MaxFuncLen {
			return nil, errors.New("keymap file: string too long")
		}
		km.Funcs = append(km.Funcs, Func{Index: idx, String: string(d.take(n))})
	}
	if d.err != nil {
		return nil, d.err
	}
	if len(d.b) != 0 {
		return nil, errors.New("keymap file: trailing bytes")
	}
	return km, nil
}
