package keymap

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
)

// Resolver finds an included keymap file: name as the include line gives it, from the
// path of the file that includes it. It returns the file's path (for messages and further
// includes) and its contents, decompressed.
type Resolver func(name, from string) (path string, data []byte, err error)

// Options tune Parse.
type Options struct {
	// Resolve finds include files; nil refuses includes.
	Resolve Resolver
	// EightBit parses the keymap for a keyboard in 8-bit mode (loadkeys without -u). The
	// default is Unicode mode, the kernel's default (vt.default_utf8=1) and the init's.
	EightBit bool
}

// Limits of what Parse accepts: a keymap is a few hundred lines with a handful of includes.
const (
	maxIncludeDepth = 10
	maxInputBytes   = 4 << 20
	maxTable        = 511 // the nine modifier bits
)

// Error is a keymap that cannot be read: where and why.
type Error struct {
	File string
	Line int
	Msg  string
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return e.File + ": " + e.Msg
}

// Parse reads the keymap in data (file names it in messages) and compiles it: what
// loadkeys would load into the kernel.
func Parse(name string, data []byte, o Options) (*Keymap, error) {
	p := &parser{opts: o, prefer: !o.EightBit, charset: charsets()[0], constant: map[int]bool{}, funcs: map[int]string{}}
	p.lex = &lexer{p: p}
	if err := p.lex.push(name, data); err != nil {
		return nil, err
	}
	if err := p.parse(); err != nil {
		return nil, err
	}
	return p.compile(name)
}

// parser holds what loadkeys' context holds while it reads a keymap.
type parser struct {
	opts Options
	lex  *lexer
	// maps are the tables, by modifier combination: nil until allocated, then one value
	// per keycode, -1 for a key not set.
	maps        [maxTable + 1]*[NRKeys]int
	total       int // highest allocated table + 1
	keymapsLine bool
	altIsMeta   bool
	prefer      bool // LK_FLAG_PREFER_UNICODE
	charset     *charset
	constant    map[int]bool
	diacrs      []Diacr
	funcs       map[int]string
	mod         int
}

func (p *parser) direction() direction {
	if p.prefer {
		return toUnicode
	}
	return to8Bit
}

func (p *parser) addMap(t int) error {
	if t < 0 || t > maxTable {
		return fmt.Errorf("keymap %d out of range 0-%d", t, maxTable)
	}
	if p.maps[t] == nil {
		m := new([NRKeys]int)
		for i := range m {
			m[i] = -1
		}
		p.maps[t] = m
		if t+1 > p.total {
			p.total = t + 1
		}
	}
	return nil
}

func (p *parser) keyExists(t, key int) bool {
	return t >= 0 && t <= maxTable && key >= 0 && key < NRKeys && p.maps[t] != nil && p.maps[t][key] >= 0
}

func (p *parser) getKey(t, key int) int {
	if !p.keyExists(t, key) {
		return Hole
	}
	return p.maps[t][key]
}

// addKey is lk_add_key: it allocates the table unless a keymaps line decided the tables,
// and with alt_is_meta gives the Alt table the Meta version of a Latin key.
func (p *parser) addKey(t, key, val int) error {
	if t < 0 || t > maxTable {
		return fmt.Errorf("keymap %d out of range 0-%d", t, maxTable)
	}
	if val < 0 || val > 0xffff {
		return fmt.Errorf("key action %#x out of range", val)
	}
	if key < 0 || key >= NRKeys {
		// loadkeys keeps it, but never loads a keycode past NR_KEYS: nor do we.
		return nil
	}
	if p.maps[t] == nil {
		if p.keymapsLine {
			return fmt.Errorf("adding map %d violates explicit keymaps line", t)
		}
		if err := p.addMap(t); err != nil {
			return err
		}
	}
	if p.altIsMeta && val == Hole && p.keyExists(t, key) {
		return nil
	}
	p.maps[t][key] = val
	if p.altIsMeta {
		alt := t | modAlt
		typ := ktyp(val)
		if alt != t && alt <= maxTable && p.maps[alt] != nil && !p.keyExists(alt, key) &&
			(typ == ktLatin || typ == ktLetter) && kval(val) < 128 {
			return p.addKey(alt, key, k(ktMeta, kval(val)))
		}
	}
	return nil
}

