package kernelcfg

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/hooks/catalog"
)

// State is what a check found for one requirement.
type State string

// The states of a Finding. BuiltIn, Module and VersionOK meet a requirement; Missing,
// ModuleMissing and TooOld do not; Unknown means the inputs cannot tell.
const (
	BuiltIn       State = "built-in"       // =y, or listed in modules.builtin
	Module        State = "module"         // =m, and its file is in the modules dir (or none was given)
	ModuleMissing State = "module-missing" // =m, but the modules dir holds no file for it
	Missing       State = "missing"        // not set, or (without a .config) neither built in nor a file
	Unknown       State = "unknown"        // a bool option without a .config, or an unknown version
	VersionOK     State = "version-ok"     // the kernel is at least MinVersion
	TooOld        State = "too-old"        // the kernel is older than MinVersion
)

// Met reports whether the state meets its requirement.
func (s State) Met() bool { return s == BuiltIn || s == Module || s == VersionOK }

// Failed reports whether the state shows the requirement unmet (Unknown is neither met nor
// failed).
func (s State) Failed() bool { return s == Missing || s == ModuleMissing || s == TooOld }

// rank orders states from best to worst, to pick the best of a requirement's alternatives.
func (s State) rank() int {
	return slices.Index([]State{BuiltIn, Module, Unknown, ModuleMissing, Missing}, s)
}

// Finding is the check of one requirement.
type Finding struct {
	Hook string `json:"hook"`
	// Option is the option that decided the state: the one that meets the requirement, or the
	// best-placed one when none does. "" for a MinVersion requirement.
	Option string `json:"option,omitempty"`
	// Alternatives lists every option of an any-of requirement (more than one).
	Alternatives []string `json:"alternatives,omitempty"`
	// MinVersion is the version a version requirement needs.
	MinVersion string `json:"min_version,omitempty"`
	NeededFor  string `json:"needed_for"`
	State      State  `json:"state"`
	// Module is Option's module, when it has one.
	Module string `json:"module,omitempty"`
	// File is the module's file relative to the modules dir, when found there.
	File     string `json:"file,omitempty"`
	Optional bool   `json:"optional,omitempty"`
	// Detail says what the state rests on, in a few words.
	Detail string `json:"detail,omitempty"`
}

// Name returns how the finding names what it checks: its option, "A|B|C" for an unmet any-of
// requirement, or "kernel >= V" for a version requirement.
func (f Finding) Name() string {
	switch {
	case f.MinVersion != "":
		return "kernel >= " + f.MinVersion
	case len(f.Alternatives) > 1 && !f.State.Met():
		return strings.Join(f.Alternatives, "|")
	}
	return f.Option
}

// Report is the result of Check: one finding per requirement of the hooks checked.
type Report struct {
	// Config is where the .config came from ("" when none was given).
	Config string `json:"config,omitempty"`
	// ModulesDir is the modules dir searched ("" when none was given).
	ModulesDir string `json:"modules_dir,omitempty"`
	// KernelVersion comes from the .config header, else from the modules dir name.
	KernelVersion string    `json:"kernel_version,omitempty"`
	Hooks         []string  `json:"hooks"`
	Compression   string    `json:"compression"`
	Findings      []Finding `json:"findings"`
	// Notes say what the hooks do not need, and what the inputs could not show.
	Notes []string `json:"notes,omitempty"`
}

// Missing returns the findings of required things the kernel lacks; the kernel cannot boot
// the hooks checked unless this is empty.
func (r *Report) Missing() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if f.State.Failed() && !f.Optional {
			out = append(out, f)
		}
	}
	return out
}

// Warnings returns the findings of optional things the kernel lacks, and of anything the
// inputs could not decide (Unknown).
func (r *Report) Warnings() []Finding {
	var out []Finding
	for _, f := range r.Findings {
		if (f.State.Failed() && f.Optional) || f.State == Unknown {
			out = append(out, f)
		}
	}
	return out
}

// OK reports whether nothing required is missing.
func (r *Report) OK() bool { return len(r.Missing()) == 0 }

