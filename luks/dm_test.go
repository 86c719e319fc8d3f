package luks

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDMMessageLayout checks the DM_TABLE_LOAD buffer byte for byte against a layout
// written out by hand from include/uapi/linux/dm-ioctl.h.
func TestDMMessageLayout(t *testing.T) {
	params := []byte("aes-xts-plain64 0011 0 /dev/nbd0 32768") // 38 bytes
	got, err := dmMessage("nbdcrypt", "CRYPT-LUKS2-abc-nbdcrypt", dmSecureDataFlag|dmReadOnlyFlag,
		[]dmTarget{{start: 0, length: 1 << 20, targetType: "crypt", params: params}})
	if err != nil {
		t.Fatal(err)
	}
	// struct dm_target_spec is 40 bytes; params + NUL = 39; 79 rounds up to 80.
	const recLen = 80
	want := make([]byte, 312+recLen)
	ne := binary.NativeEndian
	ne.PutUint32(want[0:], 4)                    // version[0]
	ne.PutUint32(want[4:], 0)                    // version[1]
	ne.PutUint32(want[8:], 0)                    // version[2]
	ne.PutUint32(want[12:], 312+recLen)          // data_size
	ne.PutUint32(want[16:], 312)                 // data_start
	ne.PutUint32(want[20:], 1)                   // target_count
	ne.PutUint32(want[24:], 0)                   // open_count
	ne.PutUint32(want[28:], 1<<15|1)             // flags: DM_SECURE_DATA_FLAG|DM_READONLY_FLAG
	ne.PutUint32(want[32:], 0)                   // event_nr
	ne.PutUint64(want[40:], 0)                   // dev
	copy(want[48:], "nbdcrypt")                  // name[128]
	copy(want[176:], "CRYPT-LUKS2-abc-nbdcrypt") // uuid[129], then data[7] up to 312
	spec := want[312:]
	ne.PutUint64(spec[0:], 0)       // sector_start
	ne.PutUint64(spec[8:], 1<<20)   // length
	ne.PutUint32(spec[16:], 0)      // status
	ne.PutUint32(spec[20:], recLen) // next: from this spec to the next
	copy(spec[24:], "crypt")        // target_type[16]
	copy(spec[40:], params)         // params, NUL, zero padding to 8
	if !bytes.Equal(got, want) {
		t.Fatalf("DM_TABLE_LOAD buffer differs:\n got %s\nwant %s", hex.EncodeToString(got), hex.EncodeToString(want))
	}
}