// parse reads every line.
func (p *parser) parse() error {
	for {
		toks, eof, err := p.lex.line()
		if err != nil {
			return err
		}
		if len(toks) > 0 {
			if err := p.statement(toks); err != nil {
				var ke *Error
				if errors.As(err, &ke) {
					return err
				}
				return &Error{File: toks[0].file, Line: toks[0].line, Msg: err.Error()}
			}
		}
		if eof {
			return nil
		}
	}
}

// statement handles one line's tokens.
func (p *parser) statement(t []token) error {
	kinds := make([]tokKind, len(t))
	for i := range t {
		kinds[i] = t[i].kind
	}
	is := func(pattern ...tokKind) bool {
		if len(pattern) != len(t) {
			return false
		}
		for i, k := range pattern {
			if kinds[i] != k {
				return false
			}
		}
		return true
	}
	switch {
	case is(tCharset, tStrLiteral):
		cs := lookupCharset(t[1].str)
		if cs == nil {
			return fmt.Errorf("charset %q: nbdroot knows iso-8859-1 and iso-8859-15 (write other characters as U+XXXX)", t[1].str)
		}
		p.charset = cs
		// loadkeys: "the first 256 code points were made identical to ISO 8859-1", so a
		// Latin-1 keymap toggles Unicode mode off for its keysyms.
		if p.prefer && equalFold(t[1].str, "iso-8859-1") {
			p.prefer = false
		}
		return nil
	case is(tAltIsMeta):
		p.altIsMeta = true
		return nil
	case is(tStrings, tAs, tUsual):
		return p.stringsAsUsual()
	case is(tCompose, tAs, tUsual), is(tCompose, tAs, tUsual, tFor, tStrLiteral):
		if len(t) == 5 && !equalFold(t[4].str, "iso-8859-1") {
			return fmt.Errorf("don't know how to compose for %s", t[4].str)
		}
		return p.composeAsUsual()
	case len(t) >= 2 && kinds[0] == tKeymaps:
		p.keymapsLine = true
		return p.keymapsRange(t[1:])
	case len(t) >= 4 && kinds[0] == tString && kinds[1] == tLiteral && kinds[2] == tEquals && kinds[3] == tStrLiteral && len(t) == 4:
		if ktyp(t[1].num) != ktFn {
			return fmt.Errorf("'%s' is not a function key symbol", t[1].text)
		}
		s := t[3].str
		if len(s) >= MaxFuncLen {
			s = s[:MaxFuncLen-1]
		}
		p.funcs[kval(t[1].num)] = s
		return nil
	case len(t) >= 5 && kinds[0] == tCompose:
		return p.compose(t)
	case len(t) >= 3 && kinds[0] == tKeycode:
		return p.keycodeLine(t)
	case len(t) >= 4 && (kinds[0] == tPlain || kinds[0] == tModifier):
		return p.modifierLine(t)
	}
	return fmt.Errorf("syntax error near %q", t[0].text)
}

func (p *parser) keymapsRange(t []token) error {
	for len(t) > 0 {
		if t[0].kind != tNumber {
			return fmt.Errorf("syntax error in keymaps line near %q", t[0].text)
		}
		lo, hi := t[0].num, t[0].num
		t = t[1:]
		if len(t) >= 2 && t[0].kind == tDash && t[1].kind == tNumber {
			hi = t[1].num
			t = t[2:]
		}
		if hi > maxTable {
			return fmt.Errorf("keymap %d out of range 0-%d", hi, maxTable)
		}
		for i := lo; i <= hi; i++ {
			if err := p.addMap(i); err != nil {
				return err
			}
		}
		if len(t) == 0 {
			break
		}
		if t[0].kind != tComma {
			return fmt.Errorf("syntax error in keymaps line near %q", t[0].text)
		}
		t = t[1:]
	}
	return nil
}

