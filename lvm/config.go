package lvm

import (
	"fmt"
	"strconv"
	"strings"
)

// LVM2 writes its metadata in the text syntax of its configuration files (libdm's
// libdm-config.c, the same grammar as lvm.conf):
//
//	file    = { item }
//	item    = key "{" { item } "}"          a section
//	        | key "=" value                 an assignment
//	value   = string | number | "[" [ scalar { [","] scalar } [","] ] "]"
//	string  = '"' { char | "\" char } '"'   (or single-quoted, without escapes)
//	number  = [+-] digits [ "." digits ]
//	comment = "#" … end of line
//
// A key is any run of characters other than white space and #{}[]=,"' — in the place of
// a key, "1vg" is a name, not a number, exactly as libdm decides by position.

// maxDepth bounds section nesting: metadata uses four levels (VG, logical_volumes, LV,
// segment); hostile text must not recurse without end.
const maxDepth = 16

type valueKind uint8

const (
	kindString valueKind = iota + 1
	kindInt
	kindFloat
	kindList
)

// String names the kind with its article, for messages: "an integer".
func (k valueKind) String() string {
	return [...]string{"a value", "a string", "an integer", "a number", "a list"}[k]
}

// value is the right-hand side of an assignment.
type value struct {
	kind valueKind
	str  string // kindString; kindFloat keeps its text
	num  int64  // kindInt
	list []value
}

// node is a section or an assignment.
type node struct {
	key     string
	line    int
	section []*node // non-nil for a section (possibly empty)
	isSect  bool
	val     value
}

// SyntaxError is metadata text that does not parse.
type SyntaxError struct {
	Line int
	Msg  string
}

func (e *SyntaxError) Error() string { return fmt.Sprintf("metadata line %d: %s", e.Line, e.Msg) }

type parser struct {
	s    string
	pos  int
	line int
}

// parseConfig parses text into its top-level items.
func parseConfig(text string) ([]*node, error) {
	p := &parser{s: text, line: 1}
	items, err := p.items(0)
	if err != nil {
		return nil, err
	}
	if p.skip(); p.pos < len(p.s) {
		return nil, p.errorf("unexpected %q", p.s[p.pos])
	}
	return items, nil
}

func (p *parser) errorf(format string, args ...any) error {
	return &SyntaxError{Line: p.line, Msg: fmt.Sprintf(format, args...)}
}

// skip moves past white space and comments.
func (p *parser) skip() {
	for p.pos < len(p.s) {
		switch c := p.s[p.pos]; {
		case c == '\n':
			p.line++
			p.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			p.pos++
		case c == '#':
			for p.pos < len(p.s) && p.s[p.pos] != '\n' {
				p.pos++
			}
		default:
			return
		}
	}
}

func isDelim(c byte) bool {
	return strings.IndexByte(" \t\r\n\f\v#{}[]=,\"'", c) >= 0
}

// items parses items until the end of the text or a closing brace (left unconsumed).
func (p *parser) items(depth int) ([]*node, error) {
	if depth > maxDepth {
		return nil, p.errorf("sections nested deeper than %d", maxDepth)
	}
	items := []*node{}
	for {
		p.skip()
		if p.pos >= len(p.s) || p.s[p.pos] == '}' {
			return items, nil
		}
		start := p.pos
		for p.pos < len(p.s) && !isDelim(p.s[p.pos]) {
			p.pos++
		}
		if p.pos == start {
			return nil, p.errorf("want a name, found %q", p.s[p.pos])
		}
		n := &node{key: p.s[start:p.pos], line: p.line}
		p.skip()
		if p.pos >= len(p.s) {
			return nil, p.errorf("%s: want '{' or '=', found the end", n.key)
		}
		switch p.s[p.pos] {
		case '{':
			p.pos++
			sub, err := p.items(depth + 1)
			if err != nil {
				return nil, err
			}
			if p.pos >= len(p.s) {
				return nil, p.errorf("section %s (line %d) not closed", n.key, n.line)
			}
			p.pos++ // '}'
			n.isSect, n.section = true, sub
		case '=':
			p.pos++
			v, err := p.value(true)
			if err != nil {
				return nil, err
			}
			n.val = v
		default:
			return nil, p.errorf("%s: want '{' or '=', found %q", n.key, p.s[p.pos])
		}
		items = append(items, n)
	}
}

