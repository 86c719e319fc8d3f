//go:build unix

package nbdserver

import "syscall"

// allocated is what the overlay's data takes on disk (its blocks, not its sparse size).
// It goes through the os.File, which is safe against a concurrent Close (status and
// metrics may ask while the overlay's last session ends).
func (o *overlay) allocated() int64 {
	if sm, ok := o.m.(*storeMedium); ok {
		return sm.allocated()
	}
	st, err := o.f.Stat()
	if err != nil {
		return 0
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return sys.Blocks * 512
	}
	return st.Size()
}
