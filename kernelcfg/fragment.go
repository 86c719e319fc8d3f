package kernelcfg

import (
	_ "embed"
	"fmt"
	"slices"
	"strings"
)

// fragmentFile is the Kconfig fragment for people who build their own kernel. It is data, not
// generated, so that it can carry comments; TestFragmentMatchesTable keeps it and Hooks() in
// agreement.
//
//go:embed nbdroot.config
var fragmentFile string

// block is one "## HOOK [compression=NAME]" block of the fragment.
type block struct {
	hook, compression string
	lines             []string // the block's lines after its "##" line, comments included
}

// fragmentBlocks splits the fragment into its header (the lines before the first block) and
// its blocks.
func fragmentBlocks() (header []string, blocks []block, err error) {
	for i, line := range strings.Split(strings.TrimRight(fragmentFile, "\n"), "\n") {
		title, ok := strings.CutPrefix(line, "## ")
		if !ok {
			if len(blocks) == 0 {
				header = append(header, line)
			} else {
				blocks[len(blocks)-1].lines = append(blocks[len(blocks)-1].lines, line)
			}
			continue
		}
		f := strings.Fields(title)
		b := block{hook: f[0]}
		if len(f) == 2 {
			b.compression, ok = strings.CutPrefix(f[1], "compression=")
		}
		if len(f) > 2 || !ok || (len(f) == 2 && b.compression == "") {
			return nil, nil, fmt.Errorf("nbdroot.config line %d: want \"## HOOK [compression=NAME]\": %q", i+1, line)
		}
		blocks = append(blocks, b)
	}
	return header, blocks, nil
}

// Fragment returns the Kconfig fragment for the hooks and compression given (nil hooks means
// catalog.Default, "" compression DefaultCompression): the header of nbdroot.config and its
// blocks for those hooks, each CONFIG_ line once.
func Fragment(hooks []string, compression string) (string, error) {
	hooks, compression, err := validate(hooks, compression)
	if err != nil {
		return "", err
	}
	header, blocks, err := fragmentBlocks()
	if err != nil {
		return "", err
	}
	var ordered []string // table order, whatever order hooks came in
	for _, h := range Hooks() {
		if slices.Contains(hooks, h.Name) {
			ordered = append(ordered, h.Name)
		}
	}
	var b strings.Builder
	for _, l := range header {
		b.WriteString(l + "\n")
	}
	fmt.Fprintf(&b, "# hooks: %s; compression: %s\n", strings.Join(ordered, " "), compression)
	seen := map[string]bool{}
	for _, h := range ordered {
		for _, bl := range blocks {
			if bl.hook != h || (bl.compression != "" && bl.compression != compression) {
				continue
			}
			b.WriteString("\n## " + bl.hook)
			if bl.compression != "" {
				b.WriteString(" compression=" + bl.compression)
			}
			b.WriteString("\n")
			for _, l := range bl.lines {
				if strings.HasPrefix(l, "CONFIG_") {
					if seen[l] {
						continue
					}
					seen[l] = true
				}
				if l != "" {
					b.WriteString(l + "\n")
				}
			}
		}
	}
	return b.String(), nil
}
