package nbdclient

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/genetlink/genltest"
	"github.com/mdlayher/netlink"
)

// attrs flattens a netlink attribute payload into type → value (nested attributes recurse
// with a "/" path), so tests compare messages structurally.
func attrs(t *testing.T, b []byte) map[string]any {
	t.Helper()
	out := map[string]any{}
	var walk func(prefix string, b []byte)
	walk = func(prefix string, b []byte) {
		as, err := netlink.UnmarshalAttributes(b)
		if err != nil {
			t.Fatalf("unmarshal attributes: %v", err)
		}
		for i, a := range as {
			key := prefix + itoa(int(a.Type&^netlink.Nested))
			switch {
			case a.Type&netlink.Nested != 0:
				walk(key+"["+itoa(i)+"]/", a.Data)
			case len(a.Data) == 8:
				out[key] = binary.NativeEndian.Uint64(a.Data)
			case len(a.Data) == 4:
				out[key] = uint64(binary.NativeEndian.Uint32(a.Data))
			default:
				out[key] = string(a.Data)
			}
		}
	}
	walk("", b)
	return out
}

func itoa(i int) string { return fmt.Sprintf("%02d", i) }

var testFamily = genetlink.Family{ID: 0x1234, Version: 1, Name: genlFamily,
	Groups: []genetlink.MulticastGroup{{ID: 9, Name: genlMcGroup}}}

func TestConnectMessage(t *testing.T) {
	var got map[string]any
	c := genltest.Dial(genltest.ServeFamily(testFamily, genltest.CheckRequest(testFamily.ID, cmdConnect,
		netlink.Request, // no NLM_F_ACK: its acknowledgement would come after the reply
		func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
			got = attrs(t, greq.Data)
			ae := netlink.NewAttributeEncoder()
			ae.Uint32(attrIndex, 3)
			b, _ := ae.Encode()
			return []genetlink.Message{{Data: b}}, nil
		})))
	k, err := NewKernel(c)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	idx, err := k.Connect(Device{Index: -1, Size: 1 << 30, BlockSize: 4096, ServerFlags: 1<<0 | 1<<2 | 1<<8,
		Timeout: 1500 * time.Millisecond, DeadConnTimeout: 2 * time.Minute, BackendID: "10.0.2.100:10809/root"},
		[]*os.File{r, w})
	if err != nil {
		t.Fatal(err)
	}
	if idx != 3 {
		t.Errorf("index = %d, want the kernel's 3", idx)
	}
	want := map[string]any{
		"02":               uint64(1 << 30),
		"03":               uint64(4096),
		"04":               uint64(2), // 1.5 s rounds up
		"08":               uint64(120),
		"05":               uint64(1<<0 | 1<<2 | 1<<8),
		"07[05]/01[00]/01": uint64(r.Fd()),
		"07[05]/01[01]/01": uint64(w.Fd()),
		"10":               "10.0.2.100:10809/root\x00",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("NBD_CMD_CONNECT attributes (-want +got):\n%s", diff)
	}
}

func TestConnectRefusesMultiConnWithoutServerFlag(t *testing.T) {
	_, err := encodeConnect(Device{Index: 0, Size: 1}, []int{3, 4})
	if err == nil {
		t.Fatal("two sockets without CAN_MULTI_CONN accepted")
	}
}

func TestConnectBusy(t *testing.T) {
	c := genltest.Dial(genltest.ServeFamily(testFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(syscall.EBUSY))
	}))
	k, err := NewKernel(c)
	if err != nil {
		t.Fatal(err)
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	_, err = k.Connect(Device{Index: 0, Size: 1 << 20}, []*os.File{r})
	if !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("err = %v, want EBUSY", err)
	}
	if want := "/dev/nbd0 is already connected"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

func TestNoFamily(t *testing.T) {
	c := genltest.Dial(func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(syscall.ENOENT))
	})
	if _, err := NewKernel(c); !errors.Is(err, ErrNoFamily) {
		t.Fatalf("err = %v, want ErrNoFamily", err)
	}
}

