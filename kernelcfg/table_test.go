package kernelcfg

import (
	"slices"
	"strings"
	"testing"
)

// TestTableWellFormed checks what the code relies on: each requirement is either options or a
// version, names its hook, says what it is for, and restricts itself to a known compression.
func TestTableWellFormed(t *testing.T) {
	var compressions []string
	for _, c := range Compressions {
		compressions = append(compressions, c.Name)
	}
	for _, h := range Hooks() {
		for _, req := range h.Requirements {
			if req.Hook != h.Name {
				t.Errorf("%s: a requirement names hook %q", h.Name, req.Hook)
			}
			if (len(req.AnyOf) == 0) == (req.MinVersion == "") {
				t.Errorf("%s: %q: want options or a version, not both or neither", h.Name, req.NeededFor)
			}
			if req.NeededFor == "" {
				t.Errorf("%s: %v: no NeededFor", h.Name, req.AnyOf)
			}
			if req.Compression != "" && !slices.Contains(compressions, req.Compression) {
				t.Errorf("%s: unknown compression %q", h.Name, req.Compression)
			}
			if _, _, ok := majorMinor(req.MinVersion); req.MinVersion != "" && !ok {
				t.Errorf("%s: bad version %q", h.Name, req.MinVersion)
			}
		}
	}
	for _, c := range Compressions {
		if c.Option == "" {
			continue
		}
		base := Hooks()[0]
		found := false
		for _, req := range base.Requirements {
			found = found || (req.Compression == c.Name && len(req.AnyOf) == 1 && req.AnyOf[0].Name == c.Option)
		}
		if !found {
			t.Errorf("base has no requirement of %s for %s images", c.Option, c.Name)
		}
	}
}

// TestDocsNameEveryOption keeps docs/kernelcfg.md's table of requirements complete.
func TestDocsNameEveryOption(t *testing.T) {
	doc := readFile(t, "../docs/kernelcfg.md")
	for _, h := range Hooks() {
		for _, req := range h.Requirements {
			for _, o := range req.AnyOf {
				if !strings.Contains(doc, o.Name) || (o.Module != "" && !strings.Contains(doc, "("+o.Module+")")) {
					t.Errorf("docs/kernelcfg.md does not name %s (%s) of hook %s", o.Name, o.Module, h.Name)
				}
			}
			if req.MinVersion != "" && !strings.Contains(doc, "kernel ≥ "+req.MinVersion) {
				t.Errorf("docs/kernelcfg.md does not name kernel ≥ %s of hook %s", req.MinVersion, h.Name)
			}
		}
	}
}
