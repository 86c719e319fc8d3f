package hooks

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	"github.com/nbdroot/nbdroot/keymap"
	"golang.org/x/sys/unix"
)

// activeConsoles lists the terminals the kernel prints its console on
// (/sys/class/tty/console/active: "tty0 ttyS0"), as /dev paths; /dev/console when unknown.
func activeConsoles() []string {
	b, err := os.ReadFile("/sys/class/tty/console/active")
	var out []string
	if err == nil {
		for _, name := range strings.Fields(string(b)) {
			out = append(out, "/dev/"+name)
		}
	}
	if len(out) == 0 {
		out = []string{"/dev/console"}
	}
	return out
}

// AskPassphrase asks on every active console (a thin client may have a screen and a serial
// line; whoever answers first wins), with echo off, and returns the line typed without its
// newline. The caller wipes it.
func (linuxConsole) AskPassphrase(ctx context.Context, prompt string) ([]byte, error) {
	type answer struct {
		line []byte
		err  error
	}
	var ttys []*os.File
	for _, path := range activeConsoles() {
		f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			continue
		}
		ttys = append(ttys, f)
	}
	if len(ttys) == 0 {
		return nil, errors.New("no console to ask the passphrase on")
	}
	answers := make(chan answer, len(ttys))
	var restore []func()
	for _, tty := range ttys {
		// Through SyscallConn, not Fd: Fd puts the file in blocking mode, and a blocked
		// read() is not ended by Close — with a screen and a serial line, the console
		// nobody typed on would keep AskPassphrase waiting forever.
		rc, err := tty.SyscallConn()
		if err == nil {
			rc.Control(func(fd uintptr) {
				t, err := unix.IoctlGetTermios(int(fd), unix.TCGETS)
				if err != nil {
					return
				}
				saved := *t
				t.Lflag &^= unix.ECHO
				t.Lflag |= unix.ICANON
				if unix.IoctlSetTermios(int(fd), unix.TCSETS, t) == nil {
					restore = append(restore, func() {
						rc.Control(func(fd uintptr) { unix.IoctlSetTermios(int(fd), unix.TCSETS, &saved) })
					})
				}
			})
		}
		fmt.Fprint(tty, prompt)
	}
	var wg sync.WaitGroup
	for _, tty := range ttys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			line, err := bufio.NewReaderSize(tty, 512).ReadSlice('\n')
			// Copy out of the reader's buffer: the caller owns and wipes the result.
			answers <- answer{append([]byte(nil), line...), err}
			clear(line)
		}()
	}
	defer func() {
		for _, r := range restore {
			r()
		}
		// Closing the other consoles ends their pending reads.
		for _, tty := range ttys {
			tty.Close()
		}
		wg.Wait()
	}()
	var last error
	for range ttys {
		select {
		case a := <-answers:
			if a.err == nil {
				for _, tty := range ttys {
					fmt.Fprint(tty, "\n")
				}
				return trimNewline(a.line), nil
			}
			last = a.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return nil, fmt.Errorf("read the passphrase: %w", last)
}

// LoadKeymap loads km through /dev/tty0, the current virtual terminal: the keyboard tables
// are shared by every VT. A kernel without VTs has no /dev/tty0 and no keymap to load.
func (linuxConsole) LoadKeymap(km *keymap.Keymap) (keymap.Applied, error) {
	vt, err := keymap.OpenVT("/dev/tty0")
	if err != nil {
		return keymap.Applied{}, err
	}
	defer vt.Close()
	return km.Apply(vt)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
