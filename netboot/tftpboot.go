package netboot

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strings"

	"github.com/nbdroot/nbdroot/netboot/tftp"
)

// The TFTP namespace: nothing in it is a host path a client can choose.
//
//	undionly.kpxe, snponly.efi      the iPXE chain files (IPXEDir)
//	pxelinux.0, ldlinux.c32         pxelinux (PXELinuxDir or Debian's directories)
//	pxelinux.cfg/ANYTHING           the generated configuration booting BootExport
//	[EXPORT/]FILE                   an export's kernel and initramfs files, as over HTTP

// ipxeFiles are the iPXE builds served from IPXEDir.
var ipxeFiles = map[string]bool{fileUndionly: true, fileSNPOnly: true, "ipxe.efi": true, "ipxe.pxe": true, "undionly.kkpxe": true}

// memFile is generated content (a pxelinux configuration) as a tftp.File.
type memFile struct {
	*strings.Reader
}

func (m memFile) Size() int64  { return m.Reader.Size() }
func (m memFile) Close() error { return nil }

// bootFileTFTP adapts a BootFile to tftp.File.
type bootFileTFTP struct{ *BootFile }

func (b bootFileTFTP) Size() int64 { return b.BootFile.Size }

// openTFTP is the TFTP server's Handler.
func (s *Server) openTFTP(req *tftp.Request, remote *net.UDPAddr, local net.IP) (tftp.File, error) {
	// iPXE and some ROMs send an absolute path; the namespace has no root to escape.
	name := strings.TrimLeft(req.Filename, "/")
	export, file, err := splitPath(name)
	if err != nil {
		return nil, &tftp.Error{Code: tftp.ErrAccess, Message: err.Error()}
	}
	switch {
	case export == "" && ipxeFiles[file]:
		return tftp.OpenFile(filepath.Join(s.cfg.IPXEDir, file))
	case export == "" && (file == filePXELinux || file == fileLDLinux):
		p, err := s.pxelinuxFile(file)
		if err != nil {
			return nil, &fs.PathError{Op: "open", Path: file, Err: fs.ErrNotExist}
		}
		return tftp.OpenFile(p)
	case export == "pxelinux.cfg":
		b, err := s.cat.Lookup(s.cfg.BootExport)
		if err != nil {
			return nil, err
		}
		host := ""
		if local != nil && !local.IsUnspecified() {
			host = local.String()
		} else if s.cfg.NBDServer == "" {
			return nil, errors.New("the address this request was sent to is unknown: give --tftp a specific address or --boot-nbd")
		}
		c, err := s.cmdline(b, host, local)
		if err != nil {
			return nil, err
		}
		return memFile{strings.NewReader(PXELinuxConfig(b, c))}, nil
	}
	b, err := s.cat.Lookup(export)
	if err != nil {
		if errors.Is(err, ErrNoExport) {
			return nil, fmt.Errorf("%q: %w", req.Filename, fs.ErrNotExist)
		}
		return nil, err
	}
	if !b.Has(file) {
		return nil, fmt.Errorf("%s has no boot file %q: %w", describe(b), file, fs.ErrNotExist)
	}
	f, err := b.Open(file)
	if err != nil {
		return nil, err
	}
	return bootFileTFTP{f}, nil
}
