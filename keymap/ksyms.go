package keymap

import "sync"

// direction says which form a keysym is wanted in: the 8-bit K(KT_LATIN, byte) of the
// current charset, or Unicode (a code point XOR 0xf000); auto follows the keymap's mode.
type direction int

const (
	toAuto direction = iota
	to8Bit
	toUnicode
)

// symbolTables are the lookups built from the generated symbol list.
type symbolTables struct {
	// latin are the KT_LATIN names by value: ASCII (0-127) and Latin-1 (160-255).
	latin [256]string
	// byType are the other types' names, by type and value.
	byType map[int][]string
	// synonym maps another name to the official one.
	synonym map[string]string
}

var (
	tablesOnce sync.Once
	tables     *symbolTables
)

func syms() *symbolTables {
	tablesOnce.Do(func() {
		t := &symbolTables{byType: map[int][]string{}, synonym: map[string]string{}}
		for _, s := range symbols {
			typ, val := ktyp(int(s.code)), kval(int(s.code))
			if typ == ktLatin {
				t.latin[val] = s.name
				continue
			}
			names := t.byType[typ]
			for len(names) <= val {
				names = append(names, "")
			}
			names[val] = s.name
			t.byType[typ] = names
		}
		for _, s := range synonyms {
			t.synonym[s.name] = s.official
		}
		tables = t
	})
	return tables
}

// charset is the upper half (160-255) of an 8-bit charset: each byte's name and Unicode
// code point. nbdroot knows ISO 8859-1 (also Unicode's first 256 code points) and
// ISO 8859-15 (Latin-1 with the euro sign and seven other changes); the keymaps of the
// other charsets kbd knows use U+ code points in the forms distributions generate.
type charset struct {
	name  string
	names [96]string
	uni   [96]rune
}

var charsets = sync.OnceValue(func() []*charset {
	latin1 := &charset{name: "iso-8859-1"}
	for i := range 96 {
		latin1.names[i] = syms().latin[160+i]
		latin1.uni[i] = rune(160 + i)
	}
	latin9 := &charset{name: "iso-8859-15"}
	*latin9 = *latin1
	latin9.name = "iso-8859-15"
	for _, c := range []struct {
		b    int
		name string
		uni  rune
	}{
		{0xa4, "euro", 0x20ac}, {0xa6, "Scaron", 0x0160}, {0xa8, "scaron", 0x0161}, {0xb4, "Zcaron", 0x017d},
		{0xb8, "zcaron", 0x017e}, {0xbc, "OE", 0x0152}, {0xbd, "oe", 0x0153}, {0xbe, "Ydiaeresis", 0x0178},
	} {
		latin9.names[c.b-160] = c.name
		latin9.uni[c.b-160] = c.uni
	}
	return []*charset{latin1, latin9}
})

// lookupCharset returns the charset called name (case-insensitive), or nil.
func lookupCharset(name string) *charset {
	for _, c := range charsets() {
		if equalFold(c.name, name) {
			return c
		}
	}
	return nil
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// symToCode is loadkeys' ksymtocode: the action a keysym name stands for, in dir; ok is
// false for a name nbdroot does not know.
func (p *parser) symToCode(s string, dir direction) (int, bool) {
	if dir == toAuto {
		dir = p.direction()
	}
	if rest, ok := cutPrefix(s, "Meta_"); ok {
		c, ok := p.symToCode(rest, to8Bit)
		if ok && ktyp(c) == ktLatin {
			return k(ktMeta, kval(c)), true
		}
		if dir == toUnicode {
			// loadkeys maps Meta_ of a non-ASCII keysym to nul in Unicode mode.
			return 0, true
		}
		return 0, false
	}
	t := syms()
	if dir == to8Bit {
		for i, n := range p.charset.names {
			if n != "" && n == s {
				return k(ktLatin, 160+i), true
			}
		}
	}
	max := 128
	if dir == to8Bit {
		max = 256
	}
	for i := 0; i < max; i++ {
		if t.latin[i] != "" && t.latin[i] == s {
			return k(ktLatin, i), true
		}
	}
	for typ := 1; typ <= ktBrl; typ++ {
		for v, n := range t.byType[typ] {
			if n != "" && n == s {
				return k(typ, v), true
			}
		}
	}
	if off, ok := t.synonym[s]; ok {
		return p.symToCode(off, dir)
	}
	if dir == toUnicode {
		for _, cs := range append([]*charset{p.charset}, charsets()...) {
			for i, n := range cs.names {
				if n != "" && n == s {
					return int(cs.uni[i]) ^ 0xf000, true
				}
			}
		}
		return 0, false
	}
	for _, cs := range charsets() {
		for i, n := range cs.names {
			if n != "" && n == s {
				return k(ktLatin, 160+i), true
			}
		}
	}
	return 0, false
}

// codeToSym is loadkeys' codetoksym: the name of an action, "" when it has none.
func (p *parser) codeToSym(code int) string {
	t := syms()
	if code < 0 {
		return ""
	}
	if code < 0x1000 {
		if code < 0x80 {
			return t.latin[code]
		}
		typ := ktyp(code)
		if typ == ktMeta {
			return ""
		}
		if typ == ktLetter {
			typ = ktLatin
		}
		if typ > ktLatin {
			if names := t.byType[typ]; kval(code) < len(names) {
				return names[kval(code)]
			}
			return ""
		}
		if v := kval(code); v >= 160 {
			return p.charset.names[v-160]
		}
		return ""
	}
	code ^= 0xf000
	if code < 0x80 {
		return t.latin[code]
	}
	for _, cs := range charsets() {
		for i, u := range cs.uni {
			if int(u) == code && cs.names[i] != "" {
				return cs.names[i]
			}
		}
	}
	return ""
}

// convert is loadkeys' convert_code: code in the form dir wants.
func (p *parser) convert(code int, dir direction) (int, bool) {
	forced := dir == toUnicode
	isUnicode := code >= 0x1000
	if dir == toAuto {
		dir = p.direction()
	}
	var result int
	switch {
	case !isUnicode && ktyp(code) == ktMeta:
		return code, true
	case !isUnicode && code < 0x80:
		return code, true
	case isUnicode && code^0xf000 < 0x80:
		return code ^ 0xf000, true
	case isUnicode && dir == toUnicode, !isUnicode && dir == to8Bit:
		result = code
	default:
		result = code
		if name := p.codeToSym(code); name != "" {
			r, ok := p.symToCode(name, dir)
			if !ok {
				return 0, false
			}
			result = r
		}
		if dir == toUnicode && ktyp(code) == ktLetter && result^0xf000 < 0x100 {
			result = k(ktLetter, result^0xf000)
		}
	}
	if forced && result >= 0x1000 {
		return result ^ 0xf000, true
	}
	return result, true
}

// capsLock is loadkeys' add_capslock: the action of a keysym written with '+', which Caps
// Lock shifts (KT_LETTER).
func (p *parser) capsLock(code int) (int, bool) {
	switch {
	case code < 0x1000 && ktyp(code) == ktLatin && (p.direction() != toUnicode || code < 0x80):
		return k(ktLetter, kval(code)), true
	case code^0xf000 < 0x100:
		return k(ktLetter, code^0xf000), true
	}
	return p.convert(code, toAuto)
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && s[:len(prefix)] == prefix {
		return s[len(prefix):], true
	}
	return s, false
}
