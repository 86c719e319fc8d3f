package initramfs

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nbdroot/nbdroot/kmod"
	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// modprobeDirs are where modprobe.d files live, highest precedence first: a file of one
// name in an earlier directory hides those of the same name in later ones (modprobe.d(5)).
var modprobeDirs = []string{"etc/modprobe.d", "run/modprobe.d", "usr/local/lib/modprobe.d", "usr/lib/modprobe.d", "lib/modprobe.d"}

// ModprobeConf is what modconf takes from modprobe.d: module options and blacklists.
type ModprobeConf struct {
	// Options are each module's parameters, in the order the files give them.
	Options map[string][]string
	// Blacklist are the modules blacklisted.
	Blacklist map[string]bool
	// Ignored counts the commands nbdroot's loader has no use for (install, remove,
	// softdep, alias, weakdep), by command.
	Ignored map[string]int
	// Files are the files read, in order.
	Files []string
}

// maxModprobeLine bounds one (continued) line of a modprobe.d file.
const maxModprobeLine = 64 << 10

// ReadModprobeConf reads the modprobe.d files of the tree root the way kmod does: every
// *.conf of the modprobe.d directories, one per file name (the first directory wins), in
// file name order. An empty root or one without modprobe.d gives an empty config.
func ReadModprobeConf(root string) (*ModprobeConf, error) {
	c := &ModprobeConf{Options: map[string][]string{}, Blacklist: map[string]bool{}, Ignored: map[string]int{}}
	byName := map[string]string{}
	for _, dir := range modprobeDirs {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.conf"))
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			if _, hidden := byName[filepath.Base(f)]; !hidden {
				byName[filepath.Base(f)] = f
			}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		path := byName[n]
		if st, err := os.Stat(path); err != nil || !st.Mode().IsRegular() {
			continue // a symlink to /dev/null masks a file, as in kmod
		}
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("modconf: %w", err)
		}
		err = c.read(f, path)
		f.Close()
		if err != nil {
			return nil, err
		}
		c.Files = append(c.Files, path)
	}
	return c, nil
}

// read parses one modprobe.d file: '#' comments, '\' continuations, commands and their
// words separated by white space.
func (c *ModprobeConf) read(r io.Reader, name string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxModprobeLine)
	var cont strings.Builder
	line := 0
	for sc.Scan() {
		line++
		text := sc.Text()
		if strings.HasSuffix(text, "\\") {
			cont.WriteString(strings.TrimSuffix(text, "\\"))
			cont.WriteByte(' ')
			if cont.Len() > maxModprobeLine {
				return fmt.Errorf("modconf: %s line %d: continued line too long", name, line)
			}
			continue
		}
		cont.WriteString(text)
		full := cont.String()
		cont.Reset()
		if strings.HasPrefix(strings.TrimSpace(full), "#") {
			continue
		}
		f := strings.Fields(full)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "options":
			if len(f) < 3 || !moduleName(f[1]) {
				continue // kmod ignores a malformed line too
			}
			m := depmod.Normalize(f[1])
			c.Options[m] = append(c.Options[m], f[2:]...)
		case "blacklist":
			if len(f) == 2 && moduleName(f[1]) {
				c.Blacklist[depmod.Normalize(f[1])] = true
			}
		default:
			c.Ignored[f[0]]++
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("modconf: %s: %w", name, err)
	}
	return nil
}

// modconf puts the root's modprobe.d options and blacklists for the image's modules into
// the module index, for the modconf hook.
func (img *image) modconf(ix *kmod.Index) error {
	if !img.hooks.Has("modconf") {
		return nil
	}
	if img.opts.Root == "" {
		img.lines["modconf"] = "nothing read: modprobe.d is the client's, in its root (--root)"
		return nil
	}
	c, err := ReadModprobeConf(img.opts.Root)
	if err != nil {
		return err
	}
	var opts, black []string
	for _, m := range ix.Modules {
		if o := c.Options[m.Name]; len(o) > 0 {
			ix.Options = append(ix.Options, kmod.ModuleOptions{Module: m.Name, Params: strings.Join(o, " ")})
			opts = append(opts, m.Name)
		}
		if c.Blacklist[m.Name] {
			ix.Blacklist = append(ix.Blacklist, m.Name)
			black = append(black, m.Name)
		}
	}
	line := fmt.Sprintf("%d files of %s", len(c.Files), filepath.Join(img.opts.Root, "{etc,usr/lib,lib}/modprobe.d"))
	if len(opts) > 0 {
		line += "; options for " + strings.Join(opts, " ")
	}
	if len(black) > 0 {
		line += "; blacklisted " + strings.Join(black, " ")
	}
	if len(opts) == 0 && len(black) == 0 {
		line += "; nothing for the image's modules"
	}
	if len(c.Ignored) > 0 {
		var ign []string
		for cmd, n := range c.Ignored {
			ign = append(ign, fmt.Sprintf("%d %s", n, cmd))
		}
		sort.Strings(ign)
		line += "; ignored (the init's loader has no use for them): " + strings.Join(ign, ", ")
	}
	img.lines["modconf"] = line
	return nil
}
