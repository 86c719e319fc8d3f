package rescue

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/nbdroot/nbdroot/kmod"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func addPlatformApplets(m map[string]Applet) {
	m["mount"] = mount
	m["umount"] = umount
	m["dmesg"] = dmesg
	m["ip"] = ip
	m["lsmod"] = lsmod
	m["ps"] = ps
	m["modprobe"] = func(_ context.Context, args []string, _ IO) int { return kmod.Modprobe("/", args[1:]) }
	m["reboot"] = func(context.Context, []string, IO) int { return reboot(unix.LINUX_REBOOT_CMD_RESTART) }
	m["poweroff"] = func(context.Context, []string, IO) int { return reboot(unix.LINUX_REBOOT_CMD_POWER_OFF) }
}

func reboot(cmd int) int {
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		fmt.Fprintln(os.Stderr, "reboot:", err)
		return 1
	}
	return 0
}

// mountFlags are the mount(8) options that are flags rather than filesystem data.
var mountFlags = map[string]struct {
	set   uintptr
	clear bool
}{
	"ro": {unix.MS_RDONLY, false}, "rw": {unix.MS_RDONLY, true},
	"nosuid": {unix.MS_NOSUID, false}, "nodev": {unix.MS_NODEV, false}, "noexec": {unix.MS_NOEXEC, false},
	"remount": {unix.MS_REMOUNT, false}, "bind": {unix.MS_BIND, false}, "move": {unix.MS_MOVE, false},
	"sync": {unix.MS_SYNCHRONOUS, false}, "noatime": {unix.MS_NOATIME, false}, "relatime": {unix.MS_RELATIME, false},
	"defaults": {0, false},
}

func mount(_ context.Context, args []string, stdio IO) int {
	if len(args) == 1 {
		b, err := os.ReadFile("/proc/mounts")
		if err != nil {
			fmt.Fprintln(stdio.Err, "mount:", err)
			return 1
		}
		stdio.Out.Write(b)
		return 0
	}
	var fstype string
	var flags uintptr
	var data, pos []string
	for i := 1; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-t" && i+1 < len(args):
			i++
			fstype = args[i]
		case a == "-o" && i+1 < len(args):
			i++
			for _, o := range strings.Split(args[i], ",") {
				if f, ok := mountFlags[o]; ok {
					if f.clear {
						flags &^= f.set
					} else {
						flags |= f.set
					}
				} else if o != "" {
					data = append(data, o)
				}
			}
		case a == "-r":
			flags |= unix.MS_RDONLY
		case a == "--bind":
			flags |= unix.MS_BIND
		case a == "--move":
			flags |= unix.MS_MOVE
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		fmt.Fprintln(stdio.Err, "usage: mount [-t TYPE] [-o OPTIONS] [-r] SOURCE DIR")
		return 2
	}
	if err := unix.Mount(pos[0], abs(stdio, pos[1]), fstype, flags, strings.Join(data, ",")); err != nil {
		fmt.Fprintf(stdio.Err, "mount %s on %s: %v\n", pos[0], pos[1], err)
		return 1
	}
	return 0
}

func umount(_ context.Context, args []string, stdio IO) int {
	code := 0
	for _, p := range args[1:] {
		if strings.HasPrefix(p, "-") {
			continue
		}
		if err := unix.Unmount(abs(stdio, p), 0); err != nil {
			fmt.Fprintf(stdio.Err, "umount %s: %v\n", p, err)
			code = 1
		}
	}
	return code
}

var klogLevel = regexp.MustCompile(`(?m)^<\d+>`)

func dmesg(_ context.Context, _ []string, stdio IO) int {
	n, err := unix.Klogctl(unix.SYSLOG_ACTION_SIZE_BUFFER, nil)
	if err != nil || n <= 0 {
		n = 1 << 20
	}
	buf := make([]byte, n)
	m, err := unix.Klogctl(unix.SYSLOG_ACTION_READ_ALL, buf)
	if err != nil {
		fmt.Fprintln(stdio.Err, "dmesg:", err)
		return 1
	}
	stdio.Out.Write(klogLevel.ReplaceAll(buf[:m], nil))
	return 0
}

func lsmod(_ context.Context, _ []string, stdio IO) int {
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		fmt.Fprintln(stdio.Err, "lsmod:", err)
		return 1
	}
	fmt.Fprintf(stdio.Out, "%-24s %8s  %s\n", "Module", "Size", "Used by")
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 {
			fmt.Fprintf(stdio.Out, "%-24s %8s  %s %s\n", f[0], f[1], f[2], strings.TrimSuffix(strings.TrimSuffix(f[3], ","), "-"))
		}
	}
	return 0
}

