package keymap

import (
	"fmt"
	"strconv"
	"strings"
)

// tokKind is a token of kbd's keymap lexer (analyze.l).
type tokKind int

const (
	tNumber tokKind = iota
	tUnicode
	tLiteral    // a keysym name after '=', 'string' or 'to' (num: its action)
	tChar       // 'c', '\c', '\ooo'
	tStrLiteral // "…" (str)
	tEquals
	tDash
	tComma
	tPlus
	tCharset
	tKeymaps
	tKeycode
	tString
	tPlain
	tModifier // shift, control… (num: its bit)
	tAltIsMeta
	tStrings
	tCompose
	tAs
	tUsual
	tFor
	tOn
	tTo
)

// token is one token, with where it was read.
type token struct {
	kind tokKind
	text string
	num  int
	str  string
	file string
	line int
}

// keywords are the words the lexer knows outside keysyms, in the spellings analyze.l
// accepts (lower case, capitalised, upper case and a few mixed).
var keywords = map[string]tokKind{}

// modifiers are the modifier keywords and their table bits.
var modifiers = map[string]int{
	"shift": modShift, "altgr": modAltGr, "control": modCtrl, "alt": modAlt, "shiftl": modShiftL,
	"shiftr": modShiftR, "ctrll": modCtrlL, "ctrlr": modCtrlR, "capsshift": modCapsShift,
}

func init() {
	for _, kw := range []struct {
		kind  tokKind
		forms string
	}{
		{tCharset, "charset Charset CharSet CHARSET"}, {tKeymaps, "keymaps Keymaps KeyMaps KEYMAPS"},
		{tKeycode, "keycode Keycode KeyCode KEYCODE"}, {tString, "string String STRING"},
		{tPlain, "plain Plain PLAIN"}, {tStrings, "strings Strings STRINGS"},
		{tCompose, "compose Compose COMPOSE"}, {tAs, "as As AS"}, {tUsual, "usual Usual USUAL"},
		{tFor, "for For FOR"}, {tOn, "on On ON"}, {tTo, "to To TO"},
	} {
		for _, f := range strings.Fields(kw.forms) {
			keywords[f] = kw.kind
		}
	}
}

// modifierForms are the spellings of each modifier keyword in analyze.l.
var modifierForms = map[string]string{
	"shift": "shift Shift SHIFT", "control": "control Control CONTROL", "alt": "alt Alt ALT",
	"altgr": "altgr Altgr AltGr ALTGR", "shiftl": "shiftl ShiftL SHIFTL", "shiftr": "shiftr ShiftR SHIFTR",
	"ctrll": "ctrll CtrlL CTRLL", "ctrlr": "ctrlr CtrlR CTRLR", "capsshift": "capsshift Capsshift CapsShift CAPSSHIFT",
}

// source is one file being read.
type source struct {
	name string
	data []byte
	pos  int
	line int
}

// lexer turns the keymap and its includes into tokens, a line at a time.
type lexer struct {
	p      *parser
	stack  []*source
	rvalue bool
	total  int
}

func (l *lexer) push(name string, data []byte) error {
	if len(l.stack) >= maxIncludeDepth {
		return &Error{File: name, Msg: "includes are nested too deeply"}
	}
	l.total += len(data)
	if l.total > maxInputBytes {
		return &Error{File: name, Msg: "keymap too large"}
	}
	l.stack = append(l.stack, &source{name: name, data: data, line: 1})
	return nil
}

