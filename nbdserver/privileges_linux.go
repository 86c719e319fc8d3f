package nbdserver

import (
	"fmt"
	"os/user"
	"strconv"
	"syscall"
)

// DropPrivileges switches to group and user (names or numbers), as nbd-server's "user" and
// "group" settings do: after binding the ports, before opening any image. Since Go 1.16
// setuid and setgid apply to every thread of the process.
func DropPrivileges(userName, groupName string) error {
	if userName == "" && groupName == "" {
		return nil
	}
	gid := -1
	if groupName != "" {
		g, err := lookupGroup(groupName)
		if err != nil {
			return err
		}
		gid = g
	}
	uid := -1
	if userName != "" {
		u, err := user.Lookup(userName)
		if err != nil {
			if _, nerr := strconv.Atoi(userName); nerr != nil {
				return fmt.Errorf("user %q: %w", userName, err)
			}
			u = &user.User{Uid: userName, Gid: ""}
		}
		if uid, err = strconv.Atoi(u.Uid); err != nil {
			return fmt.Errorf("user %q: uid %q: %w", userName, u.Uid, err)
		}
		if gid < 0 && u.Gid != "" {
			if gid, err = strconv.Atoi(u.Gid); err != nil {
				return fmt.Errorf("user %q: gid %q: %w", userName, u.Gid, err)
			}
		}
	}
	if gid >= 0 {
		if err := syscall.Setgroups([]int{gid}); err != nil {
			return fmt.Errorf("setgroups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("setgid %d: %w", gid, err)
		}
	}
	if uid >= 0 {
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("setuid %d: %w", uid, err)
		}
	}
	return nil
}

func lookupGroup(name string) (int, error) {
	if g, err := user.LookupGroup(name); err == nil {
		return strconv.Atoi(g.Gid)
	}
	gid, err := strconv.Atoi(name)
	if err != nil {
		return 0, fmt.Errorf("group %q: no such group", name)
	}
	return gid, nil
}
