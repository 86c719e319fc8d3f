package depmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nbdroot/nbdroot/kmod"
)

// The text indexes depmod(8) writes into /lib/modules/VER (kmod's tools/depmod.c). A
// distribution's kernel package does not ship them (its postinst runs depmod), but every
// installed kernel and every chroot built by a package manager has them. They let a build
// answer "which modules does this alias name" without decompressing all ~4000 modules of
// a distribution kernel to read their .modinfo.
const (
	// modulesDep lists every module depmod indexed with its dependencies:
	// "kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz …".
	modulesDep = "modules.dep"
	// modulesAlias lists every alias= of those modules: "alias fs-ext4 ext4".
	modulesAlias = "modules.alias"
	// modulesSoftdep lists their softdep= strings: "softdep ext4 pre: crypto-crc32c".
	modulesSoftdep = "modules.softdep"
)

// depIndex is what depmod wrote into a modules directory.
type depIndex struct {
	// at is when depmod ran: the older of modules.dep's and modules.alias's mtimes. A
	// module file changed after it is not covered (depmod -A's test, kmod depmod.c).
	at time.Time
	// paths maps every module depmod indexed to its file, relative to the directory.
	paths map[string]string
	// deps maps a module to its dependencies' names (modules.dep's list is the whole
	// closure of depends=, in load order from last to first).
	deps map[string][]string
	// aliases are modules.alias's entries, patterns normalised with kmod.NormalizeAlias.
	aliases []kmod.Alias
	// softdeps maps a module to the names and aliases of its soft dependencies, pre:
	// and post: (modules.softdep; empty when the file is absent, as before kmod 21).
	softdeps map[string][]string
}

// readDepIndex reads depmod's indexes of the modules directory dir. It returns nil
// without an error when modules.dep or modules.alias is missing (an unpacked kernel
// package): the caller then reads every module's .modinfo instead. A malformed index is
// an error naming the file and line — rerunning depmod fixes it — rather than a silent
// fall back that would hide why the build is slow.
func readDepIndex(dir string) (*depIndex, error) {
	ix := &depIndex{softdeps: map[string][]string{}}
	for _, f := range []struct {
		name     string
		optional bool
		parse    func(io.Reader) error
	}{
		{modulesDep, false, func(r io.Reader) (err error) { ix.paths, ix.deps, err = parseModulesDep(r); return err }},
		{modulesAlias, false, func(r io.Reader) (err error) { ix.aliases, err = parseModulesAlias(r); return err }},
		{modulesSoftdep, true, func(r io.Reader) (err error) { ix.softdeps, err = parseModulesSoftdep(r); return err }},
	} {
		file, err := os.Open(filepath.Join(dir, f.name))
		if errors.Is(err, fs.ErrNotExist) {
			if f.optional {
				continue
			}
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		st, err := file.Stat()
		if err == nil {
			if !f.optional && (ix.at.IsZero() || st.ModTime().Before(ix.at)) {
				ix.at = st.ModTime()
			}
			err = f.parse(file)
		}
		file.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w (regenerate it with depmod)", filepath.Join(dir, f.name), err)
		}
	}
	return ix, nil
}

// IndexLineError is a line of a depmod index that does not parse.
type IndexLineError struct {
	// Line is the 1-based line number.
	Line int
	// Text is the line, shortened.
	Text string
	// Want says what the line should look like.
	Want string
}

func (e *IndexLineError) Error() string {
	return fmt.Sprintf("line %d %q: want %s", e.Line, e.Text, e.Want)
}

// eachLine calls fn with every line of r that is neither blank nor a comment (depmod
// starts its files with a "# … extracted from modules themselves." line).
func eachLine(r io.Reader, fn func(n int, line string) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if err := fn(n, line); err != nil {
			return err
		}
	}
	return sc.Err()
}

// parseModulesDep parses modules.dep: "FILE: DEPFILE DEPFILE…" per module, paths relative
// to the modules directory (or absolute, for modules depmod found outside it).
func parseModulesDep(r io.Reader) (paths map[string]string, deps map[string][]string, err error) {
	paths, deps = map[string]string{}, map[string][]string{}
	const want = `"MODULE.ko[.xz|.zst|.gz]: DEPENDENCY…"`
	err = eachLine(r, func(n int, line string) error {
		file, rest, ok := strings.Cut(line, ":")
		name, isMod := ModuleFileName(file)
		if !ok || !isMod {
			return &IndexLineError{Line: n, Text: truncate(line, 60), Want: want}
		}
		var ds []string
		for _, f := range strings.Fields(rest) {
			d, ok := ModuleFileName(f)
			if !ok {
				return &IndexLineError{Line: n, Text: truncate(line, 60), Want: want}
			}
			ds = append(ds, d)
		}
		paths[name] = file
		deps[name] = ds
		return nil
	})
	return paths, deps, err
}

// parseModulesAlias parses modules.alias: "alias PATTERN MODULE" per line.
func parseModulesAlias(r io.Reader) ([]kmod.Alias, error) {
	var out []kmod.Alias
	err := eachLine(r, func(n int, line string) error {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "alias" {
			return &IndexLineError{Line: n, Text: truncate(line, 60), Want: `"alias PATTERN MODULE"`}
		}
		out = append(out, kmod.Alias{Pattern: kmod.NormalizeAlias(f[1]), Module: Normalize(f[2])})
		return nil
	})
	return out, err
}

// parseModulesSoftdep parses modules.softdep: "softdep MODULE pre: A B post: C" per line
// (modprobe.d(5) syntax), into every soft dependency of each module, pre: and post:.
func parseModulesSoftdep(r io.Reader) (map[string][]string, error) {
	out := map[string][]string{}
	err := eachLine(r, func(n int, line string) error {
		f := strings.Fields(line)
		if len(f) < 2 || f[0] != "softdep" {
			return &IndexLineError{Line: n, Text: truncate(line, 60), Want: `"softdep MODULE pre: … post: …"`}
		}
		pre, post := parseSoftdep(strings.Join(f[2:], " "))
		m := Normalize(f[1])
		out[m] = append(append(out[m], pre...), post...)
		return nil
	})
	return out, err
}
