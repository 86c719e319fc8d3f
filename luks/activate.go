package luks

import (
	"fmt"

	"github.com/nbdroot/nbdroot/dm"
)

// Activate creates the dm-crypt mapping name for table through package dm
// (/dev/mapper/control: DM_DEV_CREATE, DM_TABLE_LOAD, resume) and returns its node,
// /dev/mapper/NAME, creating the node itself when udev does not. The kernel is asked to
// wipe its copy of the table (which holds the key); ours is wiped before Activate
// returns. The caller still wipes table. Needs root and the dm_mod and dm_crypt modules.
func Activate(name string, table *Table) (string, error) {
	c, err := dm.Open()
	if err != nil {
		return "", fmt.Errorf("luks: activate %s: %w", name, err)
	}
	defer c.Close()
	return activate(c, name, table)
}

// Deactivate removes the mapping name (DM_DEV_REMOVE) and its /dev/mapper node. It fails
// with EBUSY while the device is open or mounted.
func Deactivate(name string) error {
	c, err := dm.Open()
	if err != nil {
		return fmt.Errorf("luks: deactivate %s: %w", name, err)
	}
	defer c.Close()
	return deactivate(c, name)
}

// activate maps t as device name through c and returns its node. The device-mapper UUID
// is the table's prefix plus "-NAME", as cryptsetup names it.
func activate(c *dm.Client, name string, t *Table) (string, error) {
	if err := t.validate(); err != nil {
		return "", fmt.Errorf("luks: activate %s: %w", name, err)
	}
	uuid := ""
	if t.UUIDPrefix != "" {
		uuid = t.UUIDPrefix + "-" + name
		if len(uuid) > dmUUIDMax {
			uuid = uuid[:dmUUIDMax] // cryptsetup truncates the same way
		}
	}
	params := t.appendParams(make([]byte, 0, 256+2*len(t.Key)))
	defer wipe(params)
	flags := dm.SecureData
	if t.ReadOnly {
		flags |= dm.ReadOnly
	}
	dev, err := c.Create(name, uuid, flags, []dm.Target{{Start: 0, Length: t.Length, Type: "crypt", Params: params}})
	if err != nil {
		return "", fmt.Errorf("luks: activate %s: %w", name, err)
	}
	return dev.Path, nil
}

// dmUUIDMax is the longest device-mapper UUID (DM_UUID_LEN less its NUL).
const dmUUIDMax = 128

func deactivate(c *dm.Client, name string) error {
	if err := c.Remove(name); err != nil {
		return fmt.Errorf("luks: deactivate %s: %w", name, err)
	}
	return nil
}
