package kmod

import "strings"

// Match reports whether name matches the module alias pattern as fnmatch(3) with no flags
// does — the matching kmod's modprobe and udev use for modalias lookups: '*' matches any
// run of characters (including '/' and ':'), '?' one character, "[a-z]"/"[!x]"/"[^x]" a
// character class, and a backslash quotes the next character. A malformed class (no ']')
// matches a literal '['. Both sides are expected to be normalised with NormalizeAlias.
func Match(pattern, name string) bool {
	// Iterative matcher with single-star backtracking: on a mismatch after a '*', retry
	// with the star swallowing one more byte. Linear in practice, O(len(p)·len(n)) worst.
	p, n := 0, 0
	starP, starN := -1, 0
	for n < len(name) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starN = p, n
				p++
				continue
			case '?':
				p++
				n++
				continue
			case '[':
				if ok, width, valid := matchClass(pattern[p:], name[n]); valid {
					if ok {
						p += width
						n++
						continue
					}
				} else if name[n] == '[' {
					p++
					n++
					continue
				}
			case '\\':
				if p+1 < len(pattern) {
					if pattern[p+1] == name[n] {
						p += 2
						n++
						continue
					}
				} else if name[n] == '\\' {
					p++
					n++
					continue
				}
			default:
				if c == name[n] {
					p++
					n++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starN++
		p, n = starP+1, starN
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the bracket expression at the start of class. It returns
// whether c matched, the width of the expression, and whether the expression is well formed.
func matchClass(class string, c byte) (matched bool, width int, valid bool) {
	i := 1
	negate := false
	if i < len(class) && (class[i] == '!' || class[i] == '^') {
		negate = true
		i++
	}
	first := true
	for i < len(class) {
		if class[i] == ']' && !first {
			return matched != negate, i + 1, true
		}
		first = false
		lo := class[i]
		if lo == '\\' && i+1 < len(class) {
			i++
			lo = class[i]
		}
		i++
		hi := lo
		if i+1 < len(class) && class[i] == '-' && class[i+1] != ']' {
			hi = class[i+1]
			if hi == '\\' && i+2 < len(class) {
				hi = class[i+2]
				i++
			}
			i += 2
		}
		if lo <= c && c <= hi {
			matched = true
		}
	}
	return false, 0, false
}

// NormalizeAlias returns an alias or a requested name in the form kmod compares them in
// (libkmod alias_normalize): '-' becomes '_' outside bracket expressions, so that
// "crypto-crc32c" and "crypto_crc32c" are the same request, as module names are.
func NormalizeAlias(s string) string {
	if !strings.Contains(s, "-") {
		return s
	}
	b := []byte(s)
	inClass := false
	for i, c := range b {
		switch {
		case inClass:
			if c == ']' {
				inClass = false
			}
		case c == '[':
			inClass = true
		case c == '-':
			b[i] = '_'
		}
	}
	return string(b)
}

// IsPattern reports whether an alias is an fnmatch(3) pattern for Match rather than a
// literal name: the build side files the two apart as the boot side does.
func IsPattern(s string) bool { return hasMeta(s) }

// hasMeta reports whether an alias is a glob pattern rather than a literal name.
func hasMeta(s string) bool {
	return strings.ContainsAny(s, "*?[\\")
}
