package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// ClientModules is a client's module list for the autodetect hook: the modules a client
// machine has loaded, captured on it (`lsmod > client.modules` or
// `cp /proc/modules client.modules`). mkinitcpio's autodetect scans the machine it runs on;
// a netboot image is built on a server for other machines, so nbdroot keeps only the
// drivers of the machine the list was taken on, and without a list leaves nothing out.
type ClientModules struct {
	// Source names where the list came from, for the summary.
	Source string
	// Names are the module names, with underscores, sorted.
	Names []string

	set map[string]bool
}

// Has reports whether the client has module name loaded ('-' and '_' are the same).
func (c *ClientModules) Has(name string) bool { return c.set[depmod.Normalize(name)] }

// maxModuleListLine bounds one line of a module list: /proc/modules lines name a module's
// users, which stays far below this.
const maxModuleListLine = 64 << 10

// ReadClientModules reads a module list in any of the forms a client gives: /proc/modules
// ("ext4 1015808 1 - Live 0x0000000000000000"), lsmod's output (a "Module Size Used by"
// header, then "ext4 1015808 1"), or one module name per line. Blank lines and '#'
// comments are skipped; the first word of every other line is a module name, which must
// look like one (letters, digits, '_' and '-').
func ReadClientModules(r io.Reader, source string) (*ClientModules, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxModuleListLine)
	c := &ClientModules{Source: source, set: map[string]bool{}}
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		name := fields[0]
		if line == 1 && name == "Module" && len(fields) >= 2 && fields[1] == "Size" {
			continue // lsmod's header
		}
		if !moduleName(name) {
			return nil, fmt.Errorf("%s line %d: %q is not a module name (expected /proc/modules, lsmod output or one name per line)", source, line, name)
		}
		c.set[depmod.Normalize(name)] = true
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", source, err)
	}
	if len(c.set) == 0 {
		return nil, fmt.Errorf("%s: no module names: capture the list on the client with `lsmod` or from /proc/modules", source)
	}
	for n := range c.set {
		c.Names = append(c.Names, n)
	}
	sort.Strings(c.Names)
	return c, nil
}

// moduleName reports whether s can be a kernel module name (MODULE_NAME_LEN is 56).
func moduleName(s string) bool {
	if s == "" || len(s) > 55 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// LoadClientModules reads the module list file at path (ReadClientModules).
func LoadClientModules(path string) (*ClientModules, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--autodetect-from: %w", err)
	}
	defer f.Close()
	return ReadClientModules(f, path)
}

// inDirs lists the client's modules whose files lie under one of dirs of the modules
// directory d (catalog.Spec.AutodetectDirs).
func (c *ClientModules) inDirs(d *depmod.Dir, dirs []string) []string {
	var out []string
	for _, n := range c.Names {
		f, ok := d.File(n)
		if !ok {
			continue
		}
		for _, dir := range dirs {
			if strings.HasPrefix(f, dir) {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// missingFrom counts the client's modules the kernel of d has neither as a file nor built in:
// a list taken on another kernel version, or on a machine with out-of-tree modules.
func (c *ClientModules) missingFrom(d *depmod.Dir) int {
	n := 0
	for _, m := range c.Names {
		if _, ok := d.File(m); !ok && !d.Builtin(m) {
			n++
		}
	}
	return n
}
