package main

import (
	"strings"
	"testing"
)

// TestMergeTables: a run of some sections replaces theirs in bench.md and keeps the others.
func TestMergeTables(t *testing.T) {
	old := "# Benchmarks\n\n<!-- written -->\n\n### NBD server over loopback (x)\n\nold server\n\n### LUKS unlock\n\nold luks\n### Something else\n\nkept\n"
	got := mergeTables(old, map[string]string{
		"storm":  "### Boot storm: N clients\n\nnew storm\n",
		"server": "### NBD server over loopback (y)\n\nnew server\n",
	})
	want := "### NBD server over loopback (y)\n\nnew server\n\n### Boot storm: N clients\n\nnew storm\n\n### LUKS unlock\n\nold luks\n\n### Something else\n\nkept\n"
	if got != want {
		t.Errorf("merged:\n%s\nwant:\n%s", got, want)
	}
	if strings.Contains(mergeTables("", map[string]string{"luks": "### LUKS x\n"}), "###") != true {
		t.Error("a first run writes nothing")
	}
}
