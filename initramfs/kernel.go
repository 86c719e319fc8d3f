package initramfs

import (
	"errors"
	"fmt"

	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/kernelcfg"
	"github.com/nbdroot/nbdroot/kmod/depmod"
)

// kernelWarnings runs kernelcfg's check of the client kernel for the image's hooks and
// compression and turns what it finds into warnings: the builder still writes the image
// (the user may know better, or the check may lack evidence), but says what will not work.
func kernelWarnings(opts Options, d *depmod.Dir, hookNames []string, comp Compression) []string {
	cfgPath := opts.KernelConfig
	var warns []string
	if cfgPath == "" {
		if p, err := kernelcfg.FindConfig(d.Path, ""); err == nil {
			cfgPath = p
		}
	}
	var cfg *kernelcfg.Config
	if cfgPath != "" {
		c, err := kernelcfg.Load(cfgPath)
		if err != nil {
			return []string{fmt.Sprintf("kernel config: %v", err)}
		}
		cfg = c
	}
	// The check knows the hooks that need something from the kernel; hooks accepted only
	// for mkinitcpio compatibility (Runs == false) are not its business.
	var checked []string
	for _, h := range hookNames {
		if s, ok := catalog.Lookup(h); ok && s.Runs {
			checked = append(checked, h)
		}
	}
	compName := string(comp)
	rep, err := kernelcfg.Check(cfg, d.Path, checked, compName)
	var argErr *kernelcfg.ArgError
	if errors.As(err, &argErr) && argErr.Arg == "compression" {
		// A compression the check has no requirement for (none): check the hooks only.
		rep, err = kernelcfg.Check(cfg, d.Path, checked, "")
	}
	if err != nil {
		return []string{fmt.Sprintf("kernel check: %v", err)}
	}
	for _, f := range rep.Missing() {
		warns = append(warns, fmt.Sprintf("kernel lacks %s, needed by hook %s for %s (%s)", f.Name(), f.Hook, f.NeededFor, f.Detail))
	}
	if cfg == nil {
		warns = append(warns, "no kernel .config found beside the modules (use --kernel-config): checked the modules directory only")
	}
	return warns
}
