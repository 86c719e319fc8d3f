package catalog

import (
	"slices"
	"strings"
	"testing"
)

// TestCatalogConsistent checks what the builder, kernelcfg, bootparam and the init rely on.
func TestCatalogConsistent(t *testing.T) {
	names := Names()
	for i, n := range names {
		if slices.Index(names, n) != i {
			t.Errorf("hook %s is listed twice", n)
		}
	}
	for _, d := range Default {
		s, ok := Lookup(d)
		if !ok || !s.Runs {
			t.Errorf("default hook %s is not a hook that runs", d)
		}
	}
	module := func(m string) string { return strings.ReplaceAll(m, "-", "_") }
	for _, s := range Catalog() {
		for _, req := range s.Kernel {
			if req.Hook != s.Name {
				t.Errorf("%s: a requirement names hook %q", s.Name, req.Hook)
			}
		}
		// Every module a hook requires is the module of one of its required kernel options:
		// the kernel check and the builder agree on what the hook cannot do without.
		for _, m := range s.Modules {
			found := false
			for _, req := range s.Kernel {
				for _, o := range req.AnyOf {
					found = found || (!req.Optional && o.Module != "" && module(o.Module) == module(m))
				}
			}
			if !found {
				t.Errorf("%s: requires module %s, but no required kernel option builds it", s.Name, m)
			}
		}
	}
	// On-demand modules are the modules of optional kernel options: the image carries them
	// when the kernel has them, and the check says what is missing without failing.
	for _, s := range Catalog() {
		for _, m := range s.OnDemandModules {
			found := false
			for _, req := range s.Kernel {
				for _, o := range req.AnyOf {
					found = found || (o.Module != "" && module(o.Module) == module(m))
				}
			}
			if !found {
				t.Errorf("%s: module %s on demand, but no kernel option builds it", s.Name, m)
			}
		}
	}
	for _, s := range Catalog() {
		for _, m := range s.MapsTo {
			t2, ok := Lookup(m)
			if !ok || len(t2.MapsTo) > 0 || s.Runs || len(s.Modules)+len(s.OptionalModules) > 0 {
				t.Errorf("%s maps to %s: want a hook that exists and maps nowhere, from a hook with nothing of its own", s.Name, m)
			}
		}
		for _, d := range s.AutodetectDirs {
			if !strings.HasPrefix(d, "kernel/") || !strings.HasSuffix(d, "/") {
				t.Errorf("%s: autodetect directory %q is not kernel/…/", s.Name, d)
			}
		}
	}
	stages := Stages()
	if stages[0] != "base" || stages[len(stages)-1] != SwitchRoot {
		t.Errorf("stages %v: want base first and %s last", stages, SwitchRoot)
	}
	for _, st := range stages[:len(stages)-1] {
		if s, _ := Lookup(st); !s.Runs {
			t.Errorf("stage %s does not run", st)
		}
	}
}

// TestCatalogIsACopy makes sure a caller cannot change the table for everyone.
func TestCatalogIsACopy(t *testing.T) {
	c := Catalog()
	c[0].Kernel[0].Hook = "changed"
	c[0].Name = "changed"
	if s := Catalog()[0]; s.Name != "base" || s.Kernel[0].Hook != "base" {
		t.Errorf("Catalog returned shared data: %+v", s)
	}
}
