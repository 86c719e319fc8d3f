package hooks

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// FindBlockDevice returns the block device answering to spec (UUID=…, LABEL=…, PARTUUID=…,
// PARTLABEL=…), looking at every block device the kernel has with a size. Devices or
// partition tables it cannot read do not stop the search (another device may answer), but
// when none does, the error names them.
func (linuxBlocks) FindBlockDevice(spec string) (string, error) {
	entries, err := os.ReadDir("/sys/class/block")
	if err != nil {
		return "", err
	}
	tables := map[string]partitionTable{} // partition tables of disks, read once
	var seen, unreadable []string
	for _, e := range entries {
		name := e.Name()
		sys := filepath.Join("/sys/class/block", name)
		if size, _ := readInt(filepath.Join(sys, "size")); size == 0 {
			continue
		}
		dev := "/dev/" + name
		head, err := readHead(dev, probeSize)
		if err != nil {
			unreadable = append(unreadable, err.Error())
			continue
		}
		id := Identify(head)
		var part *Partition
		if n, err := readInt(filepath.Join(sys, "partition")); err == nil {
			target, _ := filepath.EvalSymlinks(sys)
			disk := filepath.Base(filepath.Dir(target))
			t, ok := tables[disk]
			if !ok {
				t = readPartitionTable(disk)
				tables[disk] = t
				if t.err != nil {
					unreadable = append(unreadable, "partition table of /dev/"+disk+": "+t.err.Error())
				}
			}
			for i := range t.parts {
				if t.parts[i].Number == int(n) {
					part = &t.parts[i]
				}
			}
		}
		if Matches(spec, id, part) {
			return dev, nil
		}
		seen = append(seen, fmt.Sprintf("%s (%s)", dev, describeIdentity(id)))
	}
	err = fmt.Errorf("no block device has %s; found: %s", spec, strings.Join(seen, ", "))
	if len(unreadable) > 0 {
		err = fmt.Errorf("%w; could not read: %s", err, strings.Join(unreadable, "; "))
	}
	return "", err
}

// partitionTable is a disk's partitions, or why they could not be read.
type partitionTable struct {
	parts []Partition
	err   error
}

// readPartitionTable reads the partition table of /dev/DISK: MBR, or GPT with its header
// and entries in the first 34 logical blocks.
func readPartitionTable(disk string) partitionTable {
	sector, err := readInt(filepath.Join("/sys/class/block", disk, "queue/logical_block_size"))
	if err != nil || sector == 0 {
		sector = 512 // what the kernel assumes when a driver says nothing
	}
	b, err := readHead("/dev/"+disk, int(sector)*34)
	if err != nil {
		return partitionTable{err: err}
	}
	return partitionTable{parts: Partitions(b, int(sector))}
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