// rvalues reads the actions after '=': NUMBER, U+XXXX or a keysym, each perhaps after '+'.
func (p *parser) rvalues(t []token) ([]int, error) {
	var out []int
	for len(t) > 0 {
		plus := t[0].kind == tPlus
		if plus {
			t = t[1:]
			if len(t) == 0 {
				return nil, errors.New("'+' without a keysym")
			}
		}
		var v int
		var ok bool
		switch t[0].kind {
		case tNumber:
			v, ok = t[0].num, true
			if plus {
				v, ok = p.capsLock(v)
			} else {
				v, ok = p.convert(v, toAuto)
			}
		case tUnicode:
			if plus {
				v, ok = p.capsLock(t[0].num ^ 0xf000)
			} else {
				v, ok = p.convert(t[0].num^0xf000, toAuto)
			}
		case tLiteral:
			v, ok = t[0].num, true
			if plus {
				v, ok = p.capsLock(v)
			}
		default:
			return nil, fmt.Errorf("syntax error near %q", t[0].text)
		}
		if !ok {
			return nil, fmt.Errorf("cannot convert %q", t[0].text)
		}
		out = append(out, v)
		t = t[1:]
	}
	return out, nil
}

func keycodeOf(t token) (int, error) {
	if t.kind != tNumber {
		return 0, fmt.Errorf("syntax error near %q: a keycode number", t.text)
	}
	return t.num, nil
}

// keycodeLine is "keycode N = A B C…": the i-th action goes to the i-th table of the
// keymaps line (or to table i without one); a single action marks the key constant: after
// the whole keymap it is spread over every table (letters with their shifted and control
// forms), as loadkeys does.
func (p *parser) keycodeLine(t []token) error {
	key, err := keycodeOf(t[1])
	if err != nil {
		return err
	}
	if t[2].kind != tEquals {
		return fmt.Errorf("syntax error near %q: '=' expected", t[2].text)
	}
	vals, err := p.rvalues(t[3:])
	if err != nil {
		return err
	}
	if len(vals) == 1 {
		if key < NRKeys {
			p.constant[key] = true
			for j := 0; j < p.total; j++ {
				if p.maps[j] != nil {
					p.maps[j][key] = -1
				}
			}
		}
	}
	if p.keymapsLine {
		i := 0
		for j := 0; j < p.total; j++ {
			if p.maps[j] == nil {
				continue
			}
			if len(vals) != 1 || i == 0 {
				v := Hole
				if i < len(vals) {
					v = vals[i]
				}
				if err := p.addKey(j, key, v); err != nil {
					return err
				}
			}
			i++
		}
		if i < len(vals) {
			return fmt.Errorf("too many (%d) entries on one line", len(vals))
		}
		return nil
	}
	for i, v := range vals {
		if err := p.addKey(i, key, v); err != nil {
			return err
		}
	}
	return nil
}

// modifierLine is "[plain | MODIFIERS] keycode N = A".
func (p *parser) modifierLine(t []token) error {
	mod := 0
	i := 0
	if t[0].kind == tPlain {
		i = 1
	} else {
		for i < len(t) && t[i].kind == tModifier {
			mod |= t[i].num
			i++
		}
	}
	rest := t[i:]
	if len(rest) < 4 || rest[0].kind != tKeycode || rest[2].kind != tEquals {
		return fmt.Errorf("syntax error near %q", t[0].text)
	}
	key, err := keycodeOf(rest[1])
	if err != nil {
		return err
	}
	vals, err := p.rvalues(rest[3:])
	if err != nil {
		return err
	}
	if len(vals) != 1 {
		return fmt.Errorf("one action after '=' on a line with modifiers, not %d", len(vals))
	}
	return p.addKey(mod, key, vals[0])
}

