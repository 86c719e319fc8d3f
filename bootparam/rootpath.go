package bootparam

import (
	"net/url"
	"strings"
	"time"
)

// formRootPath is the form quoted in root-path errors.
const formRootPath = "nbd:SERVER:PORT|NAME[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]] | SERVER:PORT/NAME | SERVER,PORT|NAME[,nbdN] | HOST[:PORT] | nbd://HOST[:PORT]/NAME"

// RootPath is what a DHCP root-path (option 17, RFC 2132 section 3.19) says about the NBD
// root. Fields the root-path does not give are zero.
type RootPath struct {
	// Host and Port are the first server, as in NBD. Host is empty when the root-path
	// leaves the server to DHCP (an empty SERVER field, e.g. ",root" or ":/root"): the DHCP
	// server address is used then, and Port is the port given without a server (0 if none).
	Host string
	Port int
	// Servers lists the servers the root-path names (one today; a list to match NBD).
	Servers []Server
	// Export and HasExport: the export name, when the root-path gives one.
	Export    string
	HasExport bool
	// Device is the NBD device of Debian's SERVER,NAME,nbdN form.
	Device string
	// FSType, Flags and RW (nil = not said) come from dracut's FSTYPE and ROOTFLAGS fields;
	// BlockSize and Timeout from its NBDOPTS.
	FSType    string
	Flags     string
	RW        *bool
	BlockSize int
	Timeout   time.Duration
}

// ParseRootPath parses a DHCP root-path (option 17) naming an NBD root, in the form any of
// the dialects puts there:
//
//   - dracut: nbd:SERVER:PORT|NAME[:FSTYPE[:ROOTFLAGS[:NBDOPTS]]] (also with root=dhcp);
//   - Debian: SERVER,PORT|NAME[,nbdN], SERVER:PORT/NAME, SERVER:/NAME, [IPV6]:PORT/NAME, and
//     the same prefixed with "nbdroot=" (README.Debian: accepted for backwards compatibility);
//   - a plain HOST[:PORT] (the server's default export);
//   - an NBD URI nbd://HOST[:PORT][/NAME] (NBD doc/uri.md), without TLS or Unix sockets.
//
// An empty root-path is not an error: it names nothing and the DHCP server is used. A
// root-path naming another kind of root (nfs:, iscsi:, …) is.
func ParseRootPath(rootPath string) (*RootPath, error) {
	const param = "root-path"
	rp := strings.TrimPrefix(rootPath, "nbdroot=")
	if rp == "" {
		return &RootPath{}, nil
	}
	if strings.HasPrefix(rp, "nbd:") && !strings.HasPrefix(rp, "nbd://") {
		spec, err := parseDracutNBD(param, rp)
		if err != nil {
			return nil, err
		}
		return specRootPath(spec), nil
	}
	if scheme, rest, ok := strings.Cut(rp, "://"); ok {
		return parseNBDURI(rootPath, scheme, rest)
	}
	for _, s := range []string{"nfs:", "nfs4:", "iscsi:", "cifs:", "aoe:", "fcoe:", "http:", "https:", "tftp:", "ftp:"} {
		if strings.HasPrefix(rp, s) {
			return nil, perr(param, rootPath, "names a "+strings.TrimSuffix(s, ":")+" root, not an NBD one", formRootPath)
		}
	}
	if rp == "dhcp" {
		return nil, perr(param, rootPath, "a root-path cannot itself say dhcp", formRootPath)
	}
	spec, err := parseDebianNBD(param, rp)
	if err != nil {
		return nil, perr(param, rootPath, err.(*ParamError).Reason, formRootPath)
	}
	return specRootPath(spec), nil
}

// parseNBDURI parses nbd://HOST[:PORT][/EXPORT] (NBD doc/uri.md). The export is the
// percent-decoded path without its leading slash.
func parseNBDURI(rootPath, scheme, rest string) (*RootPath, error) {
	const param = "root-path"
	switch scheme {
	case "nbd":
	case "nbds", "nbd+unix", "nbds+unix", "nbd+vsock", "nbds+vsock":
		return nil, perr(param, rootPath, scheme+":// URIs are not supported (TLS and local sockets cannot carry a root from a PXE boot)", "nbd://HOST[:PORT][/NAME]")
	default:
		return nil, perr(param, rootPath, "names a "+scheme+" root, not an NBD one", formRootPath)
	}
	hostPort, path, _ := strings.Cut(rest, "/")
	if strings.ContainsAny(path, "?#") {
		return nil, perr(param, rootPath, "query and fragment are not supported", "nbd://HOST[:PORT][/NAME]")
	}
	srv, reason := parseServer(hostPort)
	if reason != "" {
		return nil, perr(param, rootPath, reason, "nbd://HOST[:PORT][/NAME]")
	}
	out := &RootPath{Host: srv.Host, Port: srv.Port, Servers: []Server{srv}}
	if path != "" {
		name, err := url.PathUnescape(path)
		if err != nil {
			return nil, perr(param, rootPath, "bad percent-encoding in the export name", "nbd://HOST[:PORT][/NAME]")
		}
		if r := checkExport(name); r != "" {
			return nil, perr(param, rootPath, r, "nbd://HOST[:PORT][/NAME]")
		}
		out.Export, out.HasExport = name, true
	}
	return out, nil
}

func specRootPath(s *nbdSpec) *RootPath {
	rp := &RootPath{Servers: s.servers, Export: s.export, HasExport: s.hasExport, Device: s.device,
		FSType: s.fstype, Flags: strings.Join(s.flags, ","), RW: s.rw, BlockSize: s.blockSize, Timeout: s.timeout}
	if len(s.servers) > 0 {
		rp.Host, rp.Port = s.servers[0].Host, s.servers[0].Port
	} else {
		rp.Port = s.port
	}
	return rp
}

