//go:build linux

package netlab

import (
	"net"
	"testing"

	"github.com/nbdroot/nbdroot/test/vm"
)

// StartNBDServer runs `bin serve --listen ServerIP:0 args…` inside the lab (ip netns exec)
// and waits until it listens. The test's cleanup stops it.
func (l *Lab) StartNBDServer(t testing.TB, bin string, args ...string) *vm.Server {
	t.Helper()
	return l.StartNBDServerOn(t, bin, ServerIP, args...)
}

// StartNBDServerOn is StartNBDServer listening on host (ServerIP, or ServerIP6 after
// AddIPv6).
func (l *Lab) StartNBDServerOn(t testing.TB, bin, host string, args ...string) *vm.Server {
	t.Helper()
	argv := append([]string{"ip", "netns", "exec", l.Name, bin, "serve", "--listen", net.JoinHostPort(host, "0")}, args...)
	return vm.StartServerCommand(t, argv)
}
