package kernelcfg_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/kernelcfg"
)

// TestTableFollowsCatalog keeps the requirement table in step with catalog.Catalog, which the
// builder and the init follow: the same hooks in the same order, the same default list, and
// every module a hook requires is the module of one of its required options. It is an external
// test so that hooks may import kernelcfg without a cycle.
func TestTableFollowsCatalog(t *testing.T) {
	var names, table []string
	for _, s := range catalog.Catalog() {
		names = append(names, s.Name)
	}
	for _, h := range kernelcfg.Hooks() {
		table = append(table, h.Name)
	}
	if diff := cmp.Diff(names, table); diff != "" {
		t.Errorf("hooks (-catalog +table):\n%s", diff)
	}
	if diff := cmp.Diff(catalog.Default, kernelcfg.DefaultHooks); diff != "" {
		t.Errorf("default hooks (-catalog.Default +DefaultHooks):\n%s", diff)
	}
	for _, spec := range catalog.Catalog() {
		var h kernelcfg.Hook
		for _, x := range kernelcfg.Hooks() {
			if x.Name == spec.Name {
				h = x
			}
		}
		for _, m := range spec.Modules {
			found := false
			for _, req := range h.Requirements {
				for _, o := range req.AnyOf {
					found = found || (!req.Optional && o.Module != "" && kernelcfg.ModuleName(o.Module) == kernelcfg.ModuleName(m))
				}
			}
			if !found {
				t.Errorf("%s: the catalog requires module %s; no required option of the table builds it", spec.Name, m)
			}
		}
	}
}