func TestDMMessageTwoTargetsAligned(t *testing.T) {
	buf, err := dmMessage("x", "", 0, []dmTarget{
		{start: 0, length: 8, targetType: "zero", params: nil},
		{start: 8, length: 8, targetType: "error", params: []byte("abcdefgh")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ne := binary.NativeEndian
	first := buf[312:]
	next := ne.Uint32(first[20:])
	if next != 48 { // 40 + 1 (empty params, NUL) → 48
		t.Errorf("first next = %d, want 48", next)
	}
	second := first[next:]
	if got := ne.Uint32(second[20:]); got != 56 { // 40 + 9 → 56
		t.Errorf("second next = %d, want 56", got)
	}
	if got := cString(second[24:40]); got != "error" {
		t.Errorf("second target type = %q", got)
	}
	if len(buf) != 312+48+56 || int(ne.Uint32(buf[12:])) != len(buf) {
		t.Errorf("buffer of %d bytes, data_size %d", len(buf), ne.Uint32(buf[12:]))
	}
	if len(buf)%8 != 0 {
		t.Errorf("buffer of %d bytes is not 8-byte aligned", len(buf))
	}
}

func TestDMNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "control", "a/b", "sp ace", strings.Repeat("n", 128), "tab\t"} {
		if _, err := dmMessage(name, "", 0, nil); err == nil {
			t.Errorf("dmMessage(%q) accepted the name", name)
		}
	}
	for _, name := range []string{"nbdcrypt", "root_crypt", "luks-0a1b", strings.Repeat("n", 127)} {
		if _, err := dmMessage(name, "", 0, nil); err != nil {
			t.Errorf("dmMessage(%q): %v", name, err)
		}
	}
	if _, err := dmMessage("x", strings.Repeat("u", 129), 0, nil); err == nil {
		t.Error("129-byte uuid accepted")
	}
}

func TestDMDecodeDev(t *testing.T) {
	tests := []struct {
		dev          uint64
		major, minor uint32
	}{
		{0xfd00, 253, 0},
		{0xfd01, 253, 1},
		{0x10fd2c, 253, 300}, // minor 300: low byte 0x2c, high part 0x100 << 12
		{0x0700, 7, 0},
		{0xfff00 | 0xff | 0xfff00<<12, 0xfff, 0xfffff},
	}
	for _, tc := range tests {
		ma, mi := dmDecodeDev(tc.dev)
		if ma != tc.major || mi != tc.minor {
			t.Errorf("dmDecodeDev(%#x) = %d:%d, want %d:%d", tc.dev, ma, mi, tc.major, tc.minor)
		}
	}
}

// fakeDM records the ioctls it receives, answers DM_DEV_CREATE with a device number like
// the kernel's, and fails the command named in fail.
type fakeDM struct {
	calls   []fakeCall
	bufs    [][]byte // the caller's buffers, to check they are wiped afterwards
	fail    dmCmd
	failErr error
	dev     uint64
}

type fakeCall struct {
	Cmd   string
	Name  string
	UUID  string
	Flags uint32
	// Target is "type start length params" of the first target of a table load.
	Target string
}

func (f *fakeDM) ioctl(cmd dmCmd, buf []byte) error {
	ne := binary.NativeEndian
	c := fakeCall{
		Cmd:   cmd.String(),
		Name:  cString(buf[dmOffName : dmOffName+dmNameLen]),
		UUID:  cString(buf[dmOffUUID : dmOffUUID+dmUUIDLen]),
		Flags: ne.Uint32(buf[dmOffFlags:]),
	}
	if ne.Uint32(buf[dmOffTargetCount:]) > 0 {
		spec := buf[ne.Uint32(buf[dmOffDataStart:]):]
		c.Target = fmt.Sprintf("%s %d %d %s", cString(spec[24:40]), ne.Uint64(spec[0:]), ne.Uint64(spec[8:]), cString(spec[40:]))
	}
	f.calls = append(f.calls, c)
	f.bufs = append(f.bufs, buf)
	if f.failErr != nil && cmd == f.fail {
		return f.failErr
	}
	if cmd == dmDevCreate {
		ne.PutUint64(buf[dmOffDev:], f.dev)
	}
	return nil
}

type fakeNodes struct {
	existing map[string]bool
	made     []string
	mknodErr error
}

func (n *fakeNodes) mknod(path string, major, minor uint32) error {
	if n.mknodErr != nil {
		return n.mknodErr
	}
	n.made = append(n.made, fmt.Sprintf("%s %d:%d", path, major, minor))
	n.existing[path] = true
	return nil
}
func (n *fakeNodes) exists(path string) bool { return n.existing[path] }
func (n *fakeNodes) remove(path string) error {
	delete(n.existing, path)
	return nil
}

func testTable() *Table {
	return &Table{
		Length: 65536, Cipher: "aes-xts-plain64", Key: bytes.Repeat([]byte{0xab}, 64),
		Device: "/dev/nbd0", Offset: 32768, SectorSize: 4096,
		Flags: []string{"allow_discards"}, UUIDPrefix: "CRYPT-LUKS2-0123abcd",
	}
}

func TestActivateSequence(t *testing.T) {
	ctl := &fakeDM{dev: 0x10fd2c}
	nodes := &fakeNodes{existing: map[string]bool{}}
	c := &dmClient{ctl: ctl, nodes: nodes, devDir: "/dev/mapper"}
	path, err := c.activate("nbdcrypt", testTable())
	if err != nil {
		t.Fatal(err)
	}
	if path != "/dev/mapper/nbdcrypt" {
		t.Errorf("path = %q", path)
	}
	key := strings.Repeat("ab", 64)
	want := []fakeCall{
		{Cmd: "DM_DEV_CREATE", Name: "nbdcrypt", UUID: "CRYPT-LUKS2-0123abcd-nbdcrypt"},
		{Cmd: "DM_TABLE_LOAD", Name: "nbdcrypt", Flags: dmSecureDataFlag,
			Target: "crypt 0 65536 aes-xts-plain64 " + key + " 0 /dev/nbd0 32768 2 allow_discards sector_size:4096"},
		{Cmd: "DM_DEV_SUSPEND", Name: "nbdcrypt"},
	}
	if diff := cmp.Diff(want, ctl.calls); diff != "" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"/dev/mapper/nbdcrypt 253:300"}, nodes.made); diff != "" {
		t.Errorf("mknod (-want +got):\n%s", diff)
	}
	// The table load buffer held the key in hex: it must be zero now.
	if !allZero(ctl.bufs[1]) {
		t.Error("DM_TABLE_LOAD buffer not wiped after the ioctl")
	}
}

