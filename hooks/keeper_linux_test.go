package hooks

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/nbdroot/nbdroot/nbdclient"
)

func TestKeeperTarget(t *testing.T) {
	s, buf, err := newTestState("nbd_server=10.0.0.1:10809,10.0.0.2:10900,localhost:10809 nbd_export=root root=/dev/nbd1 nbdroot.deadconn=90", &fakeSys{})
	if err != nil {
		t.Fatal(err)
	}
	// The root came from the second server: the keeper starts there, then goes on in
	// the plan's order; names are resolved now (from /etc/hosts here: no network).
	s.NBD = &NBDAttachment{Device: "/dev/nbd1", Index: 1, Server: "10.0.0.2:10900", Export: "root",
		Size: 1 << 30, Flags: 0x105, Sockets: 2}
	got := keeperTarget(context.Background(), s)
	local := got.Servers[len(got.Servers)-1]
	if local != "127.0.0.1:10809" && local != "[::1]:10809" {
		t.Errorf("localhost resolved to %q (log: %s)", local, buf)
	}
	want := nbdclient.KeeperTarget{Index: 1, Servers: []string{"10.0.0.2:10900", "10.0.0.1:10809", local}, Export: "root",
		Size: 1 << 30, Flags: 0x105, Connections: 2, DeadConnTimeout: 90e9, BackendID: "10.0.0.2:10900/root"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("keeper target (-want +got):\n%s", diff)
	}
}
