package kernelcfg

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// stateText is how the table shows a finding's state: failures of required things in capitals.
func (r *Report) stateText(f Finding) string {
	var s string
	switch f.State {
	case BuiltIn:
		s = "built-in"
	case Module:
		s = "module"
		if f.File != "" {
			s += " (" + f.File + ")"
		}
	case ModuleMissing:
		s = "module missing from " + r.ModulesDir
	case Missing:
		s = "missing"
	case Unknown:
		s = "unknown"
	case VersionOK:
		s = "ok (" + r.KernelVersion + ")"
	case TooOld:
		s = "too old (" + r.KernelVersion + ")"
	default:
		s = string(f.State)
	}
	switch {
	case !f.State.Failed():
	case f.Optional:
		s += " (optional)"
	case f.State == Missing || f.State == TooOld:
		s = strings.ToUpper(s)
	}
	return s
}

// tableName shortens a long any-of list so the table stays readable; the summary below the
// table names every alternative.
func tableName(f Finding) string {
	if len(f.Alternatives) > 3 && !f.State.Met() {
		return strings.Join(f.Alternatives[:3], "|") + fmt.Sprintf("|… (%d options)", len(f.Alternatives))
	}
	return f.Name()
}

// WriteTable writes the report for a person: one row per requirement (hook, option, needed
// for, state), the notes, and a verdict naming everything missing.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOOK\tOPTION\tNEEDED FOR\tSTATE")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", f.Hook, tableName(f), f.NeededFor, r.stateText(f))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var b strings.Builder
	if len(r.Notes) > 0 {
		b.WriteString("\nnotes:\n")
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "  - %s\n", n)
		}
	}
	fmt.Fprintf(&b, "\nkernel %s; config %s; modules %s; hooks %s; compression %s\n",
		orDash(r.KernelVersion), orDash(r.Config), orDash(r.ModulesDir), strings.Join(r.Hooks, " "), r.Compression)
	var unknown []string
	var warn []Finding
	for _, f := range r.Warnings() {
		if f.State == Unknown {
			unknown = append(unknown, f.Name())
		} else {
			warn = append(warn, f)
		}
	}
	if len(unknown) > 0 {
		fmt.Fprintf(&b, "unknown (the inputs cannot tell): %s\n", strings.Join(unknown, " "))
	}
	if len(warn) > 0 {
		b.WriteString("optional, missing:\n")
		for _, f := range warn {
			fmt.Fprintf(&b, "  - %s\n", r.line(f))
		}
	}
	if m := r.Missing(); len(m) > 0 {
		fmt.Fprintf(&b, "MISSING: this kernel lacks %d thing(s) these hooks need:\n", len(m))
		for _, f := range m {
			fmt.Fprintf(&b, "  - %s\n", r.line(f))
		}
	} else {
		if n := len(unknown); n > 0 {
			fmt.Fprintf(&b, "OK: nothing these hooks need is missing (%d checked, %d of them unknown).\n", r.countRequired(), n)
		} else {
			fmt.Fprintf(&b, "OK: the kernel has all %d things these hooks need.\n", r.countRequired())
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// line describes one finding in full: hook, every alternative, what it is for and why it fails.
func (r *Report) line(f Finding) string {
	what := f.Name()
	if len(f.Alternatives) > 1 && !f.State.Met() {
		what = "one of " + strings.Join(f.Alternatives, ", ")
	}
	why := f.Detail
	if why == "" {
		why = r.stateText(f)
	}
	return fmt.Sprintf("%s: %s, for %s: %s", f.Hook, what, f.NeededFor, why)
}

func (r *Report) countRequired() int {
	n := 0
	for _, f := range r.Findings {
		if !f.Optional {
			n++
		}
	}
	return n
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// WriteJSON writes the report as one JSON object: the Report fields, plus "ok" and the
// "missing" findings, so a script need not recompute them.
func (r *Report) WriteJSON(w io.Writer) error {
	missing := r.Missing()
	if missing == nil {
		missing = []Finding{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		OK bool `json:"ok"`
		*Report
		Missing []Finding `json:"missing"`
	}{r.OK(), r, missing})
}
