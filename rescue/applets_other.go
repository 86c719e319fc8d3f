//go:build !linux

package rescue

func addPlatformApplets(map[string]Applet) {}