// ArgError reports an argument of Check outside the values it knows.
type ArgError struct {
	Arg   string // "hook" or "compression"
	Value string
	Valid []string
}

func (e *ArgError) Error() string {
	return fmt.Sprintf("unknown %s %q (known: %s)", e.Arg, e.Value, strings.Join(e.Valid, " "))
}

// Check tells whether a kernel has what the hooks need for an initramfs compressed with
// compression. cfg is the kernel's .config, modulesDir its /lib/modules/VER; either may be
// absent (nil, ""), not both. nil hooks means catalog.Default, "" compression DefaultCompression.
//
// A requirement is met by an option built in (=y), or set to m with its module file in
// modulesDir (any file when no modulesDir is given). Without a .config, modules.builtin and the
// module files are the evidence, and bool options are Unknown.
func Check(cfg *Config, modulesDir string, hooks []string, compression string) (*Report, error) {
	if cfg == nil && modulesDir == "" {
		return nil, errors.New("nothing to check: need a kernel config or a modules dir")
	}
	hooks, compression, err := validate(hooks, compression)
	if err != nil {
		return nil, err
	}
	r := &Report{Compression: compression, Findings: []Finding{}}
	var mods *ModulesDir
	if modulesDir != "" {
		if mods, err = OpenModulesDir(modulesDir); err != nil {
			return nil, err
		}
		r.ModulesDir = modulesDir
	}
	if cfg != nil {
		r.Config = cfg.Source
		r.KernelVersion = cfg.Version
	}
	if r.KernelVersion == "" && modulesDir != "" {
		for _, dir := range modulesPaths(modulesDir) {
			if _, _, ok := majorMinor(filepath.Base(dir)); ok {
				r.KernelVersion = filepath.Base(dir)
				break
			}
		}
	}

	// IfModules requirements are decided once the rest is known; until then they hold a place,
	// so that the report keeps the table's order.
	var deferred []int
	for _, h := range Hooks() {
		if !slices.Contains(hooks, h.Name) {
			continue
		}
		r.Hooks = append(r.Hooks, h.Name)
		r.Notes = append(r.Notes, h.Notes...)
		for _, req := range h.Requirements {
			if req.Compression != "" && req.Compression != compression {
				continue
			}
			if req.IfModules {
				deferred = append(deferred, len(r.Findings))
			}
			r.Findings = append(r.Findings, evaluate(req, cfg, mods, r.KernelVersion))
		}
	}
	anyModule := false
	for i, f := range r.Findings {
		anyModule = anyModule || (f.State == Module && !slices.Contains(deferred, i))
	}
	for j := len(deferred) - 1; j >= 0; j-- {
		i := deferred[j]
		switch {
		case !anyModule:
			r.Findings = slices.Delete(r.Findings, i, i+1)
		case cfg == nil:
			// Module files were found, so the kernel was built with what loading them needs.
			r.Findings[i].State, r.Findings[i].Detail = BuiltIn, "implied: the modules dir holds the modules found"
		}
	}
	if cfg == nil {
		r.Notes = append(r.Notes, "no kernel config: bool options are unknown; built-in is judged from modules.builtin, modules from module files.")
	}
	if mods == nil {
		r.Notes = append(r.Notes, "no modules dir: options set to m are assumed to have their module file.")
	}
	return r, nil
}

// evaluate checks one requirement, picking the best of its alternatives.
func evaluate(req Requirement, cfg *Config, mods *ModulesDir, version string) Finding {
	f := Finding{Hook: req.Hook, NeededFor: req.NeededFor, Optional: req.Optional, MinVersion: req.MinVersion}
	if req.MinVersion != "" {
		f.State, f.Detail = checkVersion(version, req.MinVersion)
		return f
	}
	if len(req.AnyOf) > 1 {
		for _, o := range req.AnyOf {
			f.Alternatives = append(f.Alternatives, o.Name)
		}
	}
	best := f
	for i, o := range req.AnyOf {
		g := f
		g.Option, g.Module = o.Name, o.Module
		g.State, g.File, g.Detail = evaluateOption(o, cfg, mods)
		if i == 0 || g.State.rank() < best.State.rank() {
			best = g
		}
	}
	return best
}

