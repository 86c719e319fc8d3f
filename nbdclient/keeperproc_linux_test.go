package nbdclient

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary play the keeper process: StartKeeper re-executes it with
// argv[0] @nbdroot-keeper.
func TestMain(m *testing.M) {
	if os.Args[0] == KeeperArgv0 {
		os.Exit(KeeperMain())
	}
	os.Exit(m.Run())
}

func TestKeeperProcessReportsFailure(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("the keeper opens /dev/kmsg and locks memory: root only")
	}
	if _, err := OpenKernel(); err == nil {
		t.Skip("this kernel has the nbd family: the keeper would start for real")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = StartKeeper(KeeperSpec{Target: KeeperTarget{Index: 7, Servers: []string{"127.0.0.1:1"}}},
		KeeperStart{Exe: exe, Ready: 20 * time.Second})
	if err == nil || !strings.Contains(err.Error(), `keeper: kernel has no "nbd" generic netlink family`) {
		t.Fatalf("StartKeeper on a kernel without nbd = %v", err)
	}
}

func TestKeeperProcessNeedsItsDescriptors(t *testing.T) {
	// Run by hand, the keeper refuses to start instead of reading whatever fd 3 is.
	if code := KeeperMain(); code != 2 {
		t.Errorf("KeeperMain without descriptors = %d, want 2", code)
	}
}

func TestControlSocket(t *testing.T) {
	// An index no real device has, unique per run, in the abstract namespace.
	idx := 100000 + os.Getpid()%100000
	ln, err := net.Listen("unix", keeperSocket(idx))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	k := &Keeper{Target: KeeperTarget{Index: idx}}
	k.setState(func(s *KeeperState) {
		*s = KeeperState{Device: fmt.Sprintf("/dev/nbd%d", idx), Server: "a:1", State: "watching", Reconnects: 2}
	})
	stopped := make(chan struct{})
	var logged strings.Builder
	go serveControl(ln, k, func() { close(stopped) }, &kmsgLog{w: &logged})
	st, err := QueryKeeper(idx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Server != "a:1" || st.Reconnects != 2 || st.Pid != os.Getpid() {
		t.Errorf("status %+v", st)
	}
	if os.Getuid() == 0 {
		if _, err := StopKeeper(idx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			t.Fatal("stop request did not stop the keeper")
		}
	}
	if _, err := QueryKeeper(idx + 1); !errors.Is(err, ErrNoKeeper) {
		t.Errorf("QueryKeeper without a keeper = %v, want ErrNoKeeper", err)
	}
}
