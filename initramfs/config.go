package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// Config is what the builder reads from a mkinitcpio.conf-style file: the arrays (or
// quoted strings) HOOKS, MODULES, BINARIES and FILES, and COMPRESSION. Unset fields are
// empty.
type Config struct {
	Hooks       []string
	Modules     []string
	Binaries    []string
	Files       []string
	Compression string
}

// ConfigError reports a malformed config line.
type ConfigError struct {
	Line int
	Msg  string
}

func (e *ConfigError) Error() string { return fmt.Sprintf("config line %d: %s", e.Line, e.Msg) }

// ReadConfig parses a mkinitcpio.conf. The file is a bash fragment; only the assignments
// the builder uses are read, in the forms mkinitcpio.conf uses: NAME=(a b c) (which may
// span lines), NAME="a b c", NAME='a b c' and NAME=word. Comments (#) and other lines are
// ignored; a later assignment replaces an earlier one, as when bash sources the file.
func ReadConfig(r io.Reader) (*Config, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	cfg := &Config{}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		name, val, ok := strings.Cut(text, "=")
		if !ok || strings.HasPrefix(text, "#") {
			continue
		}
		var dst *[]string
		switch name {
		case "HOOKS":
			dst = &cfg.Hooks
		case "MODULES":
			dst = &cfg.Modules
		case "BINARIES":
			dst = &cfg.Binaries
		case "FILES":
			dst = &cfg.Files
		case "COMPRESSION":
		default:
			continue
		}
		start := line
		// An array may continue over the following lines until its ')'.
		if strings.HasPrefix(val, "(") {
			for !strings.Contains(stripComment(val), ")") {
				if !sc.Scan() {
					return nil, &ConfigError{start, name + "=( has no closing )"}
				}
				line++
				val += "\n" + sc.Text()
			}
		}
		words, err := splitValue(val)
		if err != nil {
			return nil, &ConfigError{start, name + ": " + err.Error()}
		}
		if dst == nil {
			cfg.Compression = strings.Join(words, " ")
			continue
		}
		*dst = words
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// stripComment removes a # comment from one line of an array (words never contain '#'
// in the fields the builder reads).
func stripComment(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		if i := strings.IndexByte(l, '#'); i >= 0 {
			l = l[:i]
		}
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// splitValue splits the right-hand side of an assignment into words: (a "b" 'c') arrays,
// "a b" and 'a b' strings, or a bare word.
func splitValue(v string) ([]string, error) {
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(v, "("):
		body := stripComment(v[1:])
		end := strings.IndexByte(body, ')')
		if end < 0 {
			return nil, fmt.Errorf("no closing )")
		}
		var words []string
		for _, w := range strings.Fields(body[:end]) {
			words = append(words, strings.Trim(w, `"'`))
		}
		return words, nil
	case strings.HasPrefix(v, `"`) || strings.HasPrefix(v, `'`):
		q := v[:1]
		end := strings.Index(v[1:], q)
		if end < 0 {
			return nil, fmt.Errorf("no closing %s", q)
		}
		return strings.Fields(v[1 : 1+end]), nil
	default:
		if i := strings.IndexByte(v, '#'); i >= 0 {
			v = v[:i]
		}
		return strings.Fields(v), nil
	}
}

// ParseHooks reads a hook list as users write it: "base udev net", or a whole mkinitcpio
// line HOOKS=(base udev net) / HOOKS="base udev net". Commas separate too.
func ParseHooks(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	if rest, ok := strings.CutPrefix(s, "HOOKS="); ok {
		words, err := splitValue(rest)
		if err != nil {
			return nil, fmt.Errorf("hooks %q: %w", s, err)
		}
		s = strings.Join(words, " ")
	}
	words := strings.Fields(strings.ReplaceAll(s, ",", " "))
	if len(words) == 0 {
		return nil, nil
	}
	return words, nil
}