// evaluateOption checks one option: its state, its module file, and what the state rests on.
func evaluateOption(o Option, cfg *Config, mods *ModulesDir) (State, string, string) {
	if cfg != nil {
		switch cfg.Tristate(o.Name) {
		case 'y':
			return BuiltIn, "", ""
		case 'm':
			switch {
			case mods == nil:
				return Module, "", "module file not checked: no modules dir"
			case o.Module == "":
				return Module, "", "no module name known for it"
			}
			if file, ok := mods.File(o.Module); ok {
				return Module, file, ""
			}
			return ModuleMissing, "", fmt.Sprintf("set to m, but no %s module file in %s", o.Module, mods.Dir)
		}
		if v, ok := cfg.Value(o.Name); ok && v != "n" {
			return Missing, "", fmt.Sprintf("set to %s, not y or m", v)
		}
		return Missing, "", "not set"
	}
	switch {
	case o.Module == "":
		return Unknown, "", "bool option: only a .config shows it"
	case mods.Builtin(o.Module):
		return BuiltIn, "", "listed in modules.builtin"
	}
	if file, ok := mods.File(o.Module); ok {
		return Module, file, ""
	}
	if !mods.HasBuiltinList() {
		return Unknown, "", "no module file, and no modules.builtin to tell if it is built in"
	}
	return Missing, "", fmt.Sprintf("not in modules.builtin, and no %s module file in %s", o.Module, mods.Dir)
}

// checkVersion compares a kernel version ("6.1.192", "6.1.0-56-amd64") with a minimum ("4.12").
func checkVersion(version, min string) (State, string) {
	maj, minr, ok := majorMinor(version)
	if !ok {
		return Unknown, "kernel version unknown"
	}
	wantMaj, wantMin, _ := majorMinor(min)
	if maj > wantMaj || (maj == wantMaj && minr >= wantMin) {
		return VersionOK, "kernel " + version
	}
	return TooOld, "kernel " + version + " is older than " + min
}

// majorMinor parses the leading "MAJOR.MINOR" of a kernel version.
func majorMinor(v string) (int, int, bool) {
	parts := strings.SplitN(v, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	maj, err1 := strconv.Atoi(parts[0])
	end := strings.IndexFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		end = len(parts[1])
	}
	minr, err2 := strconv.Atoi(parts[1][:end])
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return maj, minr, true
}

// CheckKernel checks the kernel of modulesDir (or, with modulesDir "", the running kernel)
// with its own config: the first of ConfigCandidates that exists, so ROOT/boot/config-VER for
// ROOT/lib/modules/VER. When there is none, modulesDir alone is checked (see Check); without
// modulesDir either, the error is a *NoConfigError.
func CheckKernel(modulesDir string, hooks []string, compression string) (*Report, error) {
	var cfg *Config
	path, err := FindConfig(modulesDir, HostRelease())
	switch {
	case err == nil:
		if cfg, err = Load(path); err != nil {
			return nil, err
		}
	case modulesDir == "":
		return nil, err
	}
	return Check(cfg, modulesDir, hooks, compression)
}

// validate applies the defaults to hooks and compression and rejects unknown names.
func validate(hooks []string, compression string) ([]string, string, error) {
	if hooks == nil {
		hooks = catalog.Default
	}
	if compression == "" {
		compression = DefaultCompression
	}
	var valid []string
	for _, c := range Compressions {
		valid = append(valid, c.Name)
	}
	if !slices.Contains(valid, compression) {
		return nil, "", &ArgError{Arg: "compression", Value: compression, Valid: valid}
	}
	known := catalog.Names()
	for _, h := range hooks {
		if !slices.Contains(known, h) {
			return nil, "", &ArgError{Arg: "hook", Value: h, Valid: known}
		}
	}
	return hooks, compression, nil
}