// value parses a value; lists are allowed at the top only (lists do not nest).
func (p *parser) value(listOK bool) (value, error) {
	p.skip()
	if p.pos >= len(p.s) {
		return value{}, p.errorf("want a value, found the end")
	}
	switch c := p.s[p.pos]; {
	case c == '"' || c == '\'':
		return p.str(c)
	case c == '[' && listOK:
		p.pos++
		v := value{kind: kindList, list: []value{}}
		for {
			p.skip()
			if p.pos >= len(p.s) {
				return value{}, p.errorf("list not closed")
			}
			if p.s[p.pos] == ']' {
				p.pos++
				return v, nil
			}
			e, err := p.value(false)
			if err != nil {
				return value{}, err
			}
			v.list = append(v.list, e)
			if p.skip(); p.pos < len(p.s) && p.s[p.pos] == ',' {
				p.pos++
			}
		}
	case c == '+' || c == '-' || c == '.' || (c >= '0' && c <= '9'):
		start := p.pos
		for p.pos < len(p.s) && !isDelim(p.s[p.pos]) {
			p.pos++
		}
		tok := p.s[start:p.pos]
		if strings.Contains(tok, ".") {
			if _, err := strconv.ParseFloat(tok, 64); err != nil {
				return value{}, p.errorf("bad number %q", truncate(tok, 32))
			}
			return value{kind: kindFloat, str: tok}, nil
		}
		n, err := strconv.ParseInt(tok, 10, 64)
		if err != nil {
			return value{}, p.errorf("bad integer %q", truncate(tok, 32))
		}
		return value{kind: kindInt, num: n}, nil
	default:
		return value{}, p.errorf("want a value, found %q", c)
	}
}

// str parses a string quoted with q; in double quotes a backslash takes the next byte
// literally (libdm's dm_unescape_double_quotes).
func (p *parser) str(q byte) (value, error) {
	line := p.line
	p.pos++
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == q:
			p.pos++
			return value{kind: kindString, str: b.String()}, nil
		case c == '\\' && q == '"' && p.pos+1 < len(p.s):
			c = p.s[p.pos+1]
			p.pos++
		}
		if c == '\n' {
			p.line++
		}
		b.WriteByte(c)
		p.pos++
	}
	return value{}, &SyntaxError{Line: line, Msg: "string not closed"}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// section is a parsed section's items with typed accessors that record the first error.
type section struct {
	name  string // for messages: "vg0/logical_volumes/root"
	line  int
	items []*node
	err   error
}

func (s *section) fail(line int, format string, args ...any) {
	if s.err == nil {
		s.err = &SyntaxError{Line: line, Msg: s.name + ": " + fmt.Sprintf(format, args...)}
	}
}

// find returns the item key, and fails on a duplicate: metadata LVM writes never repeats a
// key, and a text that does is ambiguous.
func (s *section) find(key string) *node {
	var found *node
	for _, n := range s.items {
		if n.key == key {
			if found != nil {
				s.fail(n.line, "%s given twice", key)
				return nil
			}
			found = n
		}
	}
	return found
}

func (s *section) assignment(key string, kind valueKind, required bool) *value {
	n := s.find(key)
	if n == nil {
		if required {
			s.fail(s.line, "%s missing", key)
		}
		return nil
	}
	if n.isSect || n.val.kind != kind {
		s.fail(n.line, "%s: want %s", key, kind)
		return nil
	}
	return &n.val
}

// str returns the string key ("" when absent and not required).
func (s *section) str(key string, required bool) string {
	if v := s.assignment(key, kindString, required); v != nil {
		return v.str
	}
	return ""
}

// uint returns the non-negative integer key (0 when absent and not required).
func (s *section) uint(key string, required bool) uint64 {
	v := s.assignment(key, kindInt, required)
	if v == nil {
		return 0
	}
	if v.num < 0 {
		s.fail(s.line, "%s: negative", key)
		return 0
	}
	return uint64(v.num)
}

// strings returns the list of strings key (nil when absent).
func (s *section) strings(key string) []string {
	v := s.assignment(key, kindList, false)
	if v == nil {
		return nil
	}
	out := make([]string, 0, len(v.list))
	for _, e := range v.list {
		if e.kind != kindString {
			s.fail(s.line, "%s: want a list of strings", key)
			return nil
		}
		out = append(out, e.str)
	}
	return out
}

// sub returns the subsection key (nil when absent and not required).
func (s *section) sub(key string, required bool) *section {
	n := s.find(key)
	if n == nil {
		if required {
			s.fail(s.line, "section %s missing", key)
		}
		return nil
	}
	if !n.isSect {
		s.fail(n.line, "%s: want a section", key)
		return nil
	}
	return &section{name: s.name + "/" + key, line: n.line, items: n.section}
}

// subsections returns every subsection, in order.
func (s *section) subsections() []*section {
	var out []*section
	for _, n := range s.items {
		if n.isSect {
			out = append(out, &section{name: s.name + "/" + n.key, line: n.line, items: n.section})
		}
	}
	return out
}