func ps(_ context.Context, _ []string, stdio IO) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
	for _, d := range dirs {
		if n, err := strconv.Atoi(filepath.Base(d)); err == nil {
			pids = append(pids, n)
		}
	}
	sort.Ints(pids)
	fmt.Fprintf(stdio.Out, "%6s  %s\n", "PID", "COMMAND")
	for _, pid := range pids {
		cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		line := strings.TrimSpace(string(bytes.ReplaceAll(cmd, []byte{0}, []byte{' '})))
		if line == "" {
			comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			line = "[" + strings.TrimSpace(string(comm)) + "]"
		}
		fmt.Fprintf(stdio.Out, "%6d  %s\n", pid, line)
	}
	return 0
}

// ip is a small subset of iproute2: show addresses, links and routes; set links up or down;
// add an address or a route. Enough to repair the network by hand.
func ip(_ context.Context, args []string, stdio IO) int {
	usage := func() int {
		fmt.Fprintln(stdio.Err, "usage: ip addr|link|route [show]\n       ip link set DEV up|down\n       ip addr add ADDR/LEN dev DEV\n       ip route add default via GW [dev DEV]")
		return 2
	}
	a := args[1:]
	for len(a) > 0 && strings.HasPrefix(a[0], "-") {
		a = a[1:]
	}
	if len(a) == 0 {
		return usage()
	}
	obj, rest := a[0], a[1:]
	verb := "show"
	if len(rest) > 0 {
		verb, rest = rest[0], rest[1:]
	}
	fail := func(err error) int { fmt.Fprintln(stdio.Err, "ip:", err); return 1 }
	switch {
	case strings.HasPrefix("address", obj) && (verb == "show" || verb == "list" || verb == "ls"):
		links, err := netlink.LinkList()
		if err != nil {
			return fail(err)
		}
		for _, l := range links {
			printLink(stdio, l)
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
			for _, ad := range addrs {
				fam := "inet"
				if ad.IP.To4() == nil {
					fam = "inet6"
				}
				fmt.Fprintf(stdio.Out, "    %s %s\n", fam, ad.IPNet)
			}
		}
	case strings.HasPrefix("link", obj) && (verb == "show" || verb == "list" || verb == "ls"):
		links, err := netlink.LinkList()
		if err != nil {
			return fail(err)
		}
		for _, l := range links {
			printLink(stdio, l)
		}
	case strings.HasPrefix("link", obj) && verb == "set" && len(rest) == 2:
		l, err := netlink.LinkByName(rest[0])
		if err != nil {
			return fail(err)
		}
		switch rest[1] {
		case "up":
			err = netlink.LinkSetUp(l)
		case "down":
			err = netlink.LinkSetDown(l)
		default:
			return usage()
		}
		if err != nil {
			return fail(err)
		}
	case strings.HasPrefix("address", obj) && verb == "add" && len(rest) == 3 && rest[1] == "dev":
		addr, err := netlink.ParseAddr(rest[0])
		if err != nil {
			return fail(err)
		}
		l, err := netlink.LinkByName(rest[2])
		if err != nil {
			return fail(err)
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return fail(err)
		}
	case strings.HasPrefix("route", obj) && (verb == "show" || verb == "list" || verb == "ls"):
		routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
		if err != nil {
			return fail(err)
		}
		for _, r := range routes {
			dst := "default"
			if r.Dst != nil {
				dst = r.Dst.String()
			}
			dev := ""
			if l, err := netlink.LinkByIndex(r.LinkIndex); err == nil {
				dev = " dev " + l.Attrs().Name
			}
			via := ""
			if r.Gw != nil {
				via = " via " + r.Gw.String()
			}
			src := ""
			if r.Src != nil {
				src = " src " + r.Src.String()
			}
			fmt.Fprintf(stdio.Out, "%s%s%s%s\n", dst, via, dev, src)
		}
	case strings.HasPrefix("route", obj) && verb == "add" && len(rest) >= 3 && rest[0] == "default" && rest[1] == "via":
		gw := net.ParseIP(rest[2])
		if gw == nil {
			return fail(fmt.Errorf("bad gateway %q", rest[2]))
		}
		r := &netlink.Route{Gw: gw}
		if len(rest) == 5 && rest[3] == "dev" {
			l, err := netlink.LinkByName(rest[4])
			if err != nil {
				return fail(err)
			}
			r.LinkIndex = l.Attrs().Index
		}
		if err := netlink.RouteAdd(r); err != nil {
			return fail(err)
		}
	default:
		return usage()
	}
	return 0
}

func printLink(stdio IO, l netlink.Link) {
	a := l.Attrs()
	state := "DOWN"
	if a.RawFlags&unix.IFF_UP != 0 {
		state = "UP"
	}
	carrier := ""
	if a.RawFlags&unix.IFF_LOWER_UP != 0 {
		carrier = ",LOWER_UP"
	}
	fmt.Fprintf(stdio.Out, "%d: %s: <%s%s> mtu %d %s\n", a.Index, a.Name, state, carrier, a.MTU, a.HardwareAddr)
}
