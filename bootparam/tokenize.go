package bootparam

// Param is one word of the kernel command line, split the way the kernel splits it.
type Param struct {
	// Name is the part before the first '=' (the whole word when there is none).
	Name string
	// Value is the part after the first '=', with the kernel's quote handling applied.
	Value string
	// HasValue tells `rw` (no '=') from `rw=` (an empty value).
	HasValue bool
}

// String returns the parameter as it would be written on a command line (without
// re-quoting), for messages and Plan.Sources.
func (p Param) String() string {
	if !p.HasValue {
		return p.Name
	}
	return p.Name + "=" + p.Value
}

// isSpace is the kernel's isspace() restricted to ASCII: space, \t, \n, \v, \f, \r.
//
// The kernel's ctype table also classifies byte 0xA0 as space, which would split a UTF-8
// character such as "à" (C3 A0) in two. Nothing in any dialect relies on that, so we keep
// multi-byte characters whole.
func isSpace(c byte) bool {
	return c == ' ' || (c >= '\t' && c <= '\r')
}

// Tokenize splits a kernel command line into parameters exactly like the kernel's
// next_arg() (lib/cmdline.c) and parse_args() (kernel/params.c):
//
//   - words are separated by whitespace outside double quotes; a '"' anywhere toggles
//     quoting, so `a="b c"` and `"a=b c"` are one word each;
//   - the name is everything before the first '='; a value that starts with '"' loses that
//     quote and the word's closing quote; a word that starts with '"' loses its opening and
//     closing quote; other quotes stay;
//   - a bare `--` ends the kernel's parameters: the rest is returned in initArgs, split the
//     same way, because it belongs to the init (it is passed to /sbin/init as arguments).
//
// Repeated parameters are all kept in order (several ip=); later stages decide whether the
// last one wins. Tokenize never fails: every byte sequence splits into some words.
func Tokenize(cmdline string) (params []Param, initArgs []string) {
	s := skipSpaces(cmdline, 0)
	for s < len(cmdline) {
		p, next := nextArg(cmdline, s)
		s = skipSpaces(cmdline, next)
		if !p.HasValue && p.Name == "--" {
			for s < len(cmdline) {
				a, next := nextArg(cmdline, s)
				initArgs = append(initArgs, a.String())
				s = skipSpaces(cmdline, next)
			}
			break
		}
		params = append(params, p)
	}
	return params, initArgs
}

func skipSpaces(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// nextArg mirrors next_arg(): it reads one word starting at s[start] (not a space) and
// returns it and the index just past its terminating space (or len(s)).
func nextArg(s string, start int) (Param, int) {
	args := s[start:]
	inQuote, quoted := false, false
	if args[0] == '"' {
		args = args[1:]
		inQuote, quoted = true, true
	}
	// equals == 0 means "no '=' yet", as in next_arg(): a word starting with '=' therefore
	// has no value unless a later '=' splits it ("=a=b" is name "=a", value "b").
	i, equals := 0, 0
	for ; i < len(args); i++ {
		if isSpace(args[i]) && !inQuote {
			break
		}
		if equals == 0 && args[i] == '=' {
			equals = i
		}
		if args[i] == '"' {
			inQuote = !inQuote
		}
	}
	word := args[:i]
	// The word's closing quote is dropped when the word or its value was opened by a quote
	// (next_arg writes a NUL over args[i-1] in both cases).
	var p Param
	if equals == 0 {
		p.Name = word
	} else {
		p.Name, p.Value, p.HasValue = word[:equals], word[equals+1:], true
		if len(p.Value) > 0 && p.Value[0] == '"' {
			p.Value = p.Value[1:]
			if len(p.Value) > 0 && p.Value[len(p.Value)-1] == '"' {
				p.Value = p.Value[:len(p.Value)-1]
			}
			// Already stripped: the word-level rule below must not strip a second quote.
			quoted = false
		}
	}
	if quoted && len(word) > 0 && word[len(word)-1] == '"' {
		// A word with a value ends inside the value (it cannot end with its '='
		// and be a quote at the same time), so the quote is the value's last byte.
		if p.HasValue {
			p.Value = p.Value[:len(p.Value)-1]
		} else {
			p.Name = p.Name[:len(p.Name)-1]
		}
	}
	next := start + len(s[start:]) - len(args) + i
	if next < len(s) {
		next++ // skip the terminating space
	}
	return p, next
}
