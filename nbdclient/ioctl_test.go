package nbdclient

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestIoctlNumbers(t *testing.T) {
	// The formula against block ioctls whose values are published elsewhere
	// (golang.org/x/sys/unix: BLKRRPART = _IO(0x12, 95), BLKFLSBUF = _IO(0x12, 97)).
	for _, c := range []struct {
		typ, nr, want uint
	}{{0x12, 95, 0x125f}, {0x12, 97, 0x1261}} {
		if got := ioctlIO(c.typ, c.nr); got != c.want {
			t.Errorf("_IO(%#x, %d) = %#x, want %#x", c.typ, c.nr, got, c.want)
		}
	}
	want := map[string]uint{
		"NBD_SET_SOCK": 0xab00, "NBD_SET_BLKSIZE": 0xab01, "NBD_DO_IT": 0xab03, "NBD_CLEAR_SOCK": 0xab04,
		"NBD_CLEAR_QUE": 0xab05, "NBD_SET_SIZE_BLOCKS": 0xab07, "NBD_DISCONNECT": 0xab08,
		"NBD_SET_TIMEOUT": 0xab09, "NBD_SET_FLAGS": 0xab0a,
	}
	got := map[string]uint{}
	for n, name := range ioctlNames {
		got[name] = n
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("nbd ioctls (-want +got):\n%s", diff)
	}
	// Where the kernel's header is installed, every request we use is defined there with
	// the same number.
	h, err := os.ReadFile("/usr/include/linux/nbd.h")
	if err != nil {
		t.Logf("no /usr/include/linux/nbd.h (%v): header cross-check skipped", err)
		return
	}
	defs := regexp.MustCompile(`#define\s+(NBD_\w+)\s+_IO\(\s*0xab,\s*(\d+)\s*\)`).FindAllStringSubmatch(string(h), -1)
	header := map[string]uint{}
	for _, d := range defs {
		n, _ := strconv.Atoi(d[2])
		header[d[1]] = ioctlIO(nbdIoctlType, uint(n))
	}
	for name, n := range want {
		if header[name] != n {
			t.Errorf("%s: linux/nbd.h says %#x, we use %#x", name, header[name], n)
		}
	}
}

// ioctlLog records ioctls; DO_IT blocks until the test releases it.
type ioctlLog struct {
	mu    sync.Mutex
	calls []string
	fail  map[uint]error
	doit  chan error
}

func (l *ioctlLog) ioctl(fd uintptr, req uint, arg uintptr) error {
	l.mu.Lock()
	l.calls = append(l.calls, ioctlNames[req]+" "+strconv.FormatUint(uint64(arg), 10))
	err := l.fail[req]
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if req == nbdDoIt && l.doit != nil {
		return <-l.doit
	}
	return nil
}

func (l *ioctlLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.calls
	l.calls = nil
	return c
}

