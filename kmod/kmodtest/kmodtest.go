// Package kmodtest builds small synthetic kernel modules and modules directories for
// tests: ELF64 relocatable objects whose only content is a .modinfo section, laid out like
// /lib/modules/VER. They let module resolution and image building be tested on any machine,
// without a kernel package.
package kmodtest

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

// Module describes one synthetic module.
type Module struct {
	// Path is the file path relative to the modules directory, e.g.
	// kernel/fs/ext4/ext4.ko (a .ko.xz, .ko.zst or .ko.gz suffix compresses it).
	Path string
	// Modinfo are the key=value strings of its .modinfo section, in order.
	Modinfo []string
}

// ELF returns a minimal ELF64 little-endian x86-64 relocatable object with the given
// sections (name → contents), in name order, plus the section name string table.
func ELF(sections map[string][]byte) []byte {
	names := make([]string, 0, len(sections))
	for n := range sections {
		names = append(names, n)
	}
	sort.Strings(names)
	// .shstrtab: "\0" then every name.
	shstr := []byte{0}
	nameOff := map[string]uint32{}
	for _, n := range append(names, ".shstrtab") {
		nameOff[n] = uint32(len(shstr))
		shstr = append(append(shstr, n...), 0)
	}
	const ehsize, shentsize = 64, 64
	var body bytes.Buffer
	offs := map[string]uint64{}
	off := uint64(ehsize)
	for _, n := range names {
		offs[n] = off
		body.Write(sections[n])
		off += uint64(len(sections[n]))
	}
	offs[".shstrtab"] = off
	body.Write(shstr)
	off += uint64(len(shstr))
	for off%8 != 0 {
		body.WriteByte(0)
		off++
	}
	shoff := off
	shnum := uint16(len(names) + 2)

	var b bytes.Buffer
	le := binary.LittleEndian
	ident := [16]byte{0x7f, 'E', 'L', 'F', 2 /* 64-bit */, 1 /* LE */, 1 /* version */}
	b.Write(ident[:])
	binary.Write(&b, le, uint16(1))  // e_type ET_REL
	binary.Write(&b, le, uint16(62)) // e_machine EM_X86_64
	binary.Write(&b, le, uint32(1))  // e_version
	binary.Write(&b, le, uint64(0))  // e_entry
	binary.Write(&b, le, uint64(0))  // e_phoff
	binary.Write(&b, le, shoff)      // e_shoff
	binary.Write(&b, le, uint32(0))  // e_flags
	binary.Write(&b, le, uint16(ehsize))
	binary.Write(&b, le, uint16(0)) // e_phentsize
	binary.Write(&b, le, uint16(0)) // e_phnum
	binary.Write(&b, le, uint16(shentsize))
	binary.Write(&b, le, shnum)
	binary.Write(&b, le, shnum-1) // e_shstrndx: last section
	b.Write(body.Bytes())
	sh := func(name uint32, typ uint32, off, size uint64) {
		binary.Write(&b, le, name)
		binary.Write(&b, le, typ)
		binary.Write(&b, le, uint64(0)) // flags
		binary.Write(&b, le, uint64(0)) // addr
		binary.Write(&b, le, off)
		binary.Write(&b, le, size)
		binary.Write(&b, le, uint32(0)) // link
		binary.Write(&b, le, uint32(0)) // info
		binary.Write(&b, le, uint64(1)) // addralign
		binary.Write(&b, le, uint64(0)) // entsize
	}
	sh(0, 0, 0, 0) // SHN_UNDEF
	for _, n := range names {
		sh(nameOff[n], 1 /* SHT_PROGBITS */, offs[n], uint64(len(sections[n])))
	}
	sh(nameOff[".shstrtab"], 3 /* SHT_STRTAB */, offs[".shstrtab"], uint64(len(shstr)))
	return b.Bytes()
}

