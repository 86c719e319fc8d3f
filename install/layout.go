package install

import (
	"bytes"
	"embed"
	"io/fs"
	"path"
	"strings"
	"text/template"

	"github.com/nbdroot/nbdroot/hooks/catalog"
	"github.com/nbdroot/nbdroot/initramfs"
	"github.com/nbdroot/nbdroot/netboot"
)

// ConfPath is the configuration the kernel hooks build the initramfs with. Its presence
// makes a root an nbdroot client: without it the hooks (which a package also installs on
// servers) do nothing.
const ConfPath = "/etc/nbdroot/initramfs.conf"

// BootDir is where kernels and their nbdroot initramfs images live in a root: the /boot
// contract `nbdroot serve` reads (netboot.KernelPrefix, netboot.InitrdPrefix).
const BootDir = "/boot"

// ModulesDir holds a root's kernel modules, one directory per kernel release. Arch and
// Fedora also keep the kernel image there (ModulesDir/VERSION/vmlinuz) and the name of the
// package that owns it (ModulesDir/VERSION/pkgbase).
const ModulesDir = "/lib/modules"

// DefaultPrefix is the prefix of the binaries `nbdroot install --root` puts into a client
// root (a distribution's own prefix: the files sit where a package would put them).
const DefaultPrefix = "/usr"

// Layout is where nbdroot's files go for an installation prefix ("/usr" for a client root
// and the Debian package, "/usr/local" for `make install`'s default).
type Layout struct {
	Prefix string
}

// Bin is the nbdroot program.
func (l Layout) Bin() string { return path.Join(l.Prefix, "bin", "nbdroot") }

// Init is the initramfs's init. `nbdroot initramfs` finds it there by default
// (initramfs.InstalledInit, relative to the nbdroot program).
func (l Layout) Init() string {
	return path.Join(path.Dir(l.Bin()), initramfs.InstalledInit)
}

// system says whether files go where the distribution's packages put theirs (/usr) rather
// than where a local administrator's go: kernel-install and libalpm read plugins and hooks
// from /usr/lib and /usr/share, or from /etc, and nowhere under /usr/local.
func (l Layout) system() bool { return path.Clean(l.Prefix) == "/usr" }

// KernelInstall is systemd's kernel-install plugin.
func (l Layout) KernelInstall() string {
	if l.system() {
		return "/usr/lib/kernel/install.d/60-nbdroot.install"
	}
	return "/etc/kernel/install.d/60-nbdroot.install"
}

// alpmHooks is the directory of pacman's hooks.
func (l Layout) alpmHooks() string {
	if l.system() {
		return "/usr/share/libalpm/hooks"
	}
	return "/etc/pacman.d/hooks"
}

// AlpmScript is the script pacman's hooks run.
func (l Layout) AlpmScript() string {
	return path.Join(l.Prefix, "share", "libalpm", "scripts", "nbdroot")
}

// Family is a package manager whose kernel installs nbdroot hooks into.
type Family string

// The package managers with kernel hooks.
const (
	// Dpkg runs /etc/kernel/postinst.d and postrm.d from every kernel package's
	// maintainer scripts (Debian, Ubuntu).
	Dpkg Family = "dpkg"
	// Pacman runs alpm hooks on the kernels' files (Arch).
	Pacman Family = "pacman"
	// KernelInstall is systemd's kernel-install (Fedora; called by other distributions'
	// hooks where systemd-boot is used).
	KernelInstall Family = "kernel-install"
)

// Families are the package managers nbdroot has hooks for, in the order they are reported.
var Families = []Family{Dpkg, Pacman, KernelInstall}

// evidence is the path, in a root, that shows a family is used there.
var evidence = map[Family]string{
	Dpkg:          "/var/lib/dpkg",
	Pacman:        "/etc/pacman.conf",
	KernelInstall: "/usr/bin/kernel-install",
}

// File is one file nbdroot installs.
type File struct {
	// Path is where it goes, absolute within the root.
	Path string
	// Mode is its permission bits.
	Mode fs.FileMode
	// What says what it is, for the summary.
	What string
	// Family is the package manager the file serves; "" for files every root gets.
	Family Family
	// Content is the file's content, or Source (a file on this machine) is copied.
	Content []byte
	Source  string
	// Config files are the administrator's: created when missing, never replaced.
	Config bool
}

//go:embed files
var templates embed.FS

// params are what the templates of files/ fill in.
type params struct {
	Bin, Init, AlpmScript, KernelInstall, Conf string
	Hooks, Compression                         string
}

func (l Layout) params() params {
	return params{Bin: l.Bin(), Init: l.Init(), AlpmScript: l.AlpmScript(), KernelInstall: l.KernelInstall(),
		Conf: ConfPath, Hooks: strings.Join(catalog.Default, " "), Compression: string(initramfs.DefaultCompression)}
}

// render fills in template files/name.
func (l Layout) render(name string) []byte {
	t := template.Must(template.ParseFS(templates, "files/"+name))
	var b bytes.Buffer
	if err := t.Execute(&b, l.params()); err != nil {
		// The templates are part of the program; the tests render every one.
		panic(err)
	}
	return b.Bytes()
}

// Files lists what an installation puts into a root: the binaries (copied from bin and
// init on this machine), the hooks of every package manager, and the hooks'
// configuration.
func (l Layout) Files(bin, init string) []File {
	return []File{
		{Path: l.Bin(), Mode: 0o755, What: "the nbdroot program", Source: bin},
		{Path: l.Init(), Mode: 0o755, What: "the initramfs's init", Source: init},
		{Path: "/etc/kernel/postinst.d/nbdroot", Mode: 0o755, Family: Dpkg,
			What: "dpkg kernel hook: builds an installed kernel's initramfs", Content: l.render("dpkg-postinst")},
		{Path: "/etc/kernel/postrm.d/nbdroot", Mode: 0o755, Family: Dpkg,
			What: "dpkg kernel hook: removes it with the kernel", Content: l.render("dpkg-postrm")},
		{Path: path.Join(l.alpmHooks(), "90-nbdroot-install.hook"), Mode: 0o644, Family: Pacman,
			What: "pacman hook: builds an installed kernel's initramfs", Content: l.render("alpm-install.hook")},
		{Path: path.Join(l.alpmHooks(), "60-nbdroot-remove.hook"), Mode: 0o644, Family: Pacman,
			What: "pacman hook: removes it with the kernel", Content: l.render("alpm-remove.hook")},
		{Path: l.AlpmScript(), Mode: 0o755, Family: Pacman, What: "the pacman hooks' script", Content: l.render("alpm-script")},
		{Path: l.KernelInstall(), Mode: 0o755, Family: KernelInstall,
			What: "kernel-install plugin: builds and removes a kernel's initramfs", Content: l.render("kernel-install")},
		{Path: ConfPath, Mode: 0o644, Config: true, What: "how the hooks build the initramfs (yours to edit)",
			Content: l.render("initramfs.conf")},
	}
}

// Kernel file names in BootDir, by the /boot contract of `nbdroot serve`.
func kernelFile(name string) string { return path.Join(BootDir, netboot.KernelPrefix+name) }
func imageFile(name string) string  { return path.Join(BootDir, netboot.InitrdPrefix+name) }
