package nbdclient

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"github.com/nbdroot/nbdroot/nbdclient/ktls"
)

// Relays runs the TLS relays of one device's connections, in the keeper: where the
// kernel cannot protect the records itself, each relayed connection's kernel socket is one
// end of a socket pair, and a ktls.Relay carries its bytes to and from the server.
type Relays struct {
	// Logf hears when a relay ends and why.
	Logf func(level Level, format string, args ...any)
	// Device names the device in messages ("nbd0").
	Device string
	// Ended, when set, receives a value (without blocking) whenever a relay ends: the
	// keeper then checks at once whether the device was disconnected.
	Ended chan<- struct{}

	mu      sync.Mutex
	running int
	started int
}

// Running returns the number of relays running.
func (rs *Relays) Running() int {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return rs.running
}

// Start returns the files the kernel gets for socks, one each, which the caller closes
// once the kernel holds them (as it closes socks): a duplicate of the socket where states
// has no record layer for it, else one end of a new socket pair whose other end a new
// relay connects to the socket, continuing the state. A relay lives until either side
// closes: when the kernel drops the socket (a reconfigure replaced it, the device was
// disconnected) or the server goes away (the kernel then sees its socket fail).
func (rs *Relays) Start(socks []*os.File, states []*ktls.State) ([]*os.File, error) {
	files := make([]*os.File, 0, len(socks))
	fail := func(err error) ([]*os.File, error) {
		CloseFiles(files) // relays already started end with their kernel ends
		return nil, err
	}
	for i, sock := range socks {
		if i >= len(states) || states[i] == nil {
			f, err := dupFile(sock)
			if err != nil {
				return fail(err)
			}
			files = append(files, f)
			continue
		}
		kernelEnd, relayEnd, err := socketPair()
		if err != nil {
			return fail(err)
		}
		files = append(files, kernelEnd)
		plain, err := net.FileConn(relayEnd)
		relayEnd.Close()
		if err != nil {
			return fail(err)
		}
		wire, err := net.FileConn(sock)
		if err != nil {
			plain.Close()
			return fail(err)
		}
		r, err := newRelay(plain, wire, *states[i])
		if err != nil {
			plain.Close()
			wire.Close()
			return fail(err)
		}
		rs.mu.Lock()
		rs.running++
		rs.started++
		n := rs.started
		rs.mu.Unlock()
		go rs.run(n, r)
	}
	return files, nil
}

func (rs *Relays) run(n int, r interface{ Run() error }) {
	err := r.Run()
	rs.mu.Lock()
	rs.running--
	rs.mu.Unlock()
	if rs.Logf != nil {
		level := LevelWarning
		if errors.Is(err, ktls.ErrClosed) {
			level = LevelInfo
		}
		rs.Logf(level, "%s: TLS relay %d ended: %v", rs.Device, n, err)
	}
	if rs.Ended != nil {
		select {
		case rs.Ended <- struct{}{}:
		default:
		}
	}
}

// dupFile duplicates a descriptor into a file of its own.
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nf *os.File
	var derr error
	if err := rc.Control(func(fd uintptr) { nf, derr = dupFD(int(fd), f.Name()) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup %s: %w", f.Name(), derr)
	}
	return nf, nil
}
