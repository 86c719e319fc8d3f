package luks

import (
	"bytes"
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/dm"
	"github.com/nbdroot/nbdroot/dm/dmtest"
)

func testTable() *Table {
	return &Table{
		Length: 65536, Cipher: "aes-xts-plain64", Key: bytes.Repeat([]byte{0xab}, 64),
		Device: "/dev/nbd0", Offset: 32768, SectorSize: 4096,
		Flags: []string{"allow_discards"}, UUIDPrefix: "CRYPT-LUKS2-0123abcd",
	}
}

func TestActivateSequence(t *testing.T) {
	f := dmtest.New()
	f.NextMinor = 300
	path, err := activate(f.Client(), "nbdcrypt", testTable())
	if err != nil {
		t.Fatal(err)
	}
	if path != "/dev/mapper/nbdcrypt" {
		t.Errorf("path = %q", path)
	}
	key := strings.Repeat("ab", 64)
	want := []dmtest.Call{
		{Cmd: "DM_DEV_CREATE", Message: dm.Message{Name: "nbdcrypt", UUID: "CRYPT-LUKS2-0123abcd-nbdcrypt"}},
		{Cmd: "DM_TABLE_LOAD", Message: dm.Message{Name: "nbdcrypt", Flags: dm.SecureData, Targets: []dm.Target{{
			Length: 65536, Type: "crypt",
			Params: []byte("aes-xts-plain64 " + key + " 0 /dev/nbd0 32768 2 allow_discards sector_size:4096")}}}},
		{Cmd: "DM_DEV_SUSPEND", Message: dm.Message{Name: "nbdcrypt"}},
	}
	if diff := cmp.Diff(want, f.Calls); diff != "" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"/dev/mapper/nbdcrypt": "253:300"}, f.Nodes); diff != "" {
		t.Errorf("mknod (-want +got):\n%s", diff)
	}
	// The table load buffer held the key in hex: it must be zero now.
	if !allZero(f.Buffers[1]) {
		t.Error("DM_TABLE_LOAD buffer not wiped after the ioctl")
	}
}

func TestActivateReadOnlyNodeExists(t *testing.T) {
	f := dmtest.New()
	f.Nodes["/dev/mapper/r"] = "253:0"
	tb := testTable()
	tb.ReadOnly = true
	tb.UUIDPrefix = ""
	if _, err := activate(f.Client(), "r", tb); err != nil {
		t.Fatal(err)
	}
	if f.Calls[1].Flags != dm.SecureData|dm.ReadOnly {
		t.Errorf("load flags = %#x", f.Calls[1].Flags)
	}
	if f.Calls[0].UUID != "" {
		t.Errorf("uuid = %q, want none", f.Calls[0].UUID)
	}
	if len(f.Nodes) != 1 {
		t.Errorf("mknod called although udev made the node: %v", f.Nodes)
	}
}

func TestActivateLongUUIDTruncated(t *testing.T) {
	f := dmtest.New()
	tb := testTable()
	tb.UUIDPrefix = "CRYPT-LUKS2-" + strings.Repeat("0", 120)
	if _, err := activate(f.Client(), "nbdcrypt", tb); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Calls[0].UUID, (tb.UUIDPrefix + "-nbdcrypt")[:128]; got != want {
		t.Errorf("uuid %q (%d bytes), want the first 128 bytes of prefix-name", got, len(got))
	}
}

func TestActivateFailureCleansUp(t *testing.T) {
	tests := []struct {
		name     string
		fail     dm.Cmd
		mknodErr error
		wantCmds []string
		wantErr  string
	}{
		{"create busy", dm.CmdDevCreate, nil, []string{"DM_DEV_CREATE"}, "exists already"},
		{"load fails", dm.CmdTableLoad, nil, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_REMOVE"}, "loading the crypt table"},
		{"resume fails", dm.CmdDevSuspend, nil, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_SUSPEND", "DM_DEV_REMOVE"}, "resuming"},
		{"mknod fails", -1, syscall.EROFS, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_SUSPEND", "DM_DEV_REMOVE"}, "creating /dev/mapper/n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := dmtest.New()
			f.Fail, f.FailErr, f.MknodErr = tc.fail, syscall.EBUSY, tc.mknodErr
			if tc.fail < 0 {
				f.FailErr = nil
			}
			_, err := activate(f.Client(), "n", testTable())
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "luks: activate n: ") {
				t.Fatalf("err = %v, want one starting \"luks: activate n: \" mentioning %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantCmds, f.Cmds()); diff != "" {
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
			f := dmtest.New()
			tb := testTable()
			mutate(tb)
			if _, err := activate(f.Client(), "n", tb); err == nil {
				t.Fatal("activate accepted the table")
			}
			if len(f.Calls) != 0 {
				t.Errorf("ioctls issued for a bad table: %v", f.Cmds())
			}
		})
	}
}

func TestDeactivate(t *testing.T) {
	f := dmtest.New()
	f.Nodes["/dev/mapper/n"] = "253:0"
	if err := deactivate(f.Client(), "n"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"DM_DEV_REMOVE"}, f.Cmds()); diff != "" || f.Calls[0].Name != "n" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if f.Exists("/dev/mapper/n") {
		t.Error("node not removed")
	}
	f.Fail, f.FailErr = dm.CmdDevRemove, syscall.EBUSY
	if err := deactivate(f.Client(), "n"); !errors.Is(err, syscall.EBUSY) || !strings.HasPrefix(err.Error(), "luks: deactivate n: ") {
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
