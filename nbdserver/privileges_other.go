//go:build !linux

package nbdserver

import "errors"

// DropPrivileges is only implemented on Linux.
func DropPrivileges(userName, groupName string) error {
	if userName == "" && groupName == "" {
		return nil
	}
	return errors.New("switching user and group is only supported on Linux")
}
