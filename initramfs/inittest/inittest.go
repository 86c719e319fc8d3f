// Package inittest writes small synthetic ELF executables for tests of the image builder's
// init check: a static or dynamic program of a chosen architecture, optionally carrying Go
// build information that names its main package, so that CheckInit and the builder can be
// tested without compiling nbdroot-init.
package inittest

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
)

// Options describe a synthetic executable.
type Options struct {
	// Machine is the ELF machine (default EM_X86_64). Every file is ELF64 little-endian.
	Machine elf.Machine
	// Interp, when set, makes it dynamically linked with this program interpreter.
	Interp string
	// GoMain, when set, adds Go build information naming this main package path.
	GoMain string
	// Type is the ELF type (default ET_EXEC).
	Type elf.Type
}

// Init is a static x86-64 executable that says it is nbdroot-init.
var Init = Options{GoMain: "github.com/nbdroot/nbdroot/cmd/nbdroot-init"}

// Bytes returns the executable o describes: an ELF header, a PT_LOAD segment mapping the
// whole file (so that the build information can be read through it), a PT_INTERP segment
// when dynamic, and section headers for .interp, .go.buildinfo and .shstrtab.
func Bytes(o Options) []byte {
	if o.Machine == 0 {
		o.Machine = elf.EM_X86_64
	}
	if o.Type == 0 {
		o.Type = elf.ET_EXEC
	}
	const base = 0x400000
	const ehsize, phentsize, shentsize = 64, 56, 64
	nph := 1
	if o.Interp != "" {
		nph++
	}
	var secs []*section
	if o.Interp != "" {
		secs = append(secs, &section{name: ".interp", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC, data: append([]byte(o.Interp), 0)})
	}
	if o.GoMain != "" {
		secs = append(secs, &section{name: ".go.buildinfo", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_WRITE, data: buildInfo(o.GoMain)})
	}
	shstr := []byte{0}
	nameOff := map[string]uint32{}
	for _, n := range append(names(secs), ".shstrtab") {
		nameOff[n] = uint32(len(shstr))
		shstr = append(append(shstr, n...), 0)
	}
	secs = append(secs, &section{name: ".shstrtab", typ: elf.SHT_STRTAB, data: shstr})

	var body bytes.Buffer
	off := uint64(ehsize + nph*phentsize)
	body.Write(make([]byte, off))
	for _, s := range secs {
		for off%16 != 0 {
			body.WriteByte(0)
			off++
		}
		s.off = off
		body.Write(s.data)
		off += uint64(len(s.data))
	}
	for off%8 != 0 {
		body.WriteByte(0)
		off++
	}
	shoff := off
	le := binary.LittleEndian
	b := body.Bytes()
	sh := make([]byte, shentsize*(len(secs)+1))
	for i, s := range secs {
		e := sh[shentsize*(i+1):]
		le.PutUint32(e[0:], nameOff[s.name])
		le.PutUint32(e[4:], uint32(s.typ))
		le.PutUint64(e[8:], uint64(s.flags))
		if s.flags&elf.SHF_ALLOC != 0 {
			le.PutUint64(e[16:], base+s.off)
		}
		le.PutUint64(e[24:], s.off)
		le.PutUint64(e[32:], uint64(len(s.data)))
		le.PutUint64(e[48:], 1)
	}
	b = append(b, sh...)
	total := uint64(len(b))

	h := b[:ehsize]
	copy(h, elf.ELFMAG)
	h[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	h[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	h[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(h[16:], uint16(o.Type))
	le.PutUint16(h[18:], uint16(o.Machine))
	le.PutUint32(h[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(h[24:], base+uint64(ehsize+nph*phentsize)) // entry
	le.PutUint64(h[32:], ehsize)                            // phoff
	le.PutUint64(h[40:], shoff)
	le.PutUint16(h[52:], ehsize)
	le.PutUint16(h[54:], phentsize)
	le.PutUint16(h[56:], uint16(nph))
	le.PutUint16(h[58:], shentsize)
	le.PutUint16(h[60:], uint16(len(secs)+1))
	le.PutUint16(h[62:], uint16(len(secs))) // .shstrtab is the last section

	ph := b[ehsize:]
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_W|elf.PF_X))
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], total)
	le.PutUint64(ph[40:], total)
	le.PutUint64(ph[48:], 0x1000)
	if o.Interp != "" {
		p := ph[phentsize:]
		s := secs[0]
		le.PutUint32(p[0:], uint32(elf.PT_INTERP))
		le.PutUint32(p[4:], uint32(elf.PF_R))
		le.PutUint64(p[8:], s.off)
		le.PutUint64(p[16:], base+s.off)
		le.PutUint64(p[24:], base+s.off)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], uint64(len(s.data)))
		le.PutUint64(p[48:], 1)
	}
	return b
}

// section is one section of a synthetic executable.
type section struct {
	name  string
	typ   elf.SectionType
	flags elf.SectionFlag
	data  []byte
	off   uint64
}

func names(secs []*section) []string {
	out := make([]string, len(secs))
	for i, s := range secs {
		out[i] = s.name
	}
	return out
}

// buildInfo is a .go.buildinfo section in the form Go 1.18+ writes (debug/buildinfo): the
// magic, pointer size 8, the flag for inline strings, then the Go version and the module
// information as length-prefixed strings, the latter between 16-byte sentinels.
func buildInfo(mainPath string) []byte {
	b := make([]byte, 32)
	copy(b, "\xff Go buildinf:")
	b[14] = 8
	b[15] = 2
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str("go1.26")
	sentinel := string(bytes.Repeat([]byte{0x30}, 16))
	str(sentinel + "path\t" + mainPath + "\nmod\tgithub.com/nbdroot/nbdroot\t(devel)\t\n" + sentinel)
	return b
}

// Write writes the executable o describes to path with mode 0755.
func Write(path string, o Options) error {
	return os.WriteFile(path, Bytes(o), 0o755)
}
