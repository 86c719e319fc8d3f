package netboot

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"

	"github.com/nbdroot/nbdroot/nbd"
)

// Aliases for an export's newest pair, for hand-written scripts: /EXPORT/vmlinuz and
// /EXPORT/initrd. The generated script names the versioned files, so the kernel and
// initramfs it fetches are a pair even when a new kernel lands in between.
const (
	aliasKernel = "vmlinuz"
	aliasInitrd = "initrd"
)

// PathError is an HTTP or TFTP path that cannot name a boot file.
type PathError struct {
	Path   string
	Reason string
}

func (e *PathError) Error() string { return fmt.Sprintf("path %q: %s", e.Path, e.Reason) }

// splitPath splits a request path into the export name ("" for the default export) and
// the file: "/root/boot.ipxe" → "root", "boot.ipxe"; "/boot.ipxe" → "", "boot.ipxe".
// Paths with empty, "." or ".." segments, backslashes or NUL bytes are refused: names are
// looked up, never joined onto a directory, but such a path is a mistake or an attack,
// and the error says so.
func splitPath(p string) (export, file string, err error) {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return "", "", &PathError{"/", "no file named"}
	}
	if strings.ContainsAny(p, "\\\x00") {
		return "", "", &PathError{p, "backslash or NUL byte"}
	}
	for _, seg := range strings.Split(p, "/") {
		switch seg {
		case "":
			return "", "", &PathError{p, "empty path segment"}
		case ".", "..":
			return "", "", &PathError{p, fmt.Sprintf("%q segment", seg)}
		}
	}
	dir, file := path.Split(p)
	return strings.TrimSuffix(dir, "/"), file, nil
}

// ServeHTTP serves /[EXPORT/]boot.ipxe, the export's kernels and initramfs files by name,
// and the vmlinuz and initrd aliases.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	client := r.RemoteAddr
	if h, _, err := net.SplitHostPort(client); err == nil {
		client = h
	}
	fail := func(code int, err error) {
		s.logf("netboot: http %s %s: %v", client, r.URL.Path, err)
		http.Error(w, err.Error(), code)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		fail(http.StatusMethodNotAllowed, fmt.Errorf("method %s", r.Method))
		return
	}
	export, file, err := splitPath(r.URL.Path)
	if err != nil {
		fail(http.StatusBadRequest, err)
		return
	}
	b, err := s.cat.Lookup(export)
	if err != nil {
		code := http.StatusInternalServerError
		if errors.Is(err, ErrNoExport) {
			code = http.StatusNotFound
		}
		fail(code, err)
		return
	}
	local := localIP(r)
	switch file {
	case ScriptFile:
		host, base, err := s.hostOf(r, local)
		if err != nil {
			fail(http.StatusBadRequest, err)
			return
		}
		c, err := s.cmdline(b, host, local)
		if err != nil {
			fail(http.StatusInternalServerError, err)
			return
		}
		script := IPXEScript(b, base, c)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		io.WriteString(w, script)
		s.logf("netboot: http %s %s: %s, kernel %s, nbd_server=%s", client, r.URL.Path, describe(b), versionText(b.Newest()), net.JoinHostPort(c.Host, fmt.Sprint(c.Port)))
		return
	case aliasKernel:
		file = b.Newest().Kernel
	case aliasInitrd:
		file = b.Newest().Initrd
	}
	if !b.Has(file) {
		fail(http.StatusNotFound, fmt.Errorf("%s has no boot file %q (it has %s)", describe(b), file, fileList(b)))
		return
	}
	f, err := b.Open(file)
	if err != nil {
		fail(http.StatusInternalServerError, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, file, f.ModTime, io.NewSectionReader(f, 0, f.Size))
	s.logf("netboot: http %s %s: %s", client, r.URL.Path, nbd.FormatSize(uint64(f.Size)))
}

func fileList(b *Boot) string {
	var names []string
	for _, k := range b.Kernels {
		names = append(names, k.Kernel, k.Initrd)
	}
	return strings.Join(names, ", ")
}

// localIP is the address the client connected to.
func localIP(r *http.Request) net.IP {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr); ok {
		return a.IP
	}
	return nil
}

// hostOf returns the host the client used to reach us (the request's Host header, else
// the local address) and the base URL (http://HOST:PORT) of the script's links: the same
// address, so a client behind NAT or port forwarding is sent back the way it came.
func (s *Server) hostOf(r *http.Request, local net.IP) (host, base string, err error) {
	hp := r.Host
	if hp == "" {
		if local == nil {
			return "", "", errors.New("no Host header and no local address")
		}
		a := r.Context().Value(http.LocalAddrContextKey).(*net.TCPAddr)
		hp = a.String()
	}
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		host, port = strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), ""
	}
	if net.ParseIP(host) == nil && !dnsName(host) || port != "" && !wordOK(port, "") {
		return "", "", fmt.Errorf("Host header %q is not an address or a DNS name", hp)
	}
	return host, "http://" + hp, nil
}

// dnsName reports whether s is a plausible DNS name (letters, digits, '-', '.').
func dnsName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
