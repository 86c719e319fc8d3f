package dhcpclient

import (
	"bufio"
	"bytes"
	"io/fs"
	"net"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// HandoffFile is the file (under /run/nbdroot, with the interface's name) whose existence
// tells the Renewer that something else renews the lease now: the explicit hand-off for a
// network manager Managers does not recognise.
func HandoffFile(iface string) string { return "/run/nbdroot/net-" + iface + ".handoff" }

// Managers finds the booted system's network manager once it renews the lease of one
// interface itself. It reads the booted system's files through Root (PID 1's root directory:
// the Renewer runs in a process whose own root is the initramfs), and recognises:
//
//   - systemd-networkd: its lease file /run/systemd/netif/leases/IFINDEX, written when it
//     holds a DHCPv4 lease for the link;
//   - NetworkManager: its lease file NAME-UUID-IFACE.lease (internal client or dhclient) in
//     /run/NetworkManager (not the one the init seeds, NMSeedLeaseHeader), or one in /var/lib/NetworkManager written during this boot — new
//     or changed since the Renewer first saw the booted root (the root's image may carry
//     stale ones);
//   - ifupdown and other DHCP clients: the pid file of a running dhclient (ifupdown's
//     /run/dhclient.IFACE.pid, NetworkManager's /run/NetworkManager/dhclient-IFACE.pid),
//     dhcpcd or udhcpc;
//   - the explicit hand-off: HandoffFile(IFACE).
//
// A manager that leases another address than the Renewer's is reported by Owner.Address.
type Managers struct {
	// Root returns the booted system's root directory and an identity that changes when
	// PID 1's root does (at switch_root).
	Root func() (fs.FS, string, error)
	// Alive reports whether a process runs.
	Alive func(pid int) bool
	// Interface returns the interface's current name and index.
	Interface func() (name string, index int, err error)

	rootID   string
	baseline map[string]stamp
}

// stamp is what identifies a version of a file.
type stamp struct {
	mod  time.Time
	size int64
}

// NMSeedLeaseHeader starts the NetworkManager lease file the init writes in
// /run/NetworkManager (hooks, nmFiles) so that NetworkManager asks for the root's address
// again. Managers does not take such a file for NetworkManager's own lease: NetworkManager
// rewrites the file without this line once the server has acknowledged its request.
const NMSeedLeaseHeader = "# written by nbdroot-init: the initramfs's lease, not yet renewed by NetworkManager\n"

// nmStateDir is NetworkManager's persistent state directory (NMSTATEDIR); nmRunDir its
// runtime directory (NMRUNDIR), which it prefers for lease files when one exists there.
const (
	nmStateDir = "var/lib/NetworkManager"
	nmRunDir   = "run/NetworkManager"
)

// Detect implements Detector.
func (m *Managers) Detect() (Owner, bool) {
	root, id, err := m.Root()
	if err != nil {
		return Owner{}, false
	}
	name, index, err := m.Interface()
	if err != nil {
		return Owner{}, false
	}
	if id != m.rootID {
		// First look at this root: the NetworkManager lease files already in its state
		// directory were not written for this boot's lease.
		m.rootID = id
		m.baseline = map[string]stamp{}
		for _, p := range nmLeaseFiles(root, nmStateDir, name) {
			if st, ok := stampOf(root, p); ok {
				m.baseline[p] = st
			}
		}
	}
	if f := strings.TrimPrefix(HandoffFile(name), "/"); exists(root, f) {
		return Owner{Manager: "the administrator", Evidence: "/" + f}, true
	}
	if f := "run/systemd/netif/leases/" + strconv.Itoa(index); exists(root, f) {
		return Owner{Manager: "systemd-networkd", Evidence: "/" + f, Address: envAddress(root, f)}, true
	}
	for _, p := range nmLeaseFiles(root, nmRunDir, name) {
		if b, err := fs.ReadFile(root, p); err == nil && !bytes.HasPrefix(b, []byte(NMSeedLeaseHeader)) {
			return Owner{Manager: "NetworkManager", Evidence: "/" + p, Address: leaseAddress(root, p)}, true
		}
	}
	for _, p := range nmLeaseFiles(root, nmStateDir, name) {
		if st, ok := stampOf(root, p); ok && st != m.baseline[p] {
			return Owner{Manager: "NetworkManager", Evidence: "/" + p, Address: leaseAddress(root, p)}, true
		}
	}
	for _, c := range []struct{ manager, pidfile, lease string }{
		{"dhclient (ifupdown)", "run/dhclient." + name + ".pid", "var/lib/dhcp/dhclient." + name + ".leases"},
		{"NetworkManager (dhclient)", nmRunDir + "/dhclient-" + name + ".pid", ""},
		{"dhcpcd", "run/dhcpcd/" + name + "-4.pid", ""},
		{"dhcpcd", "run/dhcpcd/" + name + ".pid", ""},
		{"dhcpcd", "run/dhcpcd-" + name + ".pid", ""},
		{"udhcpc", "run/udhcpc." + name + ".pid", ""},
	} {
		pid, ok := readPid(root, c.pidfile)
		if !ok || !m.Alive(pid) {
			continue
		}
		o := Owner{Manager: c.manager, Evidence: "/" + c.pidfile + " (pid " + strconv.Itoa(pid) + ")"}
		if c.lease != "" {
			o.Address = leaseAddress(root, c.lease)
		}
		return o, true
	}
	return Owner{}, false
}

// nmLeaseFiles lists NetworkManager's IPv4 lease files of iface in dir: PLUGIN-UUID-IFACE.lease
// (nm_dhcp_utils_get_leasefile_path; IPv6 ones are PLUGIN6-…).
func nmLeaseFiles(root fs.FS, dir, iface string) []string {
	var out []string
	for _, plugin := range []string{"internal", "dhclient"} {
		matches, _ := fs.Glob(root, path.Join(dir, plugin+"-*-"+globEscape(iface)+".lease"))
		out = append(out, matches...)
	}
	return out
}

// globEscape quotes the characters fs.Glob treats specially.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func exists(root fs.FS, name string) bool {
	_, err := fs.Stat(root, name)
	return err == nil
}

func stampOf(root fs.FS, name string) (stamp, bool) {
	fi, err := fs.Stat(root, name)
	if err != nil {
		return stamp{}, false
	}
	return stamp{fi.ModTime(), fi.Size()}, true
}

// readPid reads a pid file: a decimal number, optionally followed by a newline.
func readPid(root fs.FS, name string) (int, bool) {
	b, err := fs.ReadFile(root, name)
	if err != nil || len(b) > 32 {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid, err == nil && pid > 0
}

// leaseAddress is the address a lease file holds: ADDRESS= (systemd-networkd and
// NetworkManager's internal client) or dhclient's last "fixed-address A;".
func leaseAddress(root fs.FS, name string) net.IP {
	if ip := envAddress(root, name); ip != nil {
		return ip
	}
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return nil
	}
	m := fixedAddress.FindAllSubmatch(b, -1)
	if len(m) == 0 {
		return nil
	}
	return net.ParseIP(string(m[len(m)-1][1])).To4()
}

var fixedAddress = regexp.MustCompile(`fixed-address\s+([0-9.]+);`)

// envAddress reads ADDRESS=A from a KEY=VALUE file.
func envAddress(root fs.FS, name string) net.IP {
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "ADDRESS="); ok {
			return net.ParseIP(strings.Trim(v, `"'`)).To4()
		}
	}
	return nil
}