// ServerSource says where the NBD server of a Target comes from.
type ServerSource int

// Where a Target's server comes from.
const (
	// ServerFromCmdline: a parameter named it (a dialect, or a static ip='s SERVER field).
	ServerFromCmdline ServerSource = iota
	// ServerFromRootPath: the DHCP root-path (option 17) named it.
	ServerFromRootPath
	// ServerFromDHCPServer: the root-path named none, so the boot server is used (siaddr,
	// else the DHCP server's identifier).
	ServerFromDHCPServer
	// ServerMissing: the command line leaves the server to DHCP and no DHCP answer was had.
	ServerMissing
)

// DHCP is what a DHCP answer says about the root.
type DHCP struct {
	// RootPath is option 17; it may be empty.
	RootPath string
	// ServerAddr is the boot server's address (siaddr/next-server, else option 54), used when
	// the root-path names no server; "" when the answer gave neither.
	ServerAddr string
}

// Target is the NBD connection and root filesystem a boot uses: the Plan's own, completed
// with the DHCP answer when the command line leaves the server to DHCP. The Plan itself is
// never changed (`nbdroot cmdline` shows what the command line says); the init keeps the
// Target in its State.
type Target struct {
	NBD  NBD
	Root Root
	// Server says where NBD's server comes from.
	Server ServerSource
	// Sources are the Plan's Sources with the fields the DHCP answer decided.
	Sources map[string]string
}

// Resolve returns the Plan's Target. A Plan whose server comes from DHCP (NBD.FromDHCP) is
// completed with d, the DHCP answer (nil when there was none: the Target then has no server
// and Server is ServerMissing).
//
// The command line keeps precedence: a port, export, device, file system type, flags or mode
// it set explicitly is kept; the root-path fills the rest. The result passes Validate's
// checks or the error says why, with root-path errors as *ParamError{Param: "root-path"}.
func (p *Plan) Resolve(d *DHCP) (*Target, error) {
	c := p.clone()
	src := ServerFromCmdline
	if c.NBD.FromDHCP && c.NBD.Host == "" {
		src = ServerMissing
		if d != nil {
			var err error
			if src, err = c.applyDHCP(d.RootPath, d.ServerAddr); err != nil {
				return nil, err
			}
		}
	}
	return &Target{NBD: c.NBD, Root: c.Root, Server: src, Sources: c.Sources}, nil
}

// clone copies what applyDHCP changes, so that the Plan it came from stays as parsed.
func (p *Plan) clone() *Plan {
	c := *p
	c.NBD.Servers = append([]Server(nil), p.NBD.Servers...)
	c.Sources = make(map[string]string, len(p.Sources))
	for k, v := range p.Sources {
		c.Sources[k] = v
	}
	return &c
}

// applyDHCP completes a plan (a clone) whose server comes from DHCP with what the lease said:
// rootPath is option 17 (may be empty) and serverAddr the address of the DHCP server, used
// when the root-path names no server. It returns where the server came from.
func (p *Plan) applyDHCP(rootPath, serverAddr string) (ServerSource, error) {
	n := &p.NBD
	rp, err := ParseRootPath(rootPath)
	if err != nil {
		return 0, err
	}
	src := "root-path=" + rootPath + " (DHCP option 17)"
	explicit := func(key string) bool {
		s, ok := p.Sources[key]
		return ok && !strings.HasPrefix(s, "default")
	}
	from := ServerFromRootPath
	switch {
	case len(rp.Servers) > 0:
		n.Servers = append([]Server(nil), rp.Servers...)
		p.Sources["nbd.host"] = src
		if explicit("nbd.port") {
			// The command line's port applies to the servers DHCP names.
			for i := range n.Servers {
				n.Servers[i].Port = n.Port
			}
		} else {
			p.Sources["nbd.port"] = src
		}
	case serverAddr == "":
		return ServerMissing, p.check(false)
	default:
		if r := checkHost(serverAddr); r != "" {
			return 0, perr("dhcp-server", serverAddr, r, "an IP address")
		}
		if rp.Port != 0 && !explicit("nbd.port") {
			n.Port = rp.Port
			p.Sources["nbd.port"] = src
		}
		n.Servers = []Server{{Host: serverAddr, Port: n.Port}}
		p.Sources["nbd.host"] = "DHCP server address " + serverAddr
		from = ServerFromDHCPServer
	}
	n.Host, n.Port = n.Servers[0].Host, n.Servers[0].Port
	if rp.HasExport && !explicit("nbd.export") {
		n.Export = rp.Export
		p.Sources["nbd.export"] = src
	}
	if rp.Device != "" && !explicit("nbd.device") {
		old := n.Device
		n.Device = rp.Device
		p.Sources["nbd.device"] = src
		if p.Root.Device == old && strings.HasSuffix(p.Sources["root.device"], "(the NBD device)") {
			p.Root.Device = rp.Device
		}
	}
	if rp.FSType != "" && !explicit("root.fstype") {
		p.Root.FSType = rp.FSType
		p.Sources["root.fstype"] = src
	}
	if rp.Flags != "" && !explicit("root.flags") {
		p.Root.Flags = rp.Flags
		p.Sources["root.flags"] = src
	}
	if rp.RW != nil && !explicit("root.rw") {
		p.Root.RW = *rp.RW
		p.Sources["root.rw"] = src
	}
	if rp.BlockSize != 0 && !explicit("nbd.block_size") {
		n.BlockSize = rp.BlockSize
		p.Sources["nbd.block_size"] = src
	}
	if rp.Timeout != 0 && !explicit("nbd.timeout") {
		n.Timeout = rp.Timeout
		p.Sources["nbd.timeout"] = src
	}
	return from, p.check(false)
}
