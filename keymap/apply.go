package keymap

import (
	"errors"
	"fmt"
	"syscall"
)

// Keyboard modes (KDGKBMODE/KDSKBMODE).
const (
	ModeXlate   = 1 // K_XLATE: 8-bit characters
	ModeUnicode = 3 // K_UNICODE: UTF-8, the kernel's default (vt.default_utf8=1)
)

// Device is the keyboard of a virtual terminal, as the keymap ioctls reach it: the
// KDSKBENT, KDSKBDIACRUC and KDSKBSENT ioctls on /dev/tty0 change the tables every VT
// shares. The real one is OpenVT (Linux); tests use a fake.
type Device interface {
	// Mode and SetMode get and set the VT's keyboard mode (KDGKBMODE, KDSKBMODE).
	Mode() (int, error)
	SetMode(mode int) error
	// SetEntry sets one key action (KDSKBENT); NoSuchMap for key 0 deallocates a table.
	SetEntry(table, key uint8, value uint16) error
	// SetDiacrs replaces the compose table (KDSKBDIACRUC).
	SetDiacrs(d []Diacr) error
	// SetFunc sets a function key's string (KDSKBSENT).
	SetFunc(index uint8, s string) error
}

// Applied says what Apply changed.
type Applied struct {
	Keys, Deallocated, Diacrs, Funcs int
}

func (a Applied) String() string {
	return fmt.Sprintf("%d keys, %d tables removed, %d compose definitions, %d strings", a.Keys, a.Deallocated, a.Diacrs, a.Funcs)
}

// Apply loads km into the kernel through dev the way `loadkeys -u` does: the keyboard is
// put in Unicode mode while the keys are defined (the kernel accepts Unicode actions only
// then) and returned to its mode after; each key the keymap sets, the tables it does not
// define removed when it says which it defines; its compose table and strings. A key the
// kernel refuses does not stop the others: the errors come back joined, with what was
// applied.
func (km *Keymap) Apply(dev Device) (a Applied, err error) {
	var errs []error
	mode, merr := dev.Mode()
	if merr != nil {
		return a, fmt.Errorf("KDGKBMODE: %w", merr)
	}
	if mode != ModeUnicode {
		if err := dev.SetMode(ModeUnicode); err != nil {
			return a, fmt.Errorf("KDSKBMODE: could not switch to Unicode mode: %w", err)
		}
		defer func() {
			if rerr := dev.SetMode(mode); rerr != nil {
				err = errors.Join(err, fmt.Errorf("KDSKBMODE: could not return to mode %d: %w", mode, rerr))
			}
		}()
	}
	defined := [MaxTables]bool{}
	for _, t := range km.Tables {
		defined[t] = true
	}
	for _, e := range km.Entries {
		if err := dev.SetEntry(e.Table, e.Key, e.Value); err != nil {
			errs = append(errs, fmt.Errorf("table %d key %d = %#x: %w", e.Table, e.Key, e.Value, err))
			continue
		}
		a.Keys++
	}
	if km.Deallocate {
		for t := 0; t < MaxTables; t++ {
			if defined[t] {
				continue
			}
			err := dev.SetEntry(uint8(t), 0, NoSuchMap)
			if errors.Is(err, syscall.EINVAL) {
				// A kernel that cannot deallocate: clear the table by hand, as loadkeys does.
				err = nil
				for key := 0; key < NRKeys; key++ {
					if e := dev.SetEntry(uint8(t), uint8(key), Hole); e != nil {
						err = e
						break
					}
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("remove table %d: %w", t, err))
				continue
			}
			a.Deallocated++
		}
	}
	for _, f := range km.Funcs {
		if err := dev.SetFunc(f.Index, f.String); err != nil {
			errs = append(errs, fmt.Errorf("string of function %d: %w", f.Index, err))
			continue
		}
		a.Funcs++
	}
	if len(km.Diacrs) > 0 {
		if err := dev.SetDiacrs(km.Diacrs); err != nil {
			errs = append(errs, fmt.Errorf("KDSKBDIACRUC: %w", err))
		} else {
			a.Diacrs = len(km.Diacrs)
		}
	}
	return a, errors.Join(errs...)
}
