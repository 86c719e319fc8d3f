package manpage

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

func TestLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"--root DIR", `\-\-root DIR`},
		{`C:\path`, `C:\epath`},
		{".TH not a request", `\&.TH not a request`},
		{"'quote first", `\&'quote first`},
		{"port 0 → a free port…", `port 0 \[u2192] a free port\[u2026]`},
		{"", ".sp"},
	} {
		if got := line(tc.in); got != tc.want {
			t.Errorf("line(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := quote(`say "hi"`); got != `"say ""hi"""` {
		t.Errorf("quote = %s", got)
	}
}

// TestPageRenders: groff reads a page with every kind of section without a warning, and
// the text comes out as written.
func TestPageRenders(t *testing.T) {
	p := &Page{Name: "tool", Section: 8, Source: "tool 1.0", Manual: "System Administration", Summary: "does things",
		Sections: []Section{
			{Title: "DESCRIPTION", Paragraphs: []string{"A paragraph\nover lines.", "Another."}},
			{Title: "COMMANDS", Items: []Item{{"run", "runs"}, {"stop", "stops -- now"}}},
			{Title: "tool run", Text: "usage: tool run [--fast]\n\n.starts with a dot\n  -fast\n    \tgo fast → faster\n"},
			{Title: "tool run more", Sub: true, Text: "more"},
		}}
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `.TH "TOOL" 8 "" "tool 1.0" "System Administration"`) {
		t.Errorf("no .TH line:\n%s", b.String())
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("no groff to render with")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww")
	cmd.Env = []string{"LC_ALL=C"}
	cmd.Stdin = &b
	var out, errs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil || errs.Len() > 0 {
		t.Fatalf("groff: %v\n%s", err, errs.String())
	}
	text := stripOverstrike(out.String())
	for _, want := range []string{"usage: tool run [--fast]", ".starts with a dot", "go fast → faster", "stops -- now", "A paragraph over lines."} {
		if !strings.Contains(text, want) {
			t.Errorf("rendered page lacks %q:\n%s", want, text)
		}
	}
}

// stripOverstrike removes grotty's bold and underline (c\bc, _\bc).
func stripOverstrike(s string) string {
	r := []rune(s)
	var out []rune
	for i := 0; i < len(r); i++ {
		if i+2 < len(r) && r[i+1] == '\b' {
			continue
		}
		if r[i] == '\b' {
			continue
		}
		out = append(out, r[i])
	}
	return string(out)
}
