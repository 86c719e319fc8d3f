package netboot

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// MapperName is the device-mapper name the command line gives an unlocked LUKS root: the
// seed's (cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt).
const MapperName = "nbdcrypt"

// Cmdline is the kernel command line of a client booting over NBD, in the seed's dialect,
// which the nbdroot init parses (bootparam):
//
//	ip=::::::dhcp nbd_server=HOST:PORT [nbd_export=NAME] root=/dev/nbd0
//	ip=::::::dhcp nbd_server=HOST:PORT [nbd_export=NAME] cryptdevice=/dev/nbd0:nbdcrypt root=/dev/mapper/nbdcrypt
//
// Append comes last: a parameter given there again wins (the last occurrence of a parameter
// counts, docs/cmdline.md), so an operator can override root= or cryptdevice=.
type Cmdline struct {
	// Host and Port are the NBD server as the client reaches it.
	Host string
	Port int
	// Export is the export name; "" asks for the server's default export.
	Export string
	Root   Root
	// BootIF, when set, is added as BOOTIF= (the NIC that booted, for the init to prefer).
	BootIF string
	// Append is added at the end as written.
	Append string
}

// String returns the command line.
func (c Cmdline) String() string {
	w := []string{"ip=::::::dhcp"}
	if c.BootIF != "" {
		w = append(w, "BOOTIF="+c.BootIF)
	}
	w = append(w, "nbd_server="+net.JoinHostPort(c.Host, strconv.Itoa(c.Port)))
	if c.Export != "" {
		w = append(w, "nbd_export="+c.Export)
	}
	if c.Root.LUKS {
		w = append(w, "cryptdevice="+c.Root.Device+":"+MapperName, "root=/dev/mapper/"+MapperName)
	} else {
		w = append(w, "root="+c.Root.Device)
	}
	if a := strings.TrimSpace(c.Append); a != "" {
		w = append(w, a)
	}
	return strings.Join(w, " ")
}

// wordChars are the bytes an export name or kernel version may use to be put into a
// command line, a URL path, an iPXE script and a pxelinux configuration as it is: no
// spaces, quotes, '$' (iPXE expands ${…}), '#', ';' or '%'.
func wordOK(s string, extra string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("._-+~"+extra, c) >= 0:
		default:
			return false
		}
	}
	return true
}

// CheckExportName says whether an export can be booted by name: the name goes into URLs,
// scripts and the kernel command line unquoted.
func CheckExportName(name string) error {
	if name == "" || wordOK(name, "@/") && !strings.Contains(name, "//") && name[0] != '/' && name[len(name)-1] != '/' &&
		!strings.Contains("/"+name+"/", "/../") && !strings.Contains("/"+name+"/", "/./") {
		return nil
	}
	return fmt.Errorf("export name %q cannot be booted over the network: use letters, digits and . _ - + ~ @ / only", name)
}

// urlPrefix is the URL path (and TFTP directory) of an export's files: "/NAME/", or "/"
// for the default export.
func urlPrefix(export string) string {
	if export == "" {
		return "/"
	}
	return "/" + export + "/"
}

// ScriptFile is the name of an export's iPXE script.
const ScriptFile = "boot.ipxe"

// IPXEScript is the iPXE script booting b's newest kernel: the kernel and initramfs from
// base (http://HOST:PORT) and the command line of c. BOOTIF names the NIC iPXE booted
// from (iPXE's ${netX/mac:hexhyp}, the last opened interface).
func IPXEScript(b *Boot, base string, c Cmdline) string {
	k := b.Newest()
	pre := base + urlPrefix(exportOf(b))
	c.BootIF = "01-${netX/mac:hexhyp}"
	var s strings.Builder
	fmt.Fprintf(&s, "#!ipxe\n")
	fmt.Fprintf(&s, "# nbdroot: %s, kernel %s from %s\n", describe(b), versionText(k), b.Source)
	// initrd=NAME tells an EFI-stub kernel which image iPXE registered (EFI boots need it).
	fmt.Fprintf(&s, "kernel %s%s initrd=%s %s\n", pre, k.Kernel, k.Initrd, c.String())
	fmt.Fprintf(&s, "initrd %s%s\n", pre, k.Initrd)
	fmt.Fprintf(&s, "boot\n")
	return s.String()
}

// PXELinuxConfig is the pxelinux configuration booting b's newest kernel over TFTP with
// the command line of c. IPAPPEND 2 adds BOOTIF= for the NIC that PXE-booted.
func PXELinuxConfig(b *Boot, c Cmdline) string {
	k := b.Newest()
	pre := strings.TrimPrefix(urlPrefix(exportOf(b)), "/")
	var s strings.Builder
	fmt.Fprintf(&s, "# nbdroot: %s, kernel %s from %s\n", describe(b), versionText(k), b.Source)
	fmt.Fprintf(&s, "default nbdroot\nlabel nbdroot\n")
	fmt.Fprintf(&s, "  kernel %s%s\n", pre, k.Kernel)
	fmt.Fprintf(&s, "  append initrd=%s%s %s\n", pre, k.Initrd, c.String())
	fmt.Fprintf(&s, "  ipappend 2\n")
	return s.String()
}

// exportOf is the name a client asks for: "" when it came for the default export.
func exportOf(b *Boot) string {
	if b.Default {
		return ""
	}
	return b.Export
}

func describe(b *Boot) string {
	if b.Default {
		return fmt.Sprintf("the default export (%q)", b.Export)
	}
	return fmt.Sprintf("export %q", b.Export)
}

func versionText(k Kernel) string {
	if k.Version == "" {
		return k.Kernel
	}
	return k.Version
}