// compose is "compose A B to C": A and B are 'x' characters or U+XXXX, C a character or
// any keysym.
func (p *parser) compose(t []token) error {
	sym := func(t token) (int, error) {
		switch t.kind {
		case tChar:
			return t.num, nil
		case tUnicode:
			return t.num ^ 0xf000, nil
		}
		return 0, fmt.Errorf("syntax error near %q: a 'c' character or U+XXXX", t.text)
	}
	a, err := sym(t[1])
	if err != nil {
		return err
	}
	b, err := sym(t[2])
	if err != nil {
		return err
	}
	if t[3].kind != tTo {
		return fmt.Errorf("syntax error near %q: 'to' expected", t[3].text)
	}
	var c int
	if len(t) == 5 && t[4].kind == tChar {
		c = t[4].num
	} else {
		vals, err := p.rvalues(t[4:])
		if err != nil {
			return err
		}
		if len(vals) != 1 {
			return errors.New("one result after 'to'")
		}
		c = vals[0]
	}
	return p.appendCompose(a, b, c)
}

// appendCompose is lk_append_compose: the three keysyms in Unicode.
func (p *parser) appendCompose(a, b, c int) error {
	var out [3]uint32
	for i, v := range []int{a, b, c} {
		u, ok := p.convert(v, toUnicode)
		if !ok {
			return fmt.Errorf("cannot convert compose character %#x", v)
		}
		out[i] = uint32(u)
	}
	p.diacrs = append(p.diacrs, Diacr{Diacr: out[0], Base: out[1], Result: out[2]})
	return nil
}

// composeAsUsual adds loadkeys' built-in Latin-1 compose table (kbd's compose_as_usual):
// accent and letter give the accented letter, as on a VT100.
func (p *parser) composeAsUsual() error {
	for _, c := range usualCompose {
		if err := p.appendCompose(int(c[0]), int(c[1]), int(c[2])); err != nil {
			return err
		}
	}
	return nil
}

// usualCompose is the Latin-1 compose table of `compose as usual` (diacritic, base,
// result in ISO 8859-1).
var usualCompose = [][3]byte{
	{'`', 'A', 0300}, {'`', 'a', 0340}, {'\'', 'A', 0301}, {'\'', 'a', 0341},
	{'^', 'A', 0302}, {'^', 'a', 0342}, {'~', 'A', 0303}, {'~', 'a', 0343},
	{'"', 'A', 0304}, {'"', 'a', 0344}, {'O', 'A', 0305}, {'o', 'a', 0345},
	{'0', 'A', 0305}, {'0', 'a', 0345}, {'A', 'A', 0305}, {'a', 'a', 0345},
	{'A', 'E', 0306}, {'a', 'e', 0346}, {',', 'C', 0307}, {',', 'c', 0347},
	{'`', 'E', 0310}, {'`', 'e', 0350}, {'\'', 'E', 0311}, {'\'', 'e', 0351},
	{'^', 'E', 0312}, {'^', 'e', 0352}, {'"', 'E', 0313}, {'"', 'e', 0353},
	{'`', 'I', 0314}, {'`', 'i', 0354}, {'\'', 'I', 0315}, {'\'', 'i', 0355},
	{'^', 'I', 0316}, {'^', 'i', 0356}, {'"', 'I', 0317}, {'"', 'i', 0357},
	{'-', 'D', 0320}, {'-', 'd', 0360}, {'~', 'N', 0321}, {'~', 'n', 0361},
	{'`', 'O', 0322}, {'`', 'o', 0362}, {'\'', 'O', 0323}, {'\'', 'o', 0363},
	{'^', 'O', 0324}, {'^', 'o', 0364}, {'~', 'O', 0325}, {'~', 'o', 0365},
	{'"', 'O', 0326}, {'"', 'o', 0366}, {'/', 'O', 0330}, {'/', 'o', 0370},
	{'`', 'U', 0331}, {'`', 'u', 0371}, {'\'', 'U', 0332}, {'\'', 'u', 0372},
	{'^', 'U', 0333}, {'^', 'u', 0373}, {'"', 'U', 0334}, {'"', 'u', 0374},
	{'\'', 'Y', 0335}, {'\'', 'y', 0375}, {'T', 'H', 0336}, {'t', 'h', 0376},
	{'s', 's', 0337}, {'"', 'y', 0377}, {'s', 'z', 0337}, {'i', 'j', 0377},
}

