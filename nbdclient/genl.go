package nbdclient

import (
	"errors"
	"fmt"
	"time"

	"github.com/mdlayher/genetlink"
	"github.com/mdlayher/netlink"
)

// The kernel's generic netlink family for NBD (include/uapi/linux/nbd-netlink.h).
const (
	genlFamily  = "nbd"
	genlVersion = 1
	genlMcGroup = "nbd_mc_group"

	cmdConnect     = 1
	cmdDisconnect  = 2
	cmdReconfigure = 3
	cmdLinkDead    = 4
	cmdStatus      = 5

	attrIndex           = 1
	attrSizeBytes       = 2
	attrBlockSizeBytes  = 3
	attrTimeout         = 4
	attrServerFlags     = 5
	attrClientFlags     = 6
	attrSockets         = 7
	attrDeadConnTimeout = 8
	attrDeviceList      = 9
	attrBackendID       = 10

	sockItem = 1
	sockFD   = 1

	deviceItem      = 1
	deviceIndex     = 1
	deviceConnected = 2

	// ClientFlagDestroyOnDisconnect removes the device when it is disconnected.
	ClientFlagDestroyOnDisconnect = 1 << 0
	// ClientFlagDisconnectOnClose disconnects when the last opener closes the device: never
	// for a root device (the initramfs's file descriptors are closed at switch_root).
	ClientFlagDisconnectOnClose = 1 << 1
)

// Device describes an NBD device for NBD_CMD_CONNECT and NBD_CMD_RECONFIGURE.
type Device struct {
	// Index is the N of /dev/nbdN, or -1 to let the kernel pick a free device.
	Index int
	// Size is the export size in bytes; BlockSize the logical block size (512..4096).
	Size      uint64
	BlockSize uint32
	// ServerFlags are the transmission flags from the handshake (READ_ONLY, SEND_FLUSH, …).
	ServerFlags uint16
	// Timeout is the per-request timeout (0: the kernel's default of 30 s); DeadConnTimeout
	// is how long I/O waits for a RECONFIGURE after every socket died (0: fail at once).
	Timeout, DeadConnTimeout time.Duration
	// ClientFlags is a set of ClientFlag* bits.
	ClientFlags uint64
	// BackendID names what is attached (server and export), shown in
	// /sys/block/nbdN/backend (kernel 5.14+); older kernels ignore it.
	BackendID string
	// ReadAheadKB, when not 0, is set as the device's read-ahead after connect.
	ReadAheadKB uint32
	// MaxRequest is the server's maximum request size (NBD_INFO_BLOCK_SIZE), 0 for none.
	// The netlink family has no attribute for it: after connecting, the device's
	// max_sectors_kb is lowered to fit (see Kernel.Connect).
	MaxRequest uint32
}

// encodeConnect builds the attributes of NBD_CMD_CONNECT for dev and the socket fds.
func encodeConnect(dev Device, fds []int) ([]byte, error) {
	if len(fds) == 0 {
		return nil, errors.New("connect: no sockets")
	}
	if len(fds) > 1 && dev.ServerFlags&(1<<8) == 0 {
		// The kernel refuses several sockets unless the server allows multi-conn
		// (NBD_FLAG_CAN_MULTI_CONN), since writes on one might not be seen on another.
		return nil, fmt.Errorf("connect: %d sockets but the server does not advertise CAN_MULTI_CONN", len(fds))
	}
	ae := netlink.NewAttributeEncoder()
	if dev.Index >= 0 {
		ae.Uint32(attrIndex, uint32(dev.Index))
	}
	ae.Uint64(attrSizeBytes, dev.Size)
	if dev.BlockSize != 0 {
		ae.Uint64(attrBlockSizeBytes, uint64(dev.BlockSize))
	}
	if dev.Timeout > 0 {
		ae.Uint64(attrTimeout, uint64(seconds(dev.Timeout)))
	}
	if dev.DeadConnTimeout > 0 {
		ae.Uint64(attrDeadConnTimeout, uint64(seconds(dev.DeadConnTimeout)))
	}
	ae.Uint64(attrServerFlags, uint64(dev.ServerFlags))
	if dev.ClientFlags != 0 {
		ae.Uint64(attrClientFlags, dev.ClientFlags)
	}
	encodeSockets(ae, fds)
	if dev.BackendID != "" {
		ae.String(attrBackendID, dev.BackendID)
	}
	return ae.Encode()
}

