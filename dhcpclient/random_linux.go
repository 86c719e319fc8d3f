package dhcpclient

import "golang.org/x/sys/unix"

// insecureRandom fills b from the kernel without waiting for its entropy pool
// (GRND_INSECURE, Linux 5.6+); false when it cannot.
func insecureRandom(b []byte) bool {
	n, err := unix.Getrandom(b, unix.GRND_INSECURE)
	return err == nil && n == len(b)
}
