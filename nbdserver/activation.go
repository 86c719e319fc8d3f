package nbdserver

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
)

// ActivationListeners returns the listening sockets systemd passed to this process (socket
// activation, sd_listen_fds(3)): LISTEN_PID must name us and LISTEN_FDS counts descriptors
// from 3 on. The variables are removed so children do not inherit them. With no sockets
// passed it returns nil, nil.
func ActivationListeners() ([]net.Listener, error) {
	defer func() {
		os.Unsetenv("LISTEN_PID")
		os.Unsetenv("LISTEN_FDS")
		os.Unsetenv("LISTEN_FDNAMES")
	}()
	return activationListeners(os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES"), os.Getpid())
}

// listenFDsStart is SD_LISTEN_FDS_START.
const listenFDsStart = 3

func activationListeners(pidStr, fdsStr, namesStr string, pid int) ([]net.Listener, error) {
	if pidStr == "" || fdsStr == "" {
		return nil, nil
	}
	if p, err := strconv.Atoi(pidStr); err != nil || p != pid {
		// Meant for another process (e.g. our parent): not ours to take.
		return nil, nil
	}
	n, err := strconv.Atoi(fdsStr)
	if err != nil || n < 0 || n > 1024 {
		return nil, fmt.Errorf("socket activation: bad LISTEN_FDS %q", fdsStr)
	}
	names := strings.Split(namesStr, ":")
	var lns []net.Listener
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("LISTEN_FD_%d", listenFDsStart+i)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		f := os.NewFile(uintptr(listenFDsStart+i), name)
		ln, err := net.FileListener(f)
		f.Close() // FileListener dups the descriptor
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("socket activation: descriptor %d (%s): %w", listenFDsStart+i, name, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