// line returns the tokens up to the next end of line (which may come from an included
// file); eof is true when everything has been read.
func (l *lexer) line() (toks []token, eof bool, err error) {
	for {
		if len(l.stack) == 0 {
			return toks, true, nil
		}
		s := l.stack[len(l.stack)-1]
		if s.pos >= len(s.data) {
			l.stack = l.stack[:len(l.stack)-1]
			continue
		}
		errf := func(format string, a ...any) ([]token, bool, error) {
			return nil, false, &Error{File: s.name, Line: s.line, Msg: fmt.Sprintf(format, a...)}
		}
		d := s.data[s.pos:]
		c := d[0]
		tok := token{file: s.name, line: s.line}
		switch {
		case strings.HasPrefix(string(d[:min(len(d), 7)]), "include"):
			s.pos += 7
			for s.pos < len(s.data) && (s.data[s.pos] == ' ' || s.data[s.pos] == '\t') {
				s.pos++
			}
			rest := s.data[s.pos:]
			end := -1
			if len(rest) > 0 && rest[0] == '"' {
				for i := 1; i < len(rest) && rest[i] != '\n'; i++ {
					if rest[i] == '"' {
						end = i
						break
					}
				}
			}
			if end <= 1 {
				return errf("expected filename between quotes")
			}
			name := string(rest[1:end])
			s.pos += end + 1
			l.rvalue = false
			if l.p.opts.Resolve == nil {
				return errf("include %q: includes are not resolved here", name)
			}
			path, data, err := l.p.opts.Resolve(name, s.name)
			if err != nil {
				return errf("cannot open include file %s: %v", name, err)
			}
			if err := l.push(path, data); err != nil {
				return nil, false, err
			}
			continue
		case c == '\\' && len(d) > 1 && d[1] == '\n':
			s.pos += 2
			s.line++
			continue
		case c == '\n':
			s.pos++
			s.line++
			l.rvalue = false
			return toks, false, nil
		case c == ' ' || c == '\t' || c == '\r':
			s.pos++
			continue
		case c == '#' || c == '!':
			for s.pos < len(s.data) && s.data[s.pos] != '\n' {
				s.pos++
			}
			continue
		case c == '=':
			s.pos++
			l.rvalue = true
			tok.kind, tok.text = tEquals, "="
		case c == '-':
			s.pos++
			tok.kind, tok.text = tDash, "-"
		case c == ',':
			s.pos++
			tok.kind, tok.text = tComma, ","
		case c == '+':
			s.pos++
			tok.kind, tok.text = tPlus, "+"
		case c == 'U' && len(d) > 2 && d[1] == '+' && isHex(d[2]):
			n := 2
			for n < len(d) && isHex(d[n]) && n < 8 {
				n++
			}
			if n-2 < 4 {
				return errf("bad Unicode keysym %q", d[:n])
			}
			v, _ := strconv.ParseUint(string(d[2:n]), 16, 32)
			if v >= 0xf000 {
				return errf("unicode keysym out of range: %s", d[:n])
			}
			s.pos += n
			tok.kind, tok.text, tok.num = tUnicode, string(d[:n]), int(v)
		case c >= '0' && c <= '9':
			n := 1
			if c == '0' && len(d) > 2 && (d[1] == 'x' || d[1] == 'X') && isHex(d[2]) {
				n = 2
				for n < len(d) && isHex(d[n]) {
					n++
				}
			} else if c == '0' {
				for n < len(d) && d[n] >= '0' && d[n] <= '7' {
					n++
				}
			} else {
				for n < len(d) && d[n] >= '0' && d[n] <= '9' {
					n++
				}
			}
			v, err := parseNumber(string(d[:n]))
			if err != nil {
				return errf("%v", err)
			}
			s.pos += n
			tok.kind, tok.text, tok.num = tNumber, string(d[:n]), v
		case c == '\'':
			n, v, ok := charLiteral(d)
			if !ok {
				return errf("bad character literal %q", d[:min(len(d), 6)])
			}
			s.pos += n
			tok.kind, tok.text, tok.num = tChar, string(d[:n]), v
		case c == '"':
			n, str, err := stringLiteral(d)
			if err != nil {
				return errf("%v", err)
			}
			s.pos += n
			tok.kind, tok.text, tok.str = tStrLiteral, string(d[:n]), str
			l.rvalue = false
		case isAlpha(c):
			n := 1
			for n < len(d) && (isAlpha(d[n]) || d[n] >= '0' && d[n] <= '9' || d[n] == '_') {
				n++
			}
			word := string(d[:n])
			if am := altIsMeta(d); am > 0 && am >= n {
				s.pos += am
				tok.kind, tok.text = tAltIsMeta, string(d[:am])
				break
			}
			s.pos += n
			tok.text = word
			kw, isKW := keywords[word]
			switch {
			case isKW && (kw == tString || kw == tTo):
				tok.kind = kw
				l.rvalue = true
			case l.rvalue:
				v, ok := l.p.symToCode(word, toAuto)
				if !ok {
					return errf("unknown keysym '%s'", word)
				}
				tok.kind, tok.num = tLiteral, v
			case isKW:
				tok.kind = kw
			default:
				mod := ""
				for m, forms := range modifierForms {
					for _, f := range strings.Fields(forms) {
						if f == word {
							mod = m
						}
					}
				}
				if mod == "" {
					return errf("syntax error near %q", word)
				}
				tok.kind, tok.num = tModifier, modifiers[mod]
			}
		default:
			return errf("syntax error near %q", string(d[:1]))
		}
		toks = append(toks, tok)
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// altIsMeta matches [aA][lL][tT][-_][iI][sS][-_][mM][eE][tT][aA] at the start of d.
func altIsMeta(d []byte) int {
	const want = "alt_is_meta"
	if len(d) < len(want) {
		return 0
	}
	for i := 0; i < len(want); i++ {
		c := d[i]
		if want[i] == '_' {
			if c != '_' && c != '-' {
				return 0
			}
			continue
		}
		if c|0x20 != want[i] {
			return 0
		}
	}
	return len(want)
}

// charLiteral reads 'c', '\c' or '\ooo' (one to three octal digits).
func charLiteral(d []byte) (n, v int, ok bool) {
	if len(d) >= 3 && d[1] == '\\' {
		i := 2
		for i < len(d) && i < 5 && d[i] >= '0' && d[i] <= '7' {
			i++
		}
		if i > 2 && i < len(d) && d[i] == '\'' {
			o, _ := strconv.ParseUint(string(d[2:i]), 8, 16)
			return i + 1, int(o), true
		}
		if len(d) >= 4 && d[3] == '\'' {
			return 4, int(d[2]), true
		}
		return 0, 0, false
	}
	if len(d) >= 3 && d[2] == '\'' && d[1] != '\n' {
		return 3, int(d[1]), true
	}
	return 0, 0, false
}

// stringLiteral reads "…" with the escapes \ooo, \", \\ and \n; at most MaxFuncLen-1 bytes.
func stringLiteral(d []byte) (int, string, error) {
	var b []byte
	for i := 1; i < len(d); i++ {
		c := d[i]
		switch {
		case c == '"':
			return i + 1, string(b), nil
		case c == '\\' && i+1 < len(d):
			i++
			switch e := d[i]; {
			case e >= '0' && e <= '7':
				j := i
				for j < len(d) && j < i+3 && d[j] >= '0' && d[j] <= '7' {
					j++
				}
				o, _ := strconv.ParseUint(string(d[i:j]), 8, 16)
				if o > 255 {
					return 0, "", fmt.Errorf("octal escape \\%s out of range", d[i:j])
				}
				b = append(b, byte(o))
				i = j - 1
			case e == 'n':
				b = append(b, '\n')
			default:
				b = append(b, e)
			}
		default:
			b = append(b, c)
		}
		if len(b) >= MaxFuncLen {
			return 0, "", fmt.Errorf("string too long")
		}
	}
	return 0, "", fmt.Errorf("unterminated string")
}
