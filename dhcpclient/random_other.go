//go:build !linux

package dhcpclient

// insecureRandom is Linux only: elsewhere the transaction ID is derived from the clock.
func insecureRandom(b []byte) bool { return false }