func TestActivateReadOnlyNodeExists(t *testing.T) {
	ctl := &fakeDM{dev: 0xfd00}
	nodes := &fakeNodes{existing: map[string]bool{"/dev/mapper/r": true}}
	c := &dmClient{ctl: ctl, nodes: nodes, devDir: "/dev/mapper"}
	tb := testTable()
	tb.ReadOnly = true
	tb.UUIDPrefix = ""
	if _, err := c.activate("r", tb); err != nil {
		t.Fatal(err)
	}
	if ctl.calls[1].Flags != dmSecureDataFlag|dmReadOnlyFlag {
		t.Errorf("load flags = %#x", ctl.calls[1].Flags)
	}
	if ctl.calls[0].UUID != "" {
		t.Errorf("uuid = %q, want none", ctl.calls[0].UUID)
	}
	if len(nodes.made) != 0 {
		t.Errorf("mknod called although udev made the node: %v", nodes.made)
	}
}

func TestActivateFailureCleansUp(t *testing.T) {
	tests := []struct {
		name     string
		fail     dmCmd
		mknodErr error
		wantCmds []string
		wantErr  string
	}{
		{"create busy", dmDevCreate, nil, []string{"DM_DEV_CREATE"}, "exists already"},
		{"load fails", dmTableLoad, nil, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_REMOVE"}, "loading the crypt table"},
		{"resume fails", dmDevSuspend, nil, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_SUSPEND", "DM_DEV_REMOVE"}, "resuming"},
		{"mknod fails", -1, syscall.EROFS, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_SUSPEND", "DM_DEV_REMOVE"}, "creating /dev/mapper/n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctl := &fakeDM{dev: 0xfd00, fail: tc.fail, failErr: syscall.EBUSY}
			if tc.fail < 0 {
				ctl.failErr = nil
			}
			c := &dmClient{ctl: ctl, nodes: &fakeNodes{existing: map[string]bool{}, mknodErr: tc.mknodErr}, devDir: "/dev/mapper"}
			_, err := c.activate("n", testTable())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
			var got []string
			for _, call := range ctl.calls {
				got = append(got, call.Cmd)
			}
			if diff := cmp.Diff(tc.wantCmds, got); diff != "" {
				t.Errorf("ioctls (-want +got):\n%s", diff)
			}
			if strings.Contains(err.Error(), strings.Repeat("ab", 8)) {
				t.Errorf("error leaks the key: %v", err)
			}
		})
	}
}

func TestActivateRefusesBadTables(t *testing.T) {
	for name, mutate := range map[string]func(*Table){
		"no key":          func(t *Table) { t.Key = nil },
		"zero length":     func(t *Table) { t.Length = 0 },
		"space in cipher": func(t *Table) { t.Cipher = "aes-xts-plain64 0 /dev/sda" },
		"space in device": func(t *Table) { t.Device = "/dev/nbd0 0 1 sector_size:512" },
		"bad sector":      func(t *Table) { t.SectorSize = 1000 },
		"unknown flag":    func(t *Table) { t.Flags = []string{"integrity:28:aead"} },
	} {
		t.Run(name, func(t *testing.T) {
			ctl := &fakeDM{}
			c := &dmClient{ctl: ctl, nodes: &fakeNodes{existing: map[string]bool{}}, devDir: "/dev/mapper"}
			tb := testTable()
			mutate(tb)
			if _, err := c.activate("n", tb); err == nil {
				t.Fatal("activate accepted the table")
			}
			if len(ctl.calls) != 0 {
				t.Errorf("ioctls issued for a bad table: %+v", ctl.calls)
			}
		})
	}
}

func TestDeactivate(t *testing.T) {
	ctl := &fakeDM{}
	nodes := &fakeNodes{existing: map[string]bool{"/dev/mapper/n": true}}
	c := &dmClient{ctl: ctl, nodes: nodes, devDir: "/dev/mapper"}
	if err := c.remove("n"); err != nil {
		t.Fatal(err)
	}
	if len(ctl.calls) != 1 || ctl.calls[0].Cmd != "DM_DEV_REMOVE" || ctl.calls[0].Name != "n" {
		t.Errorf("ioctls = %+v", ctl.calls)
	}
	if nodes.existing["/dev/mapper/n"] {
		t.Error("node not removed")
	}
	ctl.fail, ctl.failErr = dmDevRemove, syscall.EBUSY
	if err := c.remove("n"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("remove of a busy device = %v, want EBUSY", err)
	}
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
