package dm_test

import (
	"errors"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/nbdroot/nbdroot/dm"
	"github.com/nbdroot/nbdroot/dm/dmtest"
)

func TestCreateSequence(t *testing.T) {
	f := dmtest.New()
	f.NextMinor = 300
	targets := []dm.Target{
		{Start: 0, Length: 8192, Type: "linear", Params: []byte("7:0 2048")},
		{Start: 8192, Length: 8192, Type: "linear", Params: []byte("7:1 2048")},
	}
	dev, err := f.Client().Create("vg0-root", "LVM-vgidlvid", dm.ReadOnly, targets)
	if err != nil {
		t.Fatal(err)
	}
	if want := (dm.Device{Name: "vg0-root", Path: "/dev/mapper/vg0-root", Major: 253, Minor: 300}); dev != want {
		t.Errorf("Device = %+v, want %+v", dev, want)
	}
	want := []dmtest.Call{
		{Cmd: "DM_DEV_CREATE", Message: dm.Message{Name: "vg0-root", UUID: "LVM-vgidlvid"}},
		{Cmd: "DM_TABLE_LOAD", Message: dm.Message{Name: "vg0-root", Flags: dm.ReadOnly, Targets: targets}},
		{Cmd: "DM_DEV_SUSPEND", Message: dm.Message{Name: "vg0-root"}},
	}
	if diff := cmp.Diff(want, f.Calls); diff != "" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"/dev/mapper/vg0-root": "253:300"}, f.Nodes); diff != "" {
		t.Errorf("nodes (-want +got):\n%s", diff)
	}
	// The table load buffer may hold a key: it must be zero now.
	for _, b := range f.Buffers[1] {
		if b != 0 {
			t.Fatal("DM_TABLE_LOAD buffer not wiped after the ioctl")
		}
	}
}

func TestCreateNodeMadeByUdev(t *testing.T) {
	f := dmtest.New()
	f.Nodes["/dev/mapper/n"] = "253:0"
	if _, err := f.Client().Create("n", "", 0, []dm.Target{{Length: 8, Type: "zero"}}); err != nil {
		t.Fatal(err)
	}
	if len(f.Nodes) != 1 {
		t.Errorf("nodes = %v", f.Nodes)
	}
}

func TestCreateFailureCleansUp(t *testing.T) {
	tests := []struct {
		name     string
		fail     dm.Cmd
		mknodErr error
		wantCmds []string
		wantErr  string
	}{
		{"create busy", dm.CmdDevCreate, nil, []string{"DM_DEV_CREATE"}, "exists already"},
		{"load fails", dm.CmdTableLoad, nil, []string{"DM_DEV_CREATE", "DM_TABLE_LOAD", "DM_DEV_REMOVE"}, "loading the linear table"},
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
			_, err := f.Client().Create("n", "", 0, []dm.Target{{Length: 8, Type: "linear", Params: []byte("7:0 0")}})
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.wantCmds, f.Cmds()); diff != "" {
				t.Errorf("ioctls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCreateRefusesBadInput(t *testing.T) {
	for name, c := range map[string]struct {
		name    string
		targets []dm.Target
	}{
		"no targets":    {"n", nil},
		"bad name":      {"a/b", []dm.Target{{Length: 8, Type: "zero"}}},
		"bad type":      {"n", []dm.Target{{Length: 8, Type: "two words"}}},
		"name too long": {strings.Repeat("x", 200), []dm.Target{{Length: 8, Type: "zero"}}},
	} {
		t.Run(name, func(t *testing.T) {
			f := dmtest.New()
			if _, err := f.Client().Create(c.name, "", 0, c.targets); err == nil {
				t.Fatal("Create accepted it")
			}
			if len(f.Calls) != 0 {
				t.Errorf("ioctls issued: %v", f.Cmds())
			}
		})
	}
}

func TestRemove(t *testing.T) {
	f := dmtest.New()
	f.Nodes["/dev/mapper/n"] = "253:0"
	c := f.Client()
	if err := c.Remove("n"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"DM_DEV_REMOVE"}, f.Cmds()); diff != "" || f.Calls[0].Name != "n" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if f.Exists("/dev/mapper/n") {
		t.Error("node not removed")
	}
	f.Fail, f.FailErr = dm.CmdDevRemove, syscall.EBUSY
	if err := c.Remove("n"); !errors.Is(err, syscall.EBUSY) {
		t.Errorf("remove of a busy device = %v, want EBUSY", err)
	}
}