func TestStatusDecode(t *testing.T) {
	c := genltest.Dial(genltest.ServeFamily(testFamily, genltest.CheckRequest(testFamily.ID, cmdStatus, netlink.Request, // no NLM_F_ACK, as for CONNECT
		func(greq genetlink.Message, _ netlink.Message) ([]genetlink.Message, error) {
			if len(greq.Data) != 0 {
				t.Errorf("status for all devices carries attributes % x", greq.Data)
			}
			ae := netlink.NewAttributeEncoder()
			ae.Nested(attrDeviceList, func(l *netlink.AttributeEncoder) error {
				for i, conn := range []uint8{1, 0} {
					l.Nested(deviceItem, func(d *netlink.AttributeEncoder) error {
						d.Uint32(deviceIndex, uint32(i))
						d.Uint8(deviceConnected, conn)
						return nil
					})
				}
				return nil
			})
			b, _ := ae.Encode()
			return []genetlink.Message{{Data: b}}, nil
		})))
	k, err := NewKernel(c)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Status(-1)
	if err != nil {
		t.Fatal(err)
	}
	want := []DeviceStatus{{Index: 0, Connected: true}, {Index: 1, Connected: false}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReconfigureMessage(t *testing.T) {
	b, err := encodeReconfigure(Device{Index: 2, DeadConnTimeout: 90 * time.Second, BackendID: "10.0.0.1:10809/root"}, []int{7})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"01": uint64(2), "08": uint64(90), "07[02]/01[00]/01": uint64(7), "10": "10.0.0.1:10809/root\x00"}
	if diff := cmp.Diff(want, attrs(t, b)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestLinkEvents(t *testing.T) {
	linkDead := func(idx uint32) genetlink.Message {
		ae := netlink.NewAttributeEncoder()
		ae.Uint32(attrIndex, idx)
		b, _ := ae.Encode()
		return genetlink.Message{Header: genetlink.Header{Command: cmdLinkDead, Version: 1}, Data: b}
	}
	other := genetlink.Message{Header: genetlink.Header{Command: cmdConnect, Version: 1}}
	batches := [][]genetlink.Message{{other}, {linkDead(2), linkDead(2), other}, nil}
	errs := []error{nil, nil, os.NewSyscallError("recvmsg", syscall.ENOBUFS)}
	n := 0
	c := genltest.Dial(func(greq genetlink.Message, nreq netlink.Message) ([]genetlink.Message, error) {
		i := n
		n++
		if i >= len(batches) {
			return nil, errors.New("closed")
		}
		return batches[i], errs[i]
	})
	e := &LinkEvents{c: c}
	defer e.Close()
	// A batch without LINK_DEAD is skipped; one event per dead socket.
	idx, err := e.Next()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]int{2, 2}, idx); diff != "" {
		t.Errorf("indexes (-want +got):\n%s", diff)
	}
	if _, err := e.Next(); !errors.Is(err, ErrEventsLost) {
		t.Errorf("ENOBUFS: err = %v, want ErrEventsLost", err)
	}
}

func TestMcastGroup(t *testing.T) {
	id, err := mcastGroup(testFamily)
	if err != nil || id != 9 {
		t.Errorf("mcastGroup = %d, %v; want 9", id, err)
	}
	if _, err := mcastGroup(genetlink.Family{Name: "nbd"}); err == nil {
		t.Error("a family without the group was accepted")
	}
}

func TestReconfigureErrors(t *testing.T) {
	c := genltest.Dial(genltest.ServeFamily(testFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, genltest.Error(int(syscall.EINVAL))
	}))
	k, err := NewKernel(c)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	err = k.Reconfigure(Device{Index: 1, BackendID: "a:1/root"}, nil)
	if !errors.Is(err, syscall.EINVAL) || !strings.Contains(err.Error(), `another backend identifier than "a:1/root"`) {
		t.Errorf("Reconfigure = %v", err)
	}
	if _, err := encodeReconfigure(Device{Index: -1}, nil); err == nil {
		t.Error("reconfigure without an index encoded")
	}
	if err := k.Disconnect(1); !errors.Is(err, ErrNotConfigured) {
		t.Errorf("Disconnect EINVAL = %v, want ErrNotConfigured", err)
	}
}

func TestConnectSetup(t *testing.T) {
	c := genltest.Dial(genltest.ServeFamily(testFamily, func(genetlink.Message, netlink.Message) ([]genetlink.Message, error) {
		return nil, nil // an old kernel: no index in the reply
	}))
	k, err := NewKernel(c)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	var setupFor int
	k.setup = func(index int, dev Device) error {
		setupFor = index
		return errors.New("partition scan: no")
	}
	r, w, _ := os.Pipe()
	defer r.Close()
	defer w.Close()
	idx, err := k.Connect(Device{Index: 4, Size: 1 << 20}, []*os.File{r})
	var se *SetupError
	if idx != 4 || !errors.As(err, &se) || se.Index != 4 || setupFor != 4 {
		t.Errorf("Connect = %d, %v (setup for %d); want 4 and a SetupError", idx, err, setupFor)
	}
	if _, err := k.Connect(Device{Index: -1, Size: 1 << 20}, []*os.File{r}); err == nil {
		t.Error("a reply without an index for a kernel-chosen device was accepted")
	}
}