// ModinfoSection encodes key=value strings as a .modinfo section does: each string
// NUL-terminated, with the alignment padding NULs the kernel's build leaves between some.
func ModinfoSection(kv []string) []byte {
	var b bytes.Buffer
	for i, s := range kv {
		b.WriteString(s)
		b.WriteByte(0)
		if i%2 == 1 {
			b.WriteByte(0) // padding, as between aligned __MODULE_INFO strings
		}
	}
	return b.Bytes()
}

// Bytes returns the module file contents, compressed according to its Path suffix.
func (m Module) Bytes() ([]byte, error) {
	raw := ELF(map[string][]byte{".modinfo": ModinfoSection(m.Modinfo), ".text": []byte("\xc3")})
	var b bytes.Buffer
	switch {
	case strings.HasSuffix(m.Path, ".ko.xz"):
		w, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		w.Write(raw)
		if err := w.Close(); err != nil {
			return nil, err
		}
	case strings.HasSuffix(m.Path, ".ko.zst"):
		w, err := zstd.NewWriter(&b)
		if err != nil {
			return nil, err
		}
		w.Write(raw)
		if err := w.Close(); err != nil {
			return nil, err
		}
	case strings.HasSuffix(m.Path, ".ko.gz"):
		w := gzip.NewWriter(&b)
		w.Write(raw)
		if err := w.Close(); err != nil {
			return nil, err
		}
	default:
		return raw, nil
	}
	return b.Bytes(), nil
}

// Tree describes a synthetic modules directory.
type Tree struct {
	Modules []Module
	// Builtin are the lines of modules.builtin (kernel/…/name.ko).
	Builtin []string
	// BuiltinModinfo are the "name.key=value" strings of modules.builtin.modinfo.
	BuiltinModinfo []string
}

