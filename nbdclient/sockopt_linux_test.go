package nbdclient

import (
	"testing"

	"golang.org/x/sys/unix"
)

// checkSocketOptions verifies the options a socket for the kernel needs.
func checkSocketOptions(t *testing.T, fd int) {
	t.Helper()
	for _, o := range []struct {
		name       string
		level, opt int
		want       int
	}{
		{"TCP_NODELAY", unix.IPPROTO_TCP, unix.TCP_NODELAY, 1},
		{"SO_KEEPALIVE", unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, int(keepIdle.Seconds())},
		{"TCP_KEEPINTVL", unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, int(keepInterval.Seconds())},
		{"TCP_KEEPCNT", unix.IPPROTO_TCP, unix.TCP_KEEPCNT, keepCount},
		{"TCP_USER_TIMEOUT", unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds())},
	} {
		got, err := unix.GetsockoptInt(fd, o.level, o.opt)
		if err != nil {
			t.Errorf("%s: %v", o.name, err)
			continue
		}
		if (o.want == 1 && got == 0) || (o.want != 1 && got != o.want) {
			t.Errorf("%s = %d, want %d", o.name, got, o.want)
		}
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		t.Fatal(err)
	}
	if fl&unix.O_NONBLOCK != 0 {
		t.Error("the socket for the kernel is non-blocking")
	}
}
