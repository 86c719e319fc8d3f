package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FindBlockDevice returns the block device answering to spec (UUID=…, LABEL=…, PARTUUID=…,
// PARTLABEL=…), looking at every block device the kernel has with a size.
func (*linuxSystem) FindBlockDevice(spec string) (string, error) {
	entries, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return "", err
	}
	parts := map[string][]Partition{} // partition tables of disks, read once
	var seen []string
	for _, e := range entries {
		name := e.Name()
		sys := filepath.Join("/sys/class/block", name)
		if size, _ := readInt(filepath.Join(sys, "size")); size == 0 {
			continue
		}
		dev := "/dev/" + name
		head, err := readHead(dev, probeSize)
		if err != nil {
			continue
		}
		id := Identify(head)
		var part *Partition
		if n, err := readInt(filepath.Join(sys, "partition")); err == nil {
			target, _ := filepath.EvalSymlinks(sys)
			disk := filepath.Base(filepath.Dir(target))
			if _, ok := parts[disk]; !ok {
				sector, _ := readInt(filepath.Join("/sys/class/block", disk, "queue/logical_block_size"))
				if sector == 0 {
					sector = 512
				}
				b, _ := readHead("/dev/"+disk, int(sector)*34)
				parts[disk] = Partitions(b, int(sector))
			}
			for i := range parts[disk] {
				if parts[disk][i].Number == int(n) {
					part = &parts[disk][i]
				}
			}
		}
		if Matches(spec, id, part) {
			return dev, nil
		}
		seen = append(seen, fmt.Sprintf("%s (%s)", dev, describeIdentity(id)))
	}
	return "", fmt.Errorf("no block device has %s; found: %s", spec, strings.Join(seen, ", "))
}

func describeIdentity(id Identity) string {
	if id.Type == "" {
		return "unknown content"
	}
	s := id.Type
	if id.UUID != "" {
		s += " UUID=" + id.UUID
	}
	if id.Label != "" {
		s += " LABEL=" + id.Label
	}
	return s
}

func readInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
}
