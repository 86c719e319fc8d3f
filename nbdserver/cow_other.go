//go:build !unix

package nbdserver

// allocated is what the overlay's data takes on disk; here, its size.
func (o *overlay) allocated() int64 {
	if sm, ok := o.m.(*storeMedium); ok {
		return sm.allocated()
	}
	st, err := o.f.Stat()
	if err != nil {
		return 0
	}
	return st.Size()
}
