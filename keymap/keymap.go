// Package keymap reads Linux console keymaps — kbd's text format, as loadkeys reads it:
// keymaps lines, keycode lines with modifiers, keysym names and U+ code points, includes,
// compose definitions and function key strings — and compiles them at build time into a
// small table the init loads into the kernel with the KDSKBENT, KDSKBDIACRUC and KDSKBSENT
// ioctls before it asks for a passphrase, exactly as `loadkeys -u` would have loaded it.
//
// The keymap comes from the client's root (KEYMAP= of /etc/vconsole.conf, or Debian's
// console-setup cache), so the image carries neither kbd nor keymap files; the compiled
// table is a few kilobytes. Parse takes its input from the user's files: it bounds every
// number, string and include depth, and reports errors with file and line.
//
// Values are those the kernel's KDSKBENT takes (include/uapi/linux/keyboard.h): K(type,
// value) for the classic key types, a Unicode code point XOR 0xf000 for a character, which
// a keyboard in Unicode mode (K_UNICODE, the kernel's default) accepts.
package keymap

// Key types (include/uapi/linux/keyboard.h): a key's action is K(type, value).
const (
	ktLatin  = 0
	ktFn     = 1
	ktSpec   = 2
	ktPad    = 3
	ktDead   = 4
	ktCons   = 5
	ktCur    = 6
	ktShift  = 7
	ktMeta   = 8
	ktASCII  = 9
	ktLock   = 10
	ktLetter = 11
	ktSLock  = 12
	ktDead2  = 13
	ktBrl    = 14
)

// k makes a key action from a type and a value.
func k(typ, val int) int { return typ<<8 | val }

// ktyp and kval split a key action.
func ktyp(v int) int { return v >> 8 }
func kval(v int) int { return v & 0xff }

// Kernel limits (include/uapi/linux/keyboard.h, kd.h).
const (
	// NRKeys is the number of keycodes a table has (NR_KEYS).
	NRKeys = 256
	// MaxTables is the number of modifier combinations, one table each (MAX_NR_KEYMAPS).
	MaxTables = 256
	// MaxFuncs is the number of function key strings (MAX_NR_FUNC).
	MaxFuncs = 256
	// MaxDiacr is the size of the compose table (MAX_DIACR).
	MaxDiacr = 256
	// MaxFuncLen bounds a function key string with its NUL (kbsentry.kb_string).
	MaxFuncLen = 512
)

// Special actions.
const (
	// Hole is K_HOLE, a key that does nothing.
	Hole = ktSpec << 8
	// NoSuchMap is K_NOSUCHMAP: given for key 0 of a table, it deallocates the table.
	NoSuchMap = ktSpec<<8 | 127
)

// Modifier bits: a table's index is the sum of the modifiers held (KG_SHIFT…).
const (
	modShift     = 1 << 0
	modAltGr     = 1 << 1
	modCtrl      = 1 << 2
	modAlt       = 1 << 3
	modShiftL    = 1 << 4
	modShiftR    = 1 << 5
	modCtrlL     = 1 << 6
	modCtrlR     = 1 << 7
	modCapsShift = 1 << 8
)

// Entry is one key action of a table.
type Entry struct {
	Table, Key uint8
	Value      uint16
}

// Diacr is one compose definition: Diacr then Base gives Result (Unicode code points).
type Diacr struct {
	Diacr, Base, Result uint32
}

// Func is a function key's string (KDSKBSENT).
type Func struct {
	Index  uint8
	String string
}

// Keymap is a compiled keymap: what loadkeys would load into the kernel.
type Keymap struct {
	// Name says where it came from ("de-latin1", a file name), for messages.
	Name string
	// Entries are the key actions the keymap sets, by table and key; keys it leaves out
	// keep the kernel's action.
	Entries []Entry
	// Tables are the tables the keymap defines; with Deallocate the kernel's others are
	// removed (a keymaps line lists every table the keymap wants).
	Tables     []uint8
	Deallocate bool
	// Diacrs replace the kernel's compose table when there are any.
	Diacrs []Diacr
	// Funcs are function key strings to set.
	Funcs []Func
}
