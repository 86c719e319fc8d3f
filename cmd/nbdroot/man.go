package main

import (
	"bytes"
	"io"

	"github.com/nbdroot/nbdroot/manpage"
	"github.com/nbdroot/nbdroot/version"
)

// subcommandHelp lists the commands whose subcommands have help of their own, for the
// manual.
var subcommandHelp = map[string][]string{"kernelcfg": {"check", "fragment"}}

// manual is nbdroot(8), made of the commands' own --help texts (`nbdroot help --man`;
// `make install` and `make deb` install it).
func manual() *manpage.Page {
	p := &manpage.Page{Name: "nbdroot", Section: 8, Source: "nbdroot " + version.String(), Manual: "System Administration",
		Summary: "boot diskless Linux machines from a root file system on NBD: server, initramfs builder, client tools"}
	var cmds []manpage.Item
	for _, c := range commands() {
		cmds = append(cmds, manpage.Item{Tag: c.name, Text: c.summary})
	}
	p.Sections = append(p.Sections,
		manpage.Section{Title: "SYNOPSIS", Text: "nbdroot COMMAND [options]\nnbdroot COMMAND --help\nnbdroot --version"},
		manpage.Section{Title: "DESCRIPTION", Paragraphs: []string{
			"nbdroot boots diskless machines (PXE thin clients) from a root file system on a Network Block Device, " +
				"optionally LUKS-encrypted. nbdroot-init is the /init of the initramfs that nbdroot initramfs builds; " +
				"nbdroot serve is the NBD server, which can also boot the clients over HTTP, TFTP and proxyDHCP " +
				"with the kernels in each image's /boot; nbdroot install puts nbdroot and its kernel hooks into a client root.",
			"Each command is described below by its own --help text."}},
		manpage.Section{Title: "COMMANDS", Items: cmds})
	for _, c := range commands() {
		p.Sections = append(p.Sections, manpage.Section{Title: "nbdroot " + c.name, Text: help(c.name)})
		for _, sub := range subcommandHelp[c.name] {
			p.Sections = append(p.Sections, manpage.Section{Title: "nbdroot " + c.name + " " + sub, Sub: true, Text: help(c.name, sub)})
		}
	}
	p.Sections = append(p.Sections,
		manpage.Section{Title: "FILES", Items: []manpage.Item{
			{Tag: "/etc/nbdroot/initramfs.conf", Text: "in a client root: the options its kernel hooks build /boot/nbdroot.img-VERSION with (nbdroot install)"},
			{Tag: "/boot/vmlinuz-VERSION, /boot/nbdroot.img-VERSION", Text: "in an export's image: the kernel and initramfs nbdroot serve --http boots"},
			{Tag: "/etc/nbd-server/config", Text: "the configuration nbdroot-serve.service reads (nbd-server's format)"},
			{Tag: "/var/lib/nbdroot", Text: "the server's state: copy-on-write overlays and the control socket"},
		}},
		manpage.Section{Title: "SEE ALSO", Paragraphs: []string{
			"nbd-server(1), nbd-client(8), mkinitcpio(8), kernel-install(8). " +
				"The README and docs/ (installed in /usr/share/doc/nbdroot): cmdline.md (every kernel command line parameter), " +
				"netboot.md, fleet.md (DHCP servers, per-client settings), server.md, luks.md, initramfs.md."}})
	return p
}

// help is the --help text of a command.
func help(args ...string) string {
	var out bytes.Buffer
	run(append(args, "--help"), &out, io.Discard)
	return out.String()
}