func TestConfigureLegacy(t *testing.T) {
	tests := []struct {
		name    string
		dev     Device
		socks   []int
		fail    map[uint]error
		want    []string
		wantErr string
	}{
		{
			name:  "one socket",
			dev:   Device{Size: 1 << 30, BlockSize: 4096, ServerFlags: 0x5, Timeout: 1500 * time.Millisecond},
			socks: []int{7},
			want: []string{"NBD_SET_BLKSIZE 4096", "NBD_SET_SIZE_BLOCKS 262144", "NBD_SET_FLAGS 5",
				"NBD_SET_TIMEOUT 2", "NBD_SET_SOCK 7"},
		},
		{
			name:  "default block size, no timeout, multi-conn",
			dev:   Device{Size: 1 << 20, ServerFlags: 0x101},
			socks: []int{7, 8},
			want:  []string{"NBD_SET_BLKSIZE 512", "NBD_SET_SIZE_BLOCKS 2048", "NBD_SET_FLAGS 257", "NBD_SET_SOCK 7", "NBD_SET_SOCK 8"},
		},
		{
			name:    "several sockets without multi-conn",
			dev:     Device{Size: 1 << 20, ServerFlags: 0x1},
			socks:   []int{7, 8},
			wantErr: "does not advertise CAN_MULTI_CONN",
		},
		{
			name:    "no sockets",
			dev:     Device{Size: 1 << 20},
			wantErr: "no sockets",
		},
		{
			name:    "refused socket",
			dev:     Device{Size: 1 << 20},
			socks:   []int{7},
			fail:    map[uint]error{nbdSetSock: syscall.EBUSY},
			want:    []string{"NBD_SET_BLKSIZE 512", "NBD_SET_SIZE_BLOCKS 2048", "NBD_SET_FLAGS 0", "NBD_SET_SOCK 7"},
			wantErr: "ioctl NBD_SET_SOCK: device or resource busy",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &ioctlLog{fail: tt.fail}
			err := configureLegacy(l.ioctl, 3, tt.dev, tt.socks)
			if tt.wantErr != "" {
				if err == nil || !regexp.MustCompile(regexp.QuoteMeta(tt.wantErr)).MatchString(err.Error()) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, l.take()); diff != "" {
				t.Errorf("ioctls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLegacySession(t *testing.T) {
	l := &ioctlLog{doit: make(chan error)}
	var running sync.Mutex
	isRunning := false
	s := newLegacySession(5, 3, Device{Size: 1 << 20, ServerFlags: 1}, l.ioctl,
		func() bool { running.Lock(); defer running.Unlock(); return isRunning }, nil)
	defer s.Close()
	started := make(chan error, 1)
	go func() { started <- s.start([]int{9}) }()
	// The session answers once the device shows its size.
	time.Sleep(20 * time.Millisecond)
	select {
	case err := <-started:
		t.Fatalf("attach returned before the device ran: %v", err)
	default:
	}
	running.Lock()
	isRunning = true
	running.Unlock()
	if err := waitErr(t, started); err != nil {
		t.Fatal(err)
	}
	want := []string{"NBD_CLEAR_SOCK 0", "NBD_SET_BLKSIZE 512", "NBD_SET_SIZE_BLOCKS 2048", "NBD_SET_FLAGS 1", "NBD_SET_SOCK 9", "NBD_DO_IT 0"}
	if diff := cmp.Diff(want, l.take()); diff != "" {
		t.Errorf("ioctls (-want +got):\n%s", diff)
	}
	if st, _ := s.Status(5); !st[0].Connected {
		t.Error("a running session reports the device disconnected")
	}
	// The link dies: NBD_DO_IT returns an error, which reads as a dead link.
	l.doit <- syscall.EPIPE
	idx, err := s.Next()
	if err != nil || len(idx) != 1 || idx[0] != 5 {
		t.Fatalf("Next = %v, %v; want [5]", idx, err)
	}
	// Replacing the socket clears the old one and runs again.
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	if err := s.Reconfigure(Device{Index: 6}, []*os.File{r}); err == nil {
		t.Error("reconfigure of another device accepted")
	}
	if err := s.Reconfigure(Device{Index: 5}, []*os.File{r}); err != nil {
		t.Fatal(err)
	}
	want = []string{"NBD_CLEAR_SOCK 0", "NBD_SET_BLKSIZE 512", "NBD_SET_SIZE_BLOCKS 2048", "NBD_SET_FLAGS 1",
		"NBD_SET_SOCK " + strconv.Itoa(int(r.Fd())), "NBD_DO_IT 0"}
	if diff := cmp.Diff(want, l.take()); diff != "" {
		t.Errorf("ioctls after reconfigure (-want +got):\n%s", diff)
	}
	// A disconnect on request: NBD_DO_IT returns 0.
	l.doit <- nil
	if _, err := s.Next(); !errors.Is(err, ErrNotConfigured) {
		t.Fatalf("Next after a disconnect = %v, want ErrNotConfigured", err)
	}
}

func TestLegacySessionDoItFails(t *testing.T) {
	l := &ioctlLog{fail: map[uint]error{nbdDoIt: syscall.EINVAL}}
	s := newLegacySession(0, 3, Device{Size: 1 << 20}, l.ioctl, func() bool { return false }, nil)
	defer s.Close()
	err := s.start([]int{9})
	var ie *IoctlError
	if !errors.As(err, &ie) || ie.Request != "NBD_DO_IT" || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("err = %v, want NBD_DO_IT failing with EINVAL", err)
	}
}

func waitErr(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("timed out")
	}
	return nil
}
