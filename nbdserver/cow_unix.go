//go:build unix

package nbdserver

import "syscall"

// allocated is what the overlay's data takes on disk (its blocks, not its sparse size).
func (o *overlay) allocated() int64 {
	var st syscall.Stat_t
	if err := syscall.Fstat(o.fd, &st); err != nil {
		return 0
	}
	return int64(st.Blocks) * 512
}