// Write creates the tree under dir (the /lib/modules/VER directory).
func (t Tree) Write(dir string) error {
	for _, m := range t.Modules {
		data, err := m.Bytes()
		if err != nil {
			return err
		}
		p := filepath.Join(dir, filepath.FromSlash(m.Path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if t.Builtin != nil {
		if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(strings.Join(t.Builtin, "\n")+"\n"), 0o644); err != nil {
			return err
		}
	}
	if t.BuiltinModinfo != nil {
		var b bytes.Buffer
		for _, s := range t.BuiltinModinfo {
			b.WriteString(s)
			b.WriteByte(0)
		}
		if err := os.WriteFile(filepath.Join(dir, "modules.builtin.modinfo"), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// Debian61 is a small tree shaped like Debian's 6.1 kernel where the hooks' modules are
// concerned: the same names, paths, depends=, softdep= and aliases (a subset), with
// af_packet, cbc and sha256_generic built in as there.
func Debian61() Tree {
	mod := func(path, name string, kv ...string) Module {
		return Module{Path: path, Modinfo: append(append([]string{"license=GPL"}, kv...), "name="+name, "vermagic=6.1.0-test SMP mod_unload")}
	}
	return Tree{
		Modules: []Module{
			mod("kernel/drivers/block/nbd.ko", "nbd", "alias=block-major-43-*", "alias=devname:nbd-control", "depends="),
			mod("kernel/drivers/md/dm-mod.ko", "dm_mod", "alias=devname:mapper/control", "alias=char-major-10-236", "depends="),
			mod("kernel/drivers/md/dm-crypt.ko", "dm_crypt", "depends=dm-mod"),
			mod("kernel/crypto/ecb.ko", "ecb", "alias=crypto-ecb", "alias=ecb", "depends="),
			mod("kernel/crypto/xts.ko", "xts", "softdep=pre: ecb", "alias=crypto-xts", "alias=xts", "depends="),
			mod("kernel/crypto/essiv.ko", "essiv", "alias=crypto-essiv", "alias=essiv", "depends=authenc"),
			mod("kernel/crypto/authenc.ko", "authenc", "alias=crypto-authenc", "depends="),
			mod("kernel/crypto/sha512_generic.ko", "sha512_generic", "alias=crypto-sha512", "alias=sha512", "depends="),
			mod("kernel/crypto/cryptd.ko", "cryptd", "depends="),
			mod("kernel/crypto/crypto_simd.ko", "crypto_simd", "depends=cryptd"),
			mod("kernel/arch/x86/crypto/aesni-intel.ko", "aesni_intel", "alias=crypto-aes", "alias=aes", "alias=cpu:type:x86,ven*fam*mod*:feature:*0099*", "depends=crypto_simd"),
			mod("kernel/crypto/crc32c_generic.ko", "crc32c_generic", "alias=crypto-crc32c-generic", "alias=crc32c-generic", "alias=crypto-crc32c", "alias=crc32c", "depends="),
			mod("kernel/arch/x86/crypto/crc32c-intel.ko", "crc32c_intel", "alias=crypto-crc32c-intel", "alias=crypto-crc32c", "alias=crc32c", "alias=cpu:type:x86,ven*fam*mod*:feature:*0094*", "depends="),
			mod("kernel/lib/crc16.ko", "crc16", "depends="),
			mod("kernel/fs/mbcache.ko", "mbcache", "depends="),
			mod("kernel/fs/jbd2/jbd2.ko", "jbd2", "softdep=pre: crc32c", "depends="),
			mod("kernel/fs/ext4/ext4.ko", "ext4", "softdep=pre: crypto-crc32c", "alias=fs-ext4", "alias=ext3", "alias=fs-ext3", "depends=jbd2,mbcache,crc16"),
			mod("kernel/drivers/virtio/virtio_ring.ko", "virtio_ring", "depends="),
			mod("kernel/drivers/virtio/virtio.ko", "virtio", "depends=virtio_ring"),
			mod("kernel/drivers/virtio/virtio_pci.ko", "virtio_pci", "alias=pci:v00001AF4d*sv*sd*bc*sc*i*", "depends=virtio_ring,virtio"),
			mod("kernel/net/core/failover.ko", "failover", "depends="),
			mod("kernel/drivers/net/net_failover.ko", "net_failover", "depends=failover"),
			mod("kernel/drivers/net/virtio_net.ko", "virtio_net", "alias=virtio:d00000001v*", "depends=virtio_ring,virtio,net_failover"),
			mod("kernel/drivers/net/ethernet/intel/e1000/e1000.ko", "e1000", "alias=pci:v00008086d0000100Esv*sd*bc*sc*i*", "alias=pci:v00008086d00001000sv*sd*bc*sc*i*", "depends="),
			mod("kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", "e1000e", "alias=pci:v00008086d000015B8sv*sd*bc*sc*i*", "depends="),
			mod("kernel/drivers/net/ethernet/intel/igc/igc.ko", "igc", "alias=pci:v00008086d000015F3sv*sd*bc*sc*i*", "depends="),
			mod("kernel/drivers/net/phy/libphy.ko", "libphy", "depends="),
			mod("kernel/drivers/net/phy/realtek.ko", "realtek", "alias=mdio:0000000000011100110010010001????", "depends=libphy"),
			mod("kernel/drivers/net/ethernet/realtek/r8169.ko", "r8169", "softdep=pre: realtek", "firmware=rtl_nic/rtl8168h-2.fw", "alias=pci:v000010ECd00008168sv*sd*bc*sc*i*", "depends=libphy"),
			mod("kernel/drivers/net/ethernet/broadcom/tg3.ko", "tg3", "alias=pci:v000014E4d00001644sv*sd*bc*sc*i*", "depends=libphy"),
		},
		Builtin: []string{"kernel/net/packet/af_packet.ko", "kernel/crypto/cbc.ko", "kernel/crypto/sha256_generic.ko", "kernel/net/unix/unix.ko"},
		BuiltinModinfo: []string{
			"af_packet.alias=net-pf-17", "af_packet.license=GPL", "af_packet.file=net/packet/af_packet",
			"cbc.alias=crypto-cbc", "cbc.alias=cbc", "sha256_generic.alias=crypto-sha256", "sha256_generic.alias=sha256",
			"unix.alias=net-pf-1",
		},
	}
}