// encodeReconfigure builds NBD_CMD_RECONFIGURE for dev.Index with replacement sockets. The
// kernel only swaps in sockets for connections it already marked dead. A device connected
// with a backend identifier must be reconfigured with the same one: the kernel refuses the
// request otherwise ("must specify backend", "backend image doesn't match").
// dev.DeadConnTimeout, when set, replaces the device's; zero leaves it.
func encodeReconfigure(dev Device, fds []int) ([]byte, error) {
	if dev.Index < 0 {
		return nil, errors.New("reconfigure: no device index")
	}
	ae := netlink.NewAttributeEncoder()
	ae.Uint32(attrIndex, uint32(dev.Index))
	if dev.DeadConnTimeout > 0 {
		ae.Uint64(attrDeadConnTimeout, uint64(seconds(dev.DeadConnTimeout)))
	}
	if len(fds) > 0 {
		encodeSockets(ae, fds)
	}
	if dev.BackendID != "" {
		ae.String(attrBackendID, dev.BackendID)
	}
	return ae.Encode()
}

func encodeSockets(ae *netlink.AttributeEncoder, fds []int) {
	ae.Nested(attrSockets, func(nae *netlink.AttributeEncoder) error {
		for _, fd := range fds {
			nae.Nested(sockItem, func(s *netlink.AttributeEncoder) error {
				s.Uint32(sockFD, uint32(fd))
				return nil
			})
		}
		return nil
	})
}

func encodeIndex(index int) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	if index >= 0 {
		ae.Uint32(attrIndex, uint32(index))
	}
	return ae.Encode()
}

// seconds rounds up: a timeout of 1.5 s must not become 1 s.
func seconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// decodeIndex reads NBD_ATTR_INDEX from the kernel's reply to NBD_CMD_CONNECT and from
// NBD_CMD_LINK_DEAD events (drivers/block/nbd.c, nbd_connect_reply and nbd_mcast_index).
func decodeIndex(msgs []genetlink.Message) (int, error) {
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return -1, err
		}
		for ad.Next() {
			if ad.Type() == attrIndex {
				return int(ad.Uint32()), ad.Err()
			}
		}
		if err := ad.Err(); err != nil {
			return -1, err
		}
	}
	return -1, errors.New("kernel reply carries no device index")
}

// DeviceStatus is one entry of NBD_CMD_STATUS.
type DeviceStatus struct {
	Index     int  `json:"index"`
	Connected bool `json:"connected"`
}

// decodeStatus reads NBD_ATTR_DEVICE_LIST from the kernel's reply to NBD_CMD_STATUS.
func decodeStatus(msgs []genetlink.Message) ([]DeviceStatus, error) {
	var out []DeviceStatus
	for _, m := range msgs {
		ad, err := netlink.NewAttributeDecoder(m.Data)
		if err != nil {
			return nil, err
		}
		for ad.Next() {
			if ad.Type() != attrDeviceList {
				continue
			}
			ad.Nested(func(list *netlink.AttributeDecoder) error {
				for list.Next() {
					if list.Type() != deviceItem {
						continue
					}
					st := DeviceStatus{Index: -1}
					list.Nested(func(item *netlink.AttributeDecoder) error {
						for item.Next() {
							switch item.Type() {
							case deviceIndex:
								st.Index = int(item.Uint32())
							case deviceConnected:
								st.Connected = item.Uint8() != 0
							}
						}
						return nil
					})
					out = append(out, st)
				}
				return nil
			})
		}
		if err := ad.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// decodeLinkDead returns the device indexes of the NBD_CMD_LINK_DEAD events among msgs
// (other commands on the multicast group are ignored). The kernel sends one event per
// socket it marks dead, each carrying NBD_ATTR_INDEX.
func decodeLinkDead(msgs []genetlink.Message) ([]int, error) {
	var out []int
	for _, m := range msgs {
		if m.Header.Command != cmdLinkDead {
			continue
		}
		idx, err := decodeIndex([]genetlink.Message{m})
		if err != nil {
			return out, fmt.Errorf("NBD_CMD_LINK_DEAD: %w", err)
		}
		out = append(out, idx)
	}
	return out, nil
}