// usualStrings are the function key strings of `strings as usual`: F1-F20 and the
// editing keys (Find … Next), VT100-style.
var usualStrings = []string{
	"\033[[A", "\033[[B", "\033[[C", "\033[[D", "\033[[E",
	"\033[17~", "\033[18~", "\033[19~", "\033[20~", "\033[21~",
	"\033[23~", "\033[24~", "\033[25~", "\033[26~",
	"\033[28~", "\033[29~",
	"\033[31~", "\033[32~", "\033[33~", "\033[34~",
	"\033[1~", "\033[2~", "\033[3~", "\033[4~", "\033[5~",
	"\033[6~",
}

func (p *parser) stringsAsUsual() error {
	for i, s := range usualStrings {
		p.funcs[i] = s
	}
	return nil
}

// compile spreads the constant keys (lk_add_constants) and returns what loadkeys loads.
func (p *parser) compile(name string) (*Keymap, error) {
	r0 := 0
	if p.keymapsLine {
		for r0 < p.total && p.maps[r0] == nil {
			r0++
		}
	}
	keys := make([]int, 0, len(p.constant))
	for key := range p.constant {
		keys = append(keys, key)
	}
	sort.Ints(keys)
	for _, key := range keys {
		if r0 >= p.total || p.maps[r0] == nil {
			return nil, &Error{File: name, Msg: "no keymap holds the constant keys"}
		}
		if err := p.constantKey(key, p.getKey(r0, key)); err != nil {
			return nil, &Error{File: name, Msg: err.Error()}
		}
	}
	km := &Keymap{Name: name, Deallocate: p.keymapsLine}
	for t := 0; t < MaxTables && t < p.total; t++ {
		m := p.maps[t]
		if m == nil {
			continue
		}
		km.Tables = append(km.Tables, uint8(t))
		for key, v := range m {
			if v >= 0 {
				km.Entries = append(km.Entries, Entry{Table: uint8(t), Key: uint8(key), Value: uint16(v)})
			}
		}
	}
	if len(p.diacrs) > MaxDiacr {
		return nil, &Error{File: name, Msg: fmt.Sprintf("too many compose definitions (%d, at most %d)", len(p.diacrs), MaxDiacr)}
	}
	km.Diacrs = p.diacrs
	for i := 0; i < MaxFuncs; i++ {
		if s, ok := p.funcs[i]; ok {
			km.Funcs = append(km.Funcs, Func{Index: uint8(i), String: s})
		}
	}
	return km, nil
}

// constantKey is do_constant_key: a letter gets lower and upper case in the plain and
// shift tables, its control code with Control, Meta versions with Alt; any other key its
// one action in every table that has none.
func (p *parser) constantKey(key, val int) error {
	typ, v := ktyp(val), kval(val)
	if (typ == ktLatin || typ == ktLetter) && (v >= 'a' && v <= 'z' || v >= 'A' && v <= 'Z') {
		var defs [16]int
		defs[0] = k(ktLetter, v)
		defs[1] = k(ktLetter, v^32)
		defs[2], defs[3] = defs[0], defs[1]
		for j := 4; j < 8; j++ {
			defs[j] = k(ktLatin, v&^96)
		}
		for j := 8; j < 16; j++ {
			defs[j] = k(ktMeta, kval(defs[j-8]))
		}
		for j := 0; j < p.total; j++ {
			if p.maps[j] == nil || j > 0 && p.keyExists(j, key) {
				continue
			}
			if err := p.addKey(j, key, defs[j%16]); err != nil {
				return err
			}
		}
		return nil
	}
	for j := 1; j < p.total; j++ {
		if p.maps[j] == nil || p.keyExists(j, key) {
			continue
		}
		if err := p.addKey(j, key, val); err != nil {
			return err
		}
	}
	return nil
}

// parseNumber reads NUMBER as strtol with base 0 does: 0x hex, 0 octal, else decimal.
func parseNumber(s string) (int, error) {
	v, err := strconv.ParseInt(s, 0, 32)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad number %q", s)
	}
	return int(v), nil
}
